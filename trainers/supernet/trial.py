"""The supernet trial: a `search.darts` supernet config in, the derived architecture out.

The weights train on one half of the training split, the architecture parameters on the other
(first-order DARTS: one step of each per batch); the architecture loss adds the hardware term
of `cost_term`. After every epoch a report (`phase` `supernet`, `train_loss`, `val_acc` of the
supernet, `expected_cost`) and a checkpoint: with `settings.snapshots` (a study on Ray) as the
report's `snapshot` (a Tune checkpoint; `resume` continues from one, on any node), else in the
trial's cache folder, keyed by the config: the same supernet asked again (the study resumed after
a kill) continues from its last epoch.
The final result measures the derived network as an ordinary trial measures its model, with the
weights it inherits from the supernet (batch norms re-estimated), untrained further; its
`records` hold the architecture weights, their probabilities, the derived config, the cost
table and the derivation's measured checks (`derive_checked`, each net measured by `checker`
as the row measures a model: the row reports the last check's costs, never a second timing).
The derived network is saved as a trial's model is (`save_model`, for `paretune export`), under
the config the trial reports: the architecture with the training keys the supernet trained
with and no compression (`search.darts`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from spaces import Space
from trainers.models import build_model
from trainers.outcome import final_result, noted, save_model
from trainers.phases import cache_folder
from trainers.supernet import build_supernet, chain_widths, discrete_state
from trainers.supernet.cost import (
    checker,
    derive_checked,
    expected_cost,
    measure_table,
    measurer,
)
from trainers.supernet.loop import SUPERNET, Loop, SupernetSpec


def _checkpoint_path(config: Mapping, settings, data) -> Path:
    """The same supernet (its settings less `rest`, which it does not train with), model
    options and data: the same file."""
    trained = {k: v for k, v in config[SUPERNET].items() if k != "rest"}
    key = json.dumps(
        {
            "config": trained,
            "options": settings.model_options,
            "data": data.name,
            "n": len(data.y_train),
        },
        sort_keys=True,
        default=str,
    )
    return cache_folder(settings) / f"supernet-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _load(path: Path) -> dict | None:
    # tensors and plain data only: a checkpoint never runs code when it loads
    return torch.load(path, weights_only=True) if path.exists() else None


@torch.no_grad()
def _recalibrate(model, x: torch.Tensor, *, batch_size: int = 256) -> None:
    """Re-estimate the batch norms' running statistics of inherited weights on `x`."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches
    model.train()
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
    model.eval()


def run_supernet(
    config: Mapping,
    report: Callable[[dict], None] | None = None,
    *,
    settings,
    data,
    resume: dict | None = None,
) -> dict:
    """Train the supernet of `config[SUPERNET]` (see `SupernetSpec`); returns the final metrics
        of the derived network (as `run_trial`), with `derived`: the full config it reports under
        (the architecture's keys with `prefix`, and `rest`). `data`: the dataset; `resume`: a
    snapshot of an earlier epoch (with `settings.snapshots`)."""
    started = time.perf_counter()
    spec = SupernetSpec.of(config[SUPERNET])
    arch = Space.from_dict(spec.arch)
    built = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    built["options"] = settings.model_options  # the builders' keywords, for all three
    torch.manual_seed(spec.seed)
    widths = chain_widths(arch, pick=spec.chain_width) if spec.kind == "chain" else None
    net = build_supernet(spec.kind, arch, mode=spec.variant, widths=widths, **built)
    path = None if settings.snapshots else _checkpoint_path(config, settings, data)
    saved = resume if path is None else _load(path)
    table = saved["table"] if saved else None
    measure = measurer(spec.cost_metric, spec.kind, cost=settings.cost, **built)
    if table is None and spec.cost_weight > 0:
        table = measure_table(net, measure, spec.cost_metric)
    loop = Loop(net, spec, data, table, saved)
    for epoch in range(loop.start, spec.epochs):
        row = loop.epoch(epoch)
        if path is None:  # the report carries it (a Tune checkpoint)
            row = {**row, "snapshot": loop.state(epoch + 1)}
        else:
            _save(path, loop.state(epoch + 1))
        if report is not None:
            report(row)
    derived = saved.get("derived") if saved else None
    if derived is None:  # derived once: a resumed study does not measure again
        calibration = data.x_train[: settings.compression.calibration_samples]
        shape = {k: built[k] for k in ("num_classes", "options")}
        check = checker(spec.kind, example=calibration, cost=settings.cost, **shape)
        derived = _derive(net, spec, table, check)
        if path is not None:
            _save(path, {**loop.state(spec.epochs), "derived": derived})
    labels, checks = derived
    derived_arch = net.config_of(labels)
    model = build_model(spec.kind, derived_arch, **built)
    model.load_state_dict(discrete_state(net, labels))
    _recalibrate(model, data.x_train[:512])
    records = [_record(net, spec, table, labels, checks)]
    derived = {spec.prefix + k: v for k, v in derived_arch.items()} | dict(spec.rest)
    costs = checks[-1].get("costs") if checks else None  # the row reports what was checked
    result = final_result(model, data, settings, records=records, started=started, costs=costs)
    note = save_model(
        model, derived, settings, name=spec.kind, arch=derived_arch, records=records, data=data
    )
    return {**noted(result, note), "derived": derived}


def _derive(net, spec: SupernetSpec, table, check: Callable[[Mapping], dict]):
    """`(labels, checks)`: the argmax, or under a bound `derive_checked` by `check`, the last
    check keeping the costs `check` gave (the derived net's, for its row)."""
    if table is None or spec.bound is None:
        return net.derive(), []
    measured = []

    def measure(configs):
        measured[:] = [check(config) for config in configs]
        return [costs[spec.cost_metric] for costs in measured]

    labels, checks = derive_checked(net, table, spec.bound, measure)
    if checks:  # `derive_checked` measures each check's net, the last one last
        checks[-1]["costs"] = measured[0]
    return labels, checks


def _record(net, spec: SupernetSpec, table, labels: Mapping, checks: list) -> dict:
    """The supernet's record: its architecture weights and probabilities, the derived config,
    the cost table and the derivation's measured checks."""
    return {
        "step": "supernet",
        "variant": spec.variant,
        "epochs": spec.epochs,
        "alphas": {k: v.detach().tolist() for k, v in net.alphas.items()},
        "probabilities": {k: v.detach().tolist() for k, v in net.probabilities().items()},
        "choices": {k: list(v) for k, v in net.choices.items()},
        "labels": labels,
        "derived": net.config_of(labels),
        "cost_table": table,
        "expected_cost": None if table is None else expected_cost(net, table).item(),
        "cost_weight": spec.cost_weight,
        "bound": spec.bound,
        "derive_checks": checks,
    }
