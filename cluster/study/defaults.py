"""The built-in study `paretune run` runs with no file, its budget measured on this CPU."""

from __future__ import annotations

import time

from cluster.study.config import Study


def default_study(study_dir: str | None = None) -> Study:
    """The built-in study, in `studies/default-<date>-<time>` unless told: a joint search on
    digits (a small chain, learning rate and weight decay, pruning, quantization, distillation)
    under a latency and size budget, with ASHA."""
    return Study(
        name="default",
        dir=study_dir or time.strftime("studies/default-%Y%m%d-%H%M%S"),
        arch="chain",
        arch_options={"stages": 3, "depth": (1, 2), "widths": (8, 16, 32), "expansions": (1, 3)},
        train={"lr": [3e-4, 3e-2], "weight_decay": [1e-6, 1e-2]},
        searcher="bo",
        searcher_options={"n_initial": 6},
        objectives=(("val_acc", "max"), ("latency_ms", "min")),
        constraints={"size_bytes": 60_000.0, "latency_ms": 5.0},  # measured_default measures
        scheduler="asha",
        scheduler_options={"grace_period": 3, "reduction_factor": 3},
        trials=40,
        parallel=2,
        trial={"epochs": 8, "finetune_epochs": 2, "qat_epochs": 2, "teacher_epochs": 8},
    )


def measured_default(study_dir: str | None = None) -> Study:
    """`default_study` with its budget measured here: a model at most as slow (at batch 64, one
    thread, on the study's `deploy` runtime) and as large (fp32 bytes) as the middle model of
    its space on this CPU."""
    from trainers.cost import deployed_latency, size_bytes
    from trainers.models import build_model

    study = default_study(study_dir)
    middle = {}
    for i in range(3):
        middle |= {f"s{i}_depth": 1, f"s{i}_width": 16, f"s{i}_kernel": 5, f"s{i}_expand": 3}
    model = build_model("chain", middle, in_shape=(1, 8, 8), num_classes=10)
    latency = deployed_latency(model, (1, 8, 8), runtime=study.deploy, batch_size=64, repeats=30)
    budget = {"latency_ms": round(latency, 3), "size_bytes": float(size_bytes(model))}
    return Study.from_dict({**study.to_dict(), "constraints": budget})
