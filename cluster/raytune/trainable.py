"""The function every Ray Tune trial runs: `trainers.run_trial` with its reports sent to Tune."""

from __future__ import annotations

import json
import tempfile
import traceback
from pathlib import Path


def trainable(config: dict, settings) -> None:
    """The Ray Tune function: one report per epoch, then one final row (`final: True`). A trial
    that raises reports `status: failed` with its error text instead of crashing its worker."""
    import ray
    import torch
    from ray import tune

    from trainers import run_trial

    node = ray.get_runtime_context().get_node_id()

    def report(row):
        snapshot = row.pop("snapshot", None)
        metrics = {**row, "node": node, "final": False}
        if snapshot is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(snapshot, Path(folder) / "snapshot.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    checkpoint, resume = tune.get_checkpoint(), None
    if checkpoint is not None:  # population-based training restarts from a trial's snapshot
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / "snapshot.pt", weights_only=True)
    try:
        result = run_trial(config, report, settings=settings, resume=resume)
    except Exception:  # the study goes on; the row keeps the error
        result = {"status": "failed", "error": traceback.format_exc(limit=6)}
    records = json.dumps(result.pop("records", []))
    violations = json.dumps(result.pop("violations", {}))
    tune.report(
        {**result, "records": records, "violations": violations, "node": node, "final": True}
    )


def member_trainable(config: dict, settings) -> None:
    """`trainable` for a population member: its config sits under `member`."""
    trainable(config["member"]["config"], settings)
