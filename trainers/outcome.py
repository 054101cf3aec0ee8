"""A trial's end: its model's accuracy and costs as deployed, the status they decide, the model
kept."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from trainers import store
from trainers.cost import measure
from trainers.data import Dataset
from trainers.export import model_file
from trainers.settings import CostSettings, TrialSettings, violations
from trainers.train import evaluate


def judged(costs: Mapping, cost: CostSettings) -> dict:
    """`{"status": ...}` the costs decide: `failed` (with `error`) when the latency was not
    measured, `infeasible` (with `violations`) when a cost breaks `cost.constraints`, else
    `completed`."""
    if costs.get("error"):
        return {"status": "failed"}
    over = violations(costs, cost.constraints)
    return {"status": "infeasible", "violations": over} if over else {"status": "completed"}


def final_result(
    model: nn.Module,
    data: Dataset,
    settings: TrialSettings,
    *,
    records: list,
    started: float,
    costs: Mapping | None = None,
) -> dict:
    """The final metrics of a trained `model`: `val_acc`, `test_acc`, its costs as
    `settings.cost.runtime` runs it (`trainers.measure`, int8 activations calibrated on the
    first training samples; `costs`: measured so already), `records`, `train_seconds` and the
    status `judged` gives."""
    if costs is None:
        calibration = data.x_train[: settings.compression.calibration_samples]
        costs = measure(model, calibration, **settings.cost.timing(), strict=False)
    return {
        **judged(costs, settings.cost),
        "val_acc": evaluate(model, data.x_val, data.y_val),
        "test_acc": evaluate(model, data.x_test, data.y_test),
        **costs,
        "records": records,
        "train_seconds": time.perf_counter() - started,
    }


def save_model(
    model: nn.Module,
    config: Mapping,
    settings: TrialSettings,
    *,
    name: str,
    arch: Mapping,
    records: list,
    data: Dataset,
) -> str | None:
    """`model` (built by `name` from `arch`) to `settings.save_path` and, in a study, to its
    models folder (`save_dir`), keyed by the `config` its row holds, for `paretune export`.
    Returns None, or why it could not be saved (the trial's metrics stand: `noted`)."""
    description = {
        "model": name,
        "arch": dict(arch),
        "options": dict(settings.model_options),
        "records": records,
        "in_shape": data.in_shape,
        "num_classes": data.num_classes,
    }
    try:
        paths = [Path(p) for p in (settings.save_path,) if p]
        if settings.save_dir:  # a study keeps every trial's model for `paretune export`
            paths.append(model_file(settings.save_dir, config))
            paths[-1].parent.mkdir(parents=True, exist_ok=True)
        for path in paths:
            store.save(path, model, description=description)
    except Exception as error:  # a full disk, a read-only folder: the metrics are kept
        return f"model not saved: {type(error).__name__}: {error}"
    return None


def noted(result: dict, note: str | None) -> dict:
    """`result` with `note` added to its `error` (a completed trial keeps its status)."""
    if note:
        result["error"] = "; ".join(filter(None, (result.get("error"), note)))
    return result
