"""The function every Ray Tune trial runs: `trainers.run_trial` with its reports sent to Tune."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

MODEL = "model.npz"  # a final report's checkpoint: the trial's model (`trainers.store`)
SNAPSHOT = "snapshot.pt"  # an epoch's: the state it continues from
PRICED = "priced_costs"  # a config's key, never a parameter: the costs the driver priced


def trainable(config: dict, settings, data=None, teachers=None) -> None:
    """The Ray Tune function: `run_and_report` with each report sent to `tune.report`, restored
    from the trial's checkpoint if it has one (population-based training restarts a trial from
    another's snapshot; Tune retries a trial whose worker was lost from its own). A trial
    writes nothing under the study: a snapshot (PBT, every supernet epoch) travels as its
    report's checkpoint, the final model as the final report's (`MODEL`, filed by the driver:
    `cluster.raytune.recorder`). `data`: the study's dataset and `teachers` (`{file name:
    bytes}`, `cluster.raytune.teachers`): from the driver through Ray's object store
    (`tune.with_parameters`), so no trial opens `data_path` or trains a shared teacher."""
    import ray
    import torch
    from ray import tune

    config = dict(config)
    costs = config.pop(PRICED, None)  # priced on the driver: not estimated again
    node = ray.get_runtime_context().get_node_id()
    with tempfile.TemporaryDirectory(prefix="paretune-trial-") as own:
        models, last = Path(own) / "models", Path(own) / SNAPSHOT

        def send(metrics: dict, snapshot: dict | None) -> None:
            metrics = {**metrics, "node": node}
            if snapshot is not None:
                torch.save(snapshot, last)
            files = [last] if snapshot is not None else []
            if metrics.get("final"):  # the model, and the last snapshot (PBT may clone it)
                files = [*sorted(models.glob("*.npz"))[:1], *([last] if last.exists() else [])]
            if not files:
                tune.report(metrics)
                return
            with tempfile.TemporaryDirectory() as folder:
                for file in files:
                    name = MODEL if file.suffix == ".npz" else SNAPSHOT
                    shutil.copyfile(file, Path(folder) / name)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

        resume = _resumed(tune.get_checkpoint())
        share = tune.get_context().get_trial_resources().required_resources.get("GPU", 0.0)
        gpus = tuple(str(i) for i in ray.get_gpu_ids())  # the trial's device: trainers.device
        settings = dataclasses.replace(
            settings,
            gpu_share=share,
            gpu_ids=gpus,
            save_dir=str(models),  # sent with the final report
            snapshots=settings.snapshots or "supernet" in config,
            teacher=dataclasses.replace(settings.teacher, cache_dir=None),  # this node's own
        )
        _place(teachers or {})
        run_and_report(config, settings, send=send, resume=resume, data=data, costs=costs)


def _resumed(checkpoint) -> dict | None:
    """The snapshot a Tune checkpoint holds (None: no checkpoint, or one without a snapshot)."""
    import torch

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / SNAPSHOT
        return torch.load(path, weights_only=True) if path.exists() else None


def _place(teachers: dict) -> None:
    """The driver's teachers into this node's own teacher cache (`trainers.phases`)."""
    from spaces.util import write_atomic
    from trainers.phases import cache_folder
    from trainers.settings import TrialSettings

    folder = cache_folder(TrialSettings())
    for name, blob in teachers.items():
        if not (folder / name).exists():
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / name, blob)


def run_and_report(
    config: dict,
    settings,
    *,
    send: Callable[[dict, dict | None], None],
    resume: dict | None = None,
    data=None,
    costs=None,
) -> None:
    """`trainers.run_trial(config)`, each of its reports passed to `send(metrics, snapshot)`:
    one per epoch (`final: False`, with its snapshot under `settings.snapshots`, else None),
    then the final row (`final: True`, no snapshot); `data` and `costs` as `run_trial`'s. A
    trial that
    raises sends `status: failed` with its error text instead of crashing its worker.

    Every report carries `trained_with`: the config whose training produced the weights it
    measures, and each snapshot the config and the report of the epoch that made it. A trial
    restored from another's snapshot with no training epoch left (population-based training
    cloned a trial at its end) runs as the config that trained the snapshot, never having
    trained under its perturbed one: it first sends the snapshot's report again, as phase
    `clone`, then finishes as that config would."""
    from trainers import run_trial

    if resume is not None and "config" in resume and resume["epoch"] >= settings.schedule.epochs:
        trained = json.loads(resume["config"])
        if trained != config:
            config = trained
            clone = {**json.loads(resume["report"]), "phase": "clone", "final": False}
            send({**clone, "trained_with": config}, None)

    def report(row: dict) -> None:
        snapshot = row.pop("snapshot", None)
        if snapshot is not None:
            snapshot = {**snapshot, "config": json.dumps(config), "report": json.dumps(row)}
        send({**row, "trained_with": config, "final": False}, snapshot)

    try:
        options = {"resume": resume, "data": data, "costs": costs}
        result = run_trial(config, report, settings=settings, **options)
    except Exception as error:  # the study goes on; the row keeps the reason
        result = {"status": "failed", "error": short_error(error)}
        result["traceback"] = traceback.format_exc()  # the recorder logs it, out of the row
    records = json.dumps(result.pop("records", []))
    violations = json.dumps(result.pop("violations", {}))
    trained_with = result.pop("trained_with", config)  # a supernet: what it derived
    final = {"records": records, "violations": violations, "trained_with": trained_with}
    final["final"] = True
    send({**result, **final}, None)


def bound(study):
    """`cluster.remote.device_client.bound`: the study's trial settings, latency source bound."""
    from cluster.remote.device_client import bound

    return bound(study)


def member_trainable(config: dict, settings, data=None, teachers=None) -> None:
    """`trainable` for a population member: its config sits under `member`."""
    trainable(config["member"]["config"], settings, data, teachers)


def short_error(error: BaseException) -> str:
    """One line: the exception's type and first line of text, and where it was raised."""
    text = (str(error).splitlines() or [""])[0][:300]
    frames = traceback.extract_tb(error.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {text}{where}"
