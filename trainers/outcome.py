"""A trial's end: its model's accuracy and costs as deployed, and the status they decide."""

from __future__ import annotations

import time
from collections.abc import Mapping

from torch import nn

from trainers.cost import measure
from trainers.data import Dataset
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
    model: nn.Module, data: Dataset, settings: TrialSettings, *, records: list, started: float
) -> dict:
    """The final metrics of a trained `model`: `val_acc`, `test_acc`, its costs as
    `settings.cost.runtime` runs it (`trainers.measure`, int8 activations calibrated on the
    first training samples), `records`, `train_seconds` and the status `judged` gives."""
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
