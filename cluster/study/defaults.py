"""The built-in study `paretune run` runs with no file, its budget measured on this CPU."""

from __future__ import annotations

import time

from cluster.study.config import Study

# The joint space of the default study and of `benchmarks/joint.py`: a 1-D MobileNet-style chain,
# learning rate and weight decay, and what compression buys on ONNX Runtime: int8 kernels (8-bit
# weights and activations, post-training or quantization-aware) and filter pruning (channels
# removed). Narrower weights would run as int8 too and change only the stored size.
ARCH = {"stages": 3, "depth": (1, 2), "widths": (8, 16, 32, 64), "kernels": (3, 5, 7)}
ARCH |= {"expansions": (1, 3)}
TRAIN = {"lr": [1e-3, 3e-2], "weight_decay": [1e-5, 1e-2], "batch_size": 128}
COMPRESS = {"prune": [False, True], "prune_ratio": [0.1, 0.5], "quantize": [False, True]}
COMPRESS |= {"weight_bits": 8, "act_bits": 8, "quant_mode": ["ptq", "qat"]}
# named, so searched (a study searches only what it names): the pruning criterion and 8-bit
# weights' scheme and granularity
COMPRESS |= {"prune_criterion": ["l1", "l2", "gradient"], "quant_scheme": ["linear", "log"]}
COMPRESS |= {"quant_granularity": ["per_tensor", "per_channel"]}
MIDDLE = {"depth": 1, "width": 32, "kernel": 5, "expand": 3}  # per stage: the budget's model


def default_study(study_dir: str | None = None) -> Study:
    """The built-in study, in `studies/default-<date>-<time>` unless told: a joint search on
    MNIST-1D (architecture, learning rate and weight decay, int8 quantization and filter
    pruning) for accuracy against deployed latency, under a latency and size budget, with
    multi-objective ASHA (`moasha`)."""
    return Study(
        name="default",
        dir=study_dir or time.strftime("studies/default-%Y%m%d-%H%M%S"),
        dataset="mnist1d",
        arch="chain",
        arch_options=ARCH,
        train=TRAIN,
        compress=COMPRESS,
        searcher="bo",
        searcher_options={"n_initial": 6},
        objectives=(("val_acc", "max"), ("latency_ms", "min")),
        constraints={"size_bytes": 60_000.0, "latency_ms": 5.0},  # measured_default measures
        scheduler="moasha",  # ranks on accuracy and latency, stops a trial over a bound
        scheduler_options={"grace_period": 2, "reduction_factor": 3},
        trials=30,
        parallel=2,
        trial={"epochs": 6, "finetune_epochs": 2, "qat_epochs": 2, "latency_repeats": 12},
    )


def measured_default(study_dir: str | None = None) -> Study:
    """`default_study` with its budget measured here: a model at most as slow (measured as the
    study's trials measure, `CostSettings.timing`: at batch 64, one thread, on its `deploy`
    runtime, in fp32) and as large (fp32 bytes) as the middle model of its space on this CPU,
    so an int8 model of up to about four times its work fits."""
    from trainers.cost import measure
    from trainers.data import load_dataset
    from trainers.models import build_model

    study = default_study(study_dir)
    data = load_dataset(study.dataset)
    middle = {f"s{i}_{key}": value for i in range(3) for key, value in MIDDLE.items()}
    model = build_model("chain", middle, in_shape=data.in_shape, num_classes=data.num_classes)
    costs = measure(model, data.x_train[:64], **study.trial_settings().cost.timing())
    budget = {"latency_ms": round(costs["latency_ms"], 3), "size_bytes": float(costs["size_bytes"])}
    return Study.from_dict({**study.to_dict(), "constraints": budget})
