"""The training phases of a trial (`trainers.trial`): training, pruning with its fine-tuning,
quantization with its quantization-aware training, each distilled from the teacher when asked,
the step numbers of their reports running on from one phase to the next."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from trainers import quantize, sparsity
from trainers.compress_keys import quant_mode
from trainers.compress_steps import prepare_quantization, prune_model
from trainers.data import Dataset
from trainers.distill import Distiller, cached_teacher
from trainers.models import FEATURE_LAYERS, build_model, infer_model
from trainers.outcome import scored_graph
from trainers.settings import DEFAULT_CHAIN, TrialSettings
from trainers.train import TrainSettings, train


def cache_folder(settings: TrialSettings) -> Path:
    """The trials' cache (teachers, supernet checkpoints): `settings.teacher.cache_dir`, else
    `~/.cache/paretune`."""
    return Path(settings.teacher.cache_dir or Path.home() / ".cache" / "paretune")


@dataclass(frozen=True)
class Run:
    """One trial under way: its model and what each of its training phases shares."""

    model: nn.Module
    name: str  # the model's builder
    data: Dataset
    settings: TrialSettings
    base: TrainSettings  # the searched training hyperparameters, for the training phase
    compress: Mapping  # the searched `compress.` keys
    teacher: nn.Module | None  # None: no distillation
    report: Callable[[dict], None] | None


def teacher_plan(arch: Mapping, name: str, data: Dataset, settings: TrialSettings):
    """`(key, build, fit, layer)` of the distillation teacher of a student `arch` built by
    `name`: `settings.teacher.arch` (by default `DEFAULT_CHAIN` for a chain, else the
    student's) at `width`; `key` describes all that determines it (`cached_teacher`'s),
    `build(device)` makes it untrained, `fit(model)` trains it on `data` (on its device), and
    `layer` is where it is distilled from."""
    arch = settings.teacher.arch or (DEFAULT_CHAIN if name == "chain" else arch)
    teacher_name = infer_model(arch)
    options = {**settings.model_options, "width_mult": settings.teacher.width}
    fit_settings = TrainSettings(epochs=settings.teacher.epochs, seed=settings.seed)
    key = {
        "arch": arch,
        "options": options,
        "data": [data.name, list(data.in_shape), len(data.x_train)],
        "train": repr(fit_settings),
    }

    def build(device):
        torch.manual_seed(settings.seed)
        shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
        return build_model(teacher_name, arch, **shape, options=options).to(device)

    def fit(model):
        train(model, data, fit_settings, precision=settings.precision)

    return key, build, fit, settings.teacher.distill_layer or FEATURE_LAYERS[teacher_name]


def teacher(arch: Mapping, name: str, data: Dataset, settings: TrialSettings, device):
    """The teacher of `teacher_plan`, trained once and cached in `settings.teacher.cache_dir`
    (`cache_folder`, `cached_teacher`) by what it is."""
    key, build, fit, layer = teacher_plan(arch, name, data, settings)
    fitted = cached_teacher(key, lambda: build(device), fit, cache_folder(settings))
    fitted.layer = layer
    return fitted


def _distiller(run: Run) -> Distiller | None:
    if run.teacher is None:
        return None
    torch.manual_seed(run.settings.seed)  # the adapter's initial weights
    return Distiller(
        run.model,
        run.teacher,
        layer=run.settings.teacher.distill_layer or FEATURE_LAYERS[run.name],
        teacher_layer=run.teacher.layer,
        sample=run.data.x_train[:2],
        weight=float(run.compress.get("distill_weight", 1.0)),
        temperature=float(run.compress.get("distill_temperature", 4.0)),
        loss=run.compress.get("distill_loss", "mse"),
    )


def train_phase(run: Run, fit: TrainSettings, *, phase: str, steps: int, **resumable) -> int:
    """Train `run.model` with `fit` (distilled when the run has a teacher), its reports numbered
    from `steps`, at the trial's precision (quantization-aware training in fp32: its 8-bit
    codes do not survive bf16); returns the next phase's first step."""
    distill = _distiller(run)
    precision = "fp32" if phase == "qat" else run.settings.precision
    try:
        train(
            run.model,
            run.data,
            fit,
            report=run.report,
            extra_loss=distill,
            phase=phase,
            first_step=steps,
            precision=precision,
            **resumable,
        )
    finally:
        if distill is not None:
            distill.close()
    return steps + fit.epochs


def prune_phase(run: Run, steps: int) -> tuple[list[dict], int]:
    """Prune (`prune_model`), then fine-tune from step `steps` with the weight masks held, then
    bake them in: the records and the next step (`steps` when nothing is pruned)."""
    records = prune_model(run.model, run.compress, run.settings.compression, data=run.data)
    if not records:
        return records, steps
    schedule = run.settings.schedule
    fit = run.base.but(
        epochs=schedule.finetune_count, freeze=tuple(schedule.freeze), **schedule.finetune
    )
    steps = train_phase(run, fit, phase="finetune", steps=steps)
    sparsity.release(run.model)
    return records, steps


def quantize_phase(run: Run, steps: int) -> dict:
    """Quantize, with quantization-aware training from step `steps` in `qat` mode."""
    compression = run.settings.compression
    calibration = run.data.x_train[: compression.calibration_samples]
    hooks = prepare_quantization(run.model, run.compress, compression, calibration)
    mode = quant_mode(run.compress)
    if mode == "qat":
        schedule = run.settings.schedule
        fit = run.base.but(epochs=schedule.qat_count, **schedule.qat)
        train_phase(replace(run, report=deployed_report(run)), fit, phase="qat", steps=steps)
    record = quantize.finalize(run.model, hooks)
    record["mode"] = mode
    return record


def deployed_report(run: Run) -> Callable[[dict], None] | None:
    """`run.report` for the epochs whose model ships as another function than the PyTorch
    module trained (quantization-aware training: fake-quantized weights, which ship as their
    codes): each row's `val_acc` is that of the model as deployed at that epoch (a copy
    baked, `quantize.baked`, its runtime graph scored on the validation split in one
    untimed ONNX Runtime session: `trainers.outcome.scored_graph`, as the final result is) and
    `torch_val_acc` the PyTorch figure. On the `torch` runtime, and for a model the runtime
    cannot export, the row keeps the PyTorch figure. Fp32 epochs (training, and pruning's
    fine-tuning, whose masked weights ship as zeros: the same function) report the PyTorch
    figure, paying no export."""
    if run.report is None or run.settings.cost.runtime == "torch":
        return run.report
    split = {"val": (run.data.x_val, run.data.y_val)}

    def report(row: dict) -> None:
        found = scored_graph(quantize.baked(run.model), split, cost=run.settings.cost)[0]
        if found:
            row = {**row, "val_acc": found["val_acc"], "torch_val_acc": row["val_acc"]}
        run.report(row)

    return report
