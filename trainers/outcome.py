"""A trial's end: its model's accuracy and costs as deployed, the status they decide, the model
kept."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from trainers import deploy, store
from trainers.cost import deployed, scores
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
    """The final metrics of a trained `model`: its costs as `settings.cost.runtime` deploys it
    (`trainers.cost.deployed`; `costs`: measured so already, then the graph is only scored),
    `val_acc` and `test_acc` of the deployed model (on `onnxruntime`, its ONNX file scored in
    the session that timed it, `score_seconds` that scoring's time; on `torch`, the PyTorch
    model), `torch_val_acc` and `torch_test_acc` of the PyTorch model, `records` with a last
    `deploy` record (the runtime, the file's bytes and sha256: what `paretune export` writes),
    `train_seconds` and the status `judged` gives. A model the runtime cannot run is scored
    in PyTorch (its trial `failed`)."""
    splits = {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}
    torch_scores = {f"torch_{k}_acc": evaluate(model, x, y) for k, (x, y) in splits.items()}
    timing = settings.cost.timing()
    if costs is None:
        calibration = data.x_train[: settings.compression.calibration_samples]
        costs, graph = deployed(model, calibration, **timing, strict=False, splits=splits)
    else:
        found, graph = scored_graph(model, splits, cost=settings.cost)
        costs = {**costs, **found}
    fallback = {f"{k}_acc": torch_scores[f"torch_{k}_acc"] for k in splits}
    return {
        **judged(costs, settings.cost),
        **fallback,
        **torch_scores,
        **costs,
        "records": [*records, deploy_record(graph, timing["runtime"])],
        "train_seconds": time.perf_counter() - started,
    }


def scored_graph(model: nn.Module, splits: Mapping, *, cost: CostSettings):
    """`(scores, graph)`: the graph `cost.runtime` runs for `model` (`deploy.runtime_graph` on
    `onnxruntime`; None on `torch`, whose model is `model` itself, and for a model it cannot
    export) and each split of `splits` (`{"val": (x, y)}`, `x` of shape `(n, *in_shape)`)
    scored on it in one untimed ONNX Runtime session of `cost.latency_threads` threads
    (`trainers.cost.scores`; `{}` without a graph)."""
    if cost.runtime != "onnxruntime":
        return {}, None
    x = next(iter(splits.values()))[0]
    try:
        graph = deploy.runtime_graph(model, tuple(x.shape[1:]))
    except deploy.DeployError:  # measured elsewhere, unexportable here: not scored
        return {}, None
    return scores(deploy.session(graph, cost.latency_threads), splits), graph


def deploy_record(graph: bytes | None, runtime: str) -> dict:
    """The `deploy` record of a row: `runtime`, and the deployed file's `bytes` and `sha256`
    (None without one: the `torch` runtime, or a model it could not export)."""
    digest = hashlib.sha256(graph).hexdigest() if graph is not None else None
    size = len(graph) if graph is not None else None
    return {"step": "deploy", "runtime": runtime, "bytes": size, "sha256": digest}


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
