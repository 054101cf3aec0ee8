"""One trial: a joint config in; a trained, pruned, quantized, distilled and measured model out."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainers import prune as pruning
from trainers import quantize, store
from trainers.cost import count_macs, count_params, measure_latency, size_bytes
from trainers.data import Dataset, load_dataset
from trainers.distill import Distiller, cached_teacher
from trainers.models import FEATURE_LAYERS, build_model, infer_model
from trainers.train import TrainSettings, evaluate, resolve_device, train

# The default chain model of the benchmarks and of a trial given no architecture.
DEFAULT_CHAIN = {
    "s0_depth": 1,
    "s0_width": 32,
    "s0_kernel": 3,
    "s0_expand": 3,
    "s1_depth": 2,
    "s1_width": 64,
    "s1_kernel": 3,
    "s1_expand": 6,
    "s2_depth": 2,
    "s2_width": 128,
    "s2_kernel": 3,
    "s2_expand": 6,
}
COST_METRICS = ("params", "macs", "size_bytes", "latency_ms")


@dataclass(frozen=True)
class TrialSettings:
    """Everything about a trial that is not searched: data, budgets, the teacher, the cost
    limits that reject a config before training, where the model is saved."""

    dataset: str = "digits"
    data_path: str | None = None
    model: str = "auto"
    model_options: Mapping = field(default_factory=dict)
    epochs: int = 15
    finetune_epochs: int = 8
    finetune: Mapping = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.05})
    freeze: tuple[str, ...] = ()
    stage_ratios: Mapping[str, float] | None = None
    qat_epochs: int = 4
    qat: Mapping = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.01})
    calibration_samples: int = 256
    act_range: str = "minmax"
    teacher_arch: Mapping | None = None  # default: DEFAULT_CHAIN for chains, else the student's
    teacher_width: float = 2.0
    teacher_epochs: int = 15
    distill_layer: str | None = None
    cache_dir: str | None = None
    constraints: Mapping[str, float] = field(default_factory=dict)
    latency_batch: int = 64
    latency_threads: int = 1
    latency_repeats: int = 20
    device: str = "auto"
    seed: int = 0
    save_path: str | None = None
    snapshots: bool = False  # training reports carry model and optimizer state (for PBT)
    latency_source: Callable | None = None  # `f(model, in_shape, *, batch_size, repeats,
    # threads) -> ms` measuring elsewhere (a device server); None measures here


def split_config(config: Mapping) -> tuple[dict, dict, dict]:
    """`(arch, train, compress)` from `arch.`/`train.`/`compress.` keys; a config without
    prefixes is all architecture."""
    parts = {"arch": {}, "train": {}, "compress": {}}
    for key, value in config.items():
        head, _, rest = key.partition(".")
        if rest and head in parts:
            parts[head][rest] = value
        elif rest:
            raise ValueError(f"config key {key!r}: prefixes allowed are {sorted(parts)}")
        else:
            parts["arch"][key] = value
    return parts["arch"], parts["train"], parts["compress"]


def _quant_spec(compress: Mapping) -> quantize.QuantSpec:
    return quantize.QuantSpec(
        int(compress.get("weight_bits", 8)),
        compress.get("quant_scheme", "linear"),
        compress.get("quant_granularity", "per_channel") == "per_channel",
    )


def _prune_ratio(compress: Mapping, settings: TrialSettings):
    return settings.stage_ratios or float(compress["prune_ratio"])


def _model_name(arch: Mapping, settings: TrialSettings) -> str:
    return infer_model(arch) if settings.model == "auto" else settings.model


def estimate_cost(config: Mapping, settings: TrialSettings, *, in_shape, num_classes: int):
    """`params`, `macs`, `size_bytes` and `latency_ms` known before training: the untrained model
    built, pruned to its final shapes and quantized to its final storage, timed as trained ones
    are. Takes milliseconds to a second."""
    arch, _, compress = split_config(config)
    arch = arch or DEFAULT_CHAIN
    name = _model_name(arch, settings)
    model = build_model(
        name, arch, in_shape=in_shape, num_classes=num_classes, options=settings.model_options
    )
    if compress.get("prune"):
        pruning.prune(model, ratio=_prune_ratio(compress, settings), criterion="l1")
    model = model.to(resolve_device(settings.device))
    latency = _latency(model, in_shape, settings, repeats=max(3, settings.latency_repeats // 4))
    if compress.get("quantize"):
        hooks = quantize.prepare(model, _quant_spec(compress))
        quantize.finalize(model, hooks)
    return {
        "params": count_params(model),
        "macs": count_macs(model, in_shape),
        "size_bytes": size_bytes(model),
        "latency_ms": latency,
    }


def _latency(model, in_shape, settings: TrialSettings, *, repeats: int) -> float:
    measure = settings.latency_source or measure_latency
    return measure(
        model,
        in_shape,
        batch_size=settings.latency_batch,
        repeats=repeats,
        threads=settings.latency_threads,
    )


def violations(cost: Mapping, constraints: Mapping[str, float]) -> dict[str, float]:
    """By how much each limited cost exceeds its limit (empty when the config fits)."""
    unknown = sorted(set(constraints) - set(COST_METRICS))
    if unknown:
        raise ValueError(f"constraints {unknown}: allowed {list(COST_METRICS)}")
    return {k: cost[k] - limit for k, limit in constraints.items() if cost[k] > limit}


def _teacher(arch, name, data: Dataset, settings: TrialSettings, device) -> nn.Module:
    teacher_arch = settings.teacher_arch or (DEFAULT_CHAIN if name == "chain" else arch)
    teacher_name = infer_model(teacher_arch)
    options = {**settings.model_options, "width_mult": settings.teacher_width}
    fit_settings = TrainSettings(epochs=settings.teacher_epochs, seed=settings.seed)
    key = {
        "arch": teacher_arch,
        "options": options,
        "data": [data.name, list(data.in_shape), len(data.x_train)],
        "train": repr(fit_settings),
    }
    cache = Path(settings.cache_dir or Path.home() / ".cache" / "paretune")

    def build():
        torch.manual_seed(settings.seed)
        return build_model(
            teacher_name,
            teacher_arch,
            in_shape=data.in_shape,
            num_classes=data.num_classes,
            options=options,
        ).to(device)

    teacher = cached_teacher(key, build, lambda m: train(m, data, fit_settings), cache)
    teacher.layer = settings.distill_layer or FEATURE_LAYERS[teacher_name]
    return teacher


def _distiller(student, teacher, name, compress, data, settings) -> Distiller | None:
    if teacher is None:
        return None
    torch.manual_seed(settings.seed)  # the adapter's initial weights
    return Distiller(
        student,
        teacher,
        layer=settings.distill_layer or FEATURE_LAYERS[name],
        teacher_layer=teacher.layer,
        sample=data.x_train[:2],
        weight=float(compress.get("distill_weight", 1.0)),
        temperature=float(compress.get("distill_temperature", 4.0)),
        loss=compress.get("distill_loss", "mse"),
    )


def _train_phase(model, data, settings, *, report, steps, phase, distill, **resumable):
    try:
        train(
            model,
            data,
            settings,
            report=report,
            extra_loss=distill,
            phase=phase,
            first_step=steps,
            **resumable,
        )
    finally:
        if distill is not None:
            distill.close()
    return steps + settings.epochs


def run_trial(
    config: Mapping,
    report: Callable[[dict], None] | None = None,
    *,
    settings: TrialSettings | None = None,
    resume: dict | None = None,
) -> dict:
    """Build, train, prune and fine-tune, quantize (PTQ, or QAT), distill throughout, measure.
    `report(row)` after every epoch (`step`, `phase`, `epoch`, `train_loss`, `val_acc`). Returns
    `val_acc`, `test_acc` (percent), `latency_ms`, `size_bytes`, `macs`, `params`, `status`
    (`completed`, or `infeasible` with `violations` when the cost known beforehand breaks
    `settings.constraints`, untrained) and `records` (one JSON record per compression step).
    With `settings.snapshots`, each training epoch's report carries a `"snapshot"`; `resume`
    continues training from one (population-based training swaps weights this way)."""
    settings = settings or TrialSettings()
    started = time.perf_counter()
    arch, train_config, compress = split_config(config)
    arch = arch or DEFAULT_CHAIN
    name = _model_name(arch, settings)
    data = load_dataset(settings.dataset, settings.data_path)
    shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    if settings.constraints:
        cost = estimate_cost(config, settings, **shape)
        over = violations(cost, settings.constraints)
        if over:
            elapsed = time.perf_counter() - started
            return {"status": "infeasible", "violations": over, **cost, "train_seconds": elapsed}
    device = resolve_device(settings.device)
    data = data.to(device)
    torch.manual_seed(settings.seed)
    model = build_model(name, arch, **shape, options=settings.model_options).to(device)
    base = TrainSettings.from_config(train_config, epochs=settings.epochs, seed=settings.seed)
    teacher = _teacher(arch, name, data, settings, device) if compress.get("distill") else None

    def student_distiller():
        return _distiller(model, teacher, name, compress, data, settings)

    steps = _train_phase(
        model,
        data,
        base,
        report=report,
        steps=1,
        phase="train",
        distill=student_distiller(),
        snapshots=settings.snapshots,
        resume=resume,
    )
    records = []
    if compress.get("prune"):
        criterion = compress.get("prune_criterion", "l1")
        gradients = (
            pruning.gradient_importance(model, data.x_train, data.y_train)
            if criterion == "gradient"
            else None
        )
        records.append(
            pruning.prune(
                model,
                ratio=_prune_ratio(compress, settings),
                criterion=criterion,
                gradients=gradients,
            )
        )
        tune = base.but(
            epochs=settings.finetune_epochs, freeze=tuple(settings.freeze), **settings.finetune
        )
        steps = _train_phase(
            model,
            data,
            tune,
            report=report,
            steps=steps,
            phase="finetune",
            distill=student_distiller(),
        )
    latency = _latency(model, data.in_shape, settings, repeats=settings.latency_repeats)
    if compress.get("quantize"):
        records.append(
            _quantize(model, data, compress, settings, base, report, steps, student_distiller)
        )
    result = {
        "status": "completed",
        "val_acc": evaluate(model, data.x_val, data.y_val),
        "test_acc": evaluate(model, data.x_test, data.y_test),
        "latency_ms": latency,
        "size_bytes": size_bytes(model),
        "macs": count_macs(model, data.in_shape),
        "params": count_params(model),
        "records": records,
        "train_seconds": time.perf_counter() - started,
    }
    if settings.save_path:
        description = {
            "model": name,
            "arch": arch,
            "options": dict(settings.model_options),
            "records": records,
            **shape,
        }
        store.save(settings.save_path, model, description=description)
    return result


def _quantize(model, data, compress, settings, base, report, steps, student_distiller) -> dict:
    act_bits = int(compress.get("act_bits", 32))
    hooks = quantize.prepare(
        model, _quant_spec(compress), act_bits=act_bits, act_range=settings.act_range
    )
    quantize.calibrate(model, hooks, data.x_train[: settings.calibration_samples])
    mode = compress.get("quant_mode", "ptq")
    if mode not in ("ptq", "qat"):
        raise ValueError(f"quant_mode {mode!r}: allowed ['ptq', 'qat']")
    if mode == "qat":
        tune = base.but(epochs=settings.qat_epochs, **settings.qat)
        _train_phase(
            model, data, tune, report=report, steps=steps, phase="qat", distill=student_distiller()
        )
    record = quantize.finalize(model, hooks)
    record["mode"] = mode
    return record
