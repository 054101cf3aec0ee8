"""One trial: a joint config in; a trained, pruned, quantized, distilled and measured model out.

`run_trial` reads top to bottom: plan (the config split and checked, the costs known before
training judged), train, compress, measure and judge (`trainers.outcome`), save."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

from trainers.compress_keys import check_compress, split_config
from trainers.data import Dataset, load_dataset
from trainers.device import on_trial_device
from trainers.estimate import estimate_cost
from trainers.models import build_model, model_name
from trainers.outcome import final_result, judged, noted, save_model
from trainers.phases import Run, prune_phase, quantize_phase, teacher, train_phase
from trainers.settings import DEFAULT_CHAIN as DEFAULT_CHAIN
from trainers.settings import MEASURED_AT_START, TrialSettings
from trainers.supernet.trial import run_supernet
from trainers.train import TrainSettings, resolve_device

__all__ = ["DEFAULT_CHAIN", "TrialSettings", "estimate_cost", "run_trial"]


@on_trial_device
def run_trial(
    config: Mapping,
    report: Callable[[dict], None] | None = None,
    *,
    settings: TrialSettings | None = None,
    resume: dict | None = None,
    data: Dataset | None = None,
    costs: Mapping | None = None,
) -> dict:
    """Build, train, prune and fine-tune, quantize (PTQ, or QAT), distill throughout, measure.
    `report(row)` after every epoch (`step`, `phase`, `epoch`, `train_loss`, `val_acc`: the
    PyTorch model's in fp32 epochs, whose deployed graph is the same function; in
    quantization-aware training epochs the deployed graph's, with the PyTorch figure as
    `torch_val_acc`, `trainers.phases.deployed_report`). Returns
    `val_acc`, `test_acc` (percent), `latency_ms`, `size_bytes`, `macs`, `params`,
    `peak_mem_bytes`, `status` and `records` (one JSON record per compression step); with a
    latency bound, `start_latency_ms` in every report too (measured before training, see
    `_before_training`). Costs are
    those of the model as `settings.cost.runtime` runs it (`trainers.deploy`), timed after
    quantization. The status: `completed`; `infeasible` with `violations` when a cost breaks
    `settings.cost.constraints`, either known before training (then untrained, costs only) or
    measured on the final model (accuracy kept); `failed` with `error` and every other metric
    when the latency could not be measured (a device server lost, a model the runtime cannot
    export). With `settings.snapshots`, each training epoch's report carries a `"snapshot"`;
    `resume` continues training from one (population-based training swaps weights this way).
    `data`: the dataset, loaded by the caller (a study ships it to its trials through Ray's
    object store); without it, the trial loads `settings.data` itself. `costs`: the costs known
    before training, priced already (a study's driver did, `estimate_cost` with these
    settings): judged as they are, not estimated again. It runs on the device
    `trainers.device.on_trial_device` decides."""
    settings, started = settings or TrialSettings(), time.perf_counter()
    if data is None:
        data = load_dataset(settings.data.dataset, settings.data.path)
    if "supernet" in config:  # a `search.darts` supernet: trains it, measures what it derives
        result = run_supernet(config, report, settings=settings, data=data, resume=resume)
        # the study records the trial under the architecture its final metrics measure
        result["trained_with"] = {**config, **result.pop("derived")}
        return result
    check_compress(split_config(config)[2], settings.compression)
    refused, at_start = _before_training(config, settings, data, costs)
    if refused:
        return {**refused, "train_seconds": time.perf_counter() - started}
    if at_start and report is not None:
        report = _carrying(report, at_start)
    run = _start(config, report, settings, data)
    steps = train_phase(
        run, run.base, phase="train", steps=1, snapshots=settings.snapshots, resume=resume
    )
    records, steps = prune_phase(run, steps)
    if run.compress.get("quantize"):
        records.append(quantize_phase(run, steps))
    result = final_result(run.model, run.data, settings, records=records, started=started)
    return noted({**result, **at_start}, _save(run, config, records))


def _before_training(config: Mapping, settings: TrialSettings, data: Dataset, costs):
    """With constraints, `(the infeasible result or None, the costs measured before training as
    `MEASURED_AT_START` names them)`. The costs judged are `costs` when priced already (the
    study's price, which it calibrates on what trials measure: measured again here, timed as
    the final measurement is, so a trial stopped at a rung is a calibration pair too), else
    estimated here."""
    if not settings.cost.constraints:
        return None, {}
    shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    cost = dict(costs) if costs else estimate_cost(config, settings, **shape)
    verdict = judged(cost, settings.cost)
    if verdict["status"] == "infeasible":
        return {**verdict, **cost}, {}
    measured = _measured(config, settings, shape) if costs else cost
    return None, {
        column: measured[name]
        for name, column in MEASURED_AT_START.items()
        if name in settings.cost.constraints and measured.get(name) is not None
    }


def _measured(config: Mapping, settings: TrialSettings, shape: dict) -> dict:
    """`config`'s costs before training, timed with the trial's repeats ({} when they cannot be
    measured: the trial's final measurement says why)."""
    try:
        return estimate_cost(config, settings, **shape, repeats=settings.cost.latency_repeats)
    except Exception:  # noqa: BLE001 - calibration only; the final measurement reports it
        return {}


def _carrying(report: Callable[[dict], None], values: dict) -> Callable[[dict], None]:
    """`report` with `values` in every row."""
    return lambda row: report({**row, **values})


def _start(config: Mapping, report, settings: TrialSettings, data: Dataset) -> Run:
    """The run: the model built (seeded) on the device, the training settings, the teacher."""
    arch, train_config, compress = split_config(config)
    arch = arch or DEFAULT_CHAIN
    name = model_name(arch, settings.model)
    device = resolve_device(settings.device)
    data = data.to(device)
    torch.manual_seed(settings.seed)
    shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    model = build_model(name, arch, **shape, options=settings.model_options).to(device)
    base = TrainSettings.from_config(
        train_config, epochs=settings.schedule.epochs, seed=settings.seed
    )
    tutor = teacher(arch, name, data, settings, device) if compress.get("distill") else None
    return Run(model, name, data, settings, base, compress, tutor, report)


def _save(run: Run, config: Mapping, records: list[dict]) -> str | None:
    arch = split_config(config)[0] or DEFAULT_CHAIN
    return save_model(
        run.model, config, run.settings, name=run.name, arch=arch, records=records, data=run.data
    )
