"""The training loop: seeded, SGD or AdamW, cosine schedule, a report after every epoch."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace

import torch
from torch import nn
from torch.nn import functional as F

from trainers.data import Dataset
from trainers.device import decide_device, device_precision
from trainers.settings import EPOCHS

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class TrainSettings:
    """What `train` needs; `from_config` reads the keys of `spaces.training()`."""

    epochs: int = EPOCHS
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 64
    label_smoothing: float = 0.0
    seed: int = 0
    freeze: tuple[str, ...] = ()  # parameter-name prefixes kept fixed

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: allowed {list(OPTIMIZERS)}")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0, got {self}")

    @classmethod
    def from_config(cls, train: Mapping, **overrides) -> TrainSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in train.items() if k in names}, **overrides)

    def but(self, **changes) -> TrainSettings:
        return replace(self, **changes)


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` is CUDA when present, else the CPU (a trial's own: `trainers.device`)."""
    return torch.device(
        decide_device(device, gpu_share=None, cuda_available=torch.cuda.is_available)
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512):
    """Accuracy in percent."""
    was_training = model.training
    model.eval()
    correct = sum(
        (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
        for i in range(0, len(x), batch_size)
    )
    model.train(was_training)
    return 100.0 * correct / max(len(x), 1)


def _optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=settings.momentum > 0,
        )
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def _continue(optimizer: torch.optim.Optimizer, state: dict, settings: TrainSettings) -> None:
    """Load an optimizer's state but keep this run's learning rate and weight decay."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] = settings.lr
        group["weight_decay"] = settings.weight_decay


def train(
    model: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    *,
    report: Callable[[dict], None] | None = None,
    extra_loss: nn.Module | None = None,
    phase: str = "train",
    first_step: int = 1,
    snapshots: bool = False,
    resume: dict | None = None,
    precision: str = "auto",
) -> list[dict]:
    """Train `model` in place on `data` (already on the model's device); `extra_loss(x, logits)`
    is added to the cross-entropy and its parameters are trained too. After each epoch
    `report({"step", "phase", "epoch", "train_loss", "val_acc"})`, plus `"snapshot"` (epoch,
    model and optimizer state) when `snapshots`; `resume` takes such a snapshot and continues
    after its epoch with `settings`' hyperparameters (population-based training). The forward
    pass autocasts to `trainers.device.precision(device, capability, asked=precision)` (fp16
    with a gradient scaler). A NaN loss raises `FloatingPointError`. Returns the reports."""
    start = int(resume["epoch"]) if resume else 0
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    if resume:
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["rng"])
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(settings.freeze) if settings.freeze else True)
    params = [p for p in model.parameters() if p.requires_grad]
    if extra_loss is not None:
        params += list(extra_loss.parameters())
    optimizer = _optimizer(params, settings)
    n = len(data.x_train)
    per_epoch = math.ceil(n / settings.batch_size)
    total = max(1, per_epoch * settings.epochs)
    done = per_epoch * start
    if resume:
        model.load_state_dict(resume["model"])
        _continue(optimizer, resume["optimizer"], settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step + done, total) / total))
    )
    device = data.x_train.device
    mode = device_precision(device, precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")
    reports = []
    model.train()
    for epoch in range(start, settings.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        losses = []
        for i in range(0, n, settings.batch_size):
            idx = order[i : i + settings.batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=settings.label_smoothing)
                if extra_loss is not None:
                    loss = loss + extra_loss(x, logits)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{phase}: the loss became {loss.item()} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(loss.item())
        row = {
            "step": first_step + epoch,
            "phase": phase,
            "epoch": epoch + 1,
            "train_loss": sum(losses) / len(losses),
            "val_acc": evaluate(model, data.x_val, data.y_val),
        }
        reports.append(row)
        if snapshots:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            state = copy.deepcopy(state)  # the live tensors train on
            state |= {"generator": generator.get_state(), "rng": torch.get_rng_state()}
            row = {**row, "snapshot": {"epoch": epoch + 1, **state}}
        if report is not None:
            report(row)
    for param in model.parameters():
        param.requires_grad_(True)
    return reports
