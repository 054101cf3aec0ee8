"""`paretune export STUDY TRIAL --out model.onnx`: a trial's model, as its costs were measured,
for the device (formats and what they carry: `trainers.export`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

UNFINISHED = {
    "running": "has not finished (no final model yet)",
    "stopped": "was stopped by the scheduler before its end: it kept no final model",
    "interrupted": "was cut off when its run stopped: it kept no final model",
    "infeasible": "was rejected before training (its costs broke a bound): it has no model",
}


def trial_row(study_dir: str | Path, trial: str) -> dict:
    """The trial's row (its final one, or its last); `ValueError` naming the trials there are."""
    from cluster.study import results

    table = results.load(study_dir)
    rows = {row["trial"]: row for row in table.to_pylist()}
    if trial not in rows:
        known = sorted(rows, key=results.trial_key)
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise ValueError(f"study {str(study_dir)!r} has no trial {trial!r}; trials: {shown}")
    return rows[trial]


def stored_model(study_dir: str | Path, trial: str):
    """`(model, study, row)`: the trial's final model as `trainers.store` saved it (a warm
    trial's from the study it came from), the study that trained it, and the trial's row in
    `study_dir`. Raises `ValueError` saying why there is none."""
    from cluster.study.resume import load_study
    from cluster.study.rows import config_of
    from cluster.study.warm import WARM_FROM, WARM_TRIAL
    from trainers import store
    from trainers.export import model_file

    row = trial_row(study_dir, trial)
    if row.get(WARM_FROM):  # a warm-start row: the model lives in the study that ran it
        model, study, _ = stored_model(row[WARM_FROM], row[WARM_TRIAL])
        return model, study, row
    study = load_study(study_dir)
    if study.trainable:
        raise ValueError(
            f"study {str(study_dir)!r} runs its own trainable ({study.trainable}): paretune "
            "keeps no model of its trials; save the model in your function"
        )
    status = row["status"]
    if status in UNFINISHED and not (status == "infeasible" and row.get("val_acc") is not None):
        raise ValueError(f"trial {trial} of {str(study_dir)!r} {UNFINISHED[status]}")
    path = model_file(Path(study_dir) / "models", config_of(row))
    if not path.exists():
        why = f" (it failed: {row['error']})" if status == "failed" and row.get("error") else ""
        raise ValueError(
            f"no stored model for trial {trial} of {str(study_dir)!r}{why}: expected "
            f"{path}; studies keep their trials' models since paretune export exists"
        )
    model, _ = store.load(path)
    return model, study, row


def deploy_record(row: dict) -> dict | None:
    """The row's `deploy` record (`trainers.outcome.deploy_record`): the file it measured."""
    records = row.get("records")
    records = json.loads(records) if isinstance(records, str) else records or []
    return next((r for r in records if r.get("step") == "deploy"), None)


def export_trial(study_dir: str | Path, trial: str, out: str | Path, *, fmt=None) -> dict:
    """Write trial `trial`'s model to `out` (`trainers.export` formats; `fmt` None: by the
    suffix). An ONNX file is the one the trial timed, scored and sized, rebuilt bit for bit and
    checked against the sha256 its row's `deploy` record holds (`ValueError` when it differs).
    Returns what was written: `format`, `bytes`, `carries`, `checked` (the file is the one the
    row measured), and the row's `val_acc`, `test_acc`, `torch_test_acc`, `size_bytes`,
    `latency_ms`."""
    from trainers.data import load_dataset
    from trainers.export import carries, export_model, format_of

    fmt = format_of(out, fmt)
    model, study, row = stored_model(study_dir, str(trial))
    data = load_dataset(study.dataset, study.data_path)
    keys = ("val_acc", "test_acc", "torch_test_acc", "size_bytes", "latency_ms")
    facts = {k: row.get(k) for k in keys}
    meta = {
        "input": {"shape": ["batch", *data.in_shape], "mean": data.mean, "std": data.std},
        "dataset": study.dataset,
        "classes": data.num_classes,
        "trial": {"study": str(study_dir), "trial": str(trial), **facts},
    }
    written = export_model(model, data.in_shape, out, fmt=fmt, meta=meta)
    record = deploy_record(row) or {}
    checked = fmt == "onnx" and record.get("sha256") is not None
    if checked:
        digest = hashlib.sha256(Path(out).read_bytes()).hexdigest()
        if digest != record["sha256"]:
            Path(out).unlink()
            Path(f"{out}.json").unlink(missing_ok=True)  # its sidecar, written with it
            raise ValueError(
                f"the ONNX file rebuilt for trial {trial} (sha256 {digest[:12]}) is not the "
                f"one it measured ({record['sha256'][:12]}): not written; the stored model or "
                "this paretune differs from the run's"
            )
    done = {"format": fmt, "bytes": written, "carries": carries(model, fmt), "checked": checked}
    return {**done, **meta, **facts}


def _cmd_export(args) -> int:
    done = export_trial(args.study, args.trial, args.out, fmt=args.format)
    print(f"wrote {args.out}: {done['bytes']:,} bytes, {done['carries']}")
    shape, mean, std = (done["input"][k] for k in ("shape", "mean", "std"))
    values = f"the {done['dataset']} loader's values"
    print(f"input: float32 {tuple(shape)}, normalized as (x - {mean:.6g}) / {std:.6g} of {values}")
    shown = ("val_acc", "test_acc", "size_bytes", "latency_ms")
    measured = ", ".join(f"{k} {done[k]:.6g}" for k in shown if done[k] is not None)
    if done["checked"]:
        print(f"this file is the one trial {args.trial} measured: {measured}")
    elif done["format"] == "onnx":
        print(
            f"trial {args.trial}'s row ({measured}) measured no ONNX file (a torch runtime, or "
            "a study older than deployed scoring): these are not this file's figures"
        )
    else:
        torch_measured = done.get("torch_test_acc")
        print(f"trial {args.trial}: PyTorch test_acc {torch_measured}; deployed {measured}")
    return 0


def add_parser(commands) -> None:
    """The `export` subcommand on `commands` (argparse subparsers)."""
    sub = commands.add_parser("export", help="write a trial's model as ONNX or TorchScript")
    sub.add_argument("study", help="the study folder")
    sub.add_argument("trial", help="the trial id (the `trial` column of `paretune results`)")
    sub.add_argument("--out", required=True, help="model.onnx or model.pt")
    sub.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        help="onnx: the file ONNX Runtime timed, scored and sized; torchscript: the "
        "PyTorch model (its row's torch_* accuracy) (default: by --out's suffix)",
    )
    sub.set_defaults(func=_cmd_export)
