"""Response distillation: the student learns a teacher's response at a named layer (through a
learned 1x1 adapter when widths differ) and its soft logits at temperature T. Responses of 1-D
models `(n, C, L)` are compared as maps of height 1."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from spaces.util import write_atomic

FEATURE_LOSSES = ("mse", "kl")


class _Capture:
    def __init__(self, model: nn.Module, layer: str):
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ValueError(f"no layer {layer!r} to distill at; layers: {sorted(modules)[:40]}")
        self.value = None
        self.handle = modules[layer].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.value = output


def _as_map(x: torch.Tensor) -> torch.Tensor:
    """`(n, C, H, W)` as it is; a 1-D response `(n, C, L)` as `(n, C, 1, L)`; `(n, C)` as
    `(n, C, 1, 1)`."""
    if x.dim() == 4:
        return x
    return x.unsqueeze(2) if x.dim() == 3 else x.reshape(*x.shape[:2], 1, 1)


def _channel_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float):
    log_p = F.log_softmax(student / temperature, 1)
    q = F.softmax(teacher / temperature, 1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


class Distiller(nn.Module):
    """`distiller(x, student_logits)` is `weight * (L_feature + L_logits)`: the feature term MSE
    (or KL over channels at T) between the adapted student response and the teacher's at the
    named layers, the logit term KL at temperature T (scaled by T^2). Call it inside the
    student's forward pass (its hook keeps the response); the teacher stays frozen."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        layer: str,
        teacher_layer: str,
        sample: torch.Tensor,
        weight: float = 1.0,
        temperature: float = 4.0,
        loss: str = "mse",
    ):
        super().__init__()
        if loss not in FEATURE_LOSSES:
            raise ValueError(f"distillation loss {loss!r}: allowed {list(FEATURE_LOSSES)}")
        self.weight, self.temperature, self.loss = float(weight), float(temperature), loss
        self.teacher = [teacher.eval()]  # a list keeps it out of this module's parameters
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.student_response = _Capture(student, layer)
        self.teacher_response = _Capture(teacher, teacher_layer)
        with torch.no_grad():
            was_training = student.training
            student.eval()
            student(sample[:2])
            teacher(sample[:2])
            student.train(was_training)
        s_channels = self.student_response.value.shape[1]
        t_channels = self.teacher_response.value.shape[1]
        self.adapter = (
            nn.Identity()
            if s_channels == t_channels
            else nn.Conv2d(s_channels, t_channels, 1, bias=False).to(sample.device)
        )

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher[0](x)
        target = _as_map(self.teacher_response.value).float()
        response = self.adapter(_as_map(self.student_response.value).float())
        if response.shape[-2:] != target.shape[-2:]:
            response = F.adaptive_avg_pool2d(response, target.shape[-2:])
        if self.loss == "mse":
            feature = F.mse_loss(response, target)
        else:
            feature = _channel_kl(response, target, self.temperature)
        soft = _channel_kl(logits.float(), teacher_logits.float(), self.temperature)
        return self.weight * (feature + soft)

    def close(self) -> None:
        self.student_response.handle.remove()
        self.teacher_response.handle.remove()


def teacher_file(key: Mapping, cache: str | Path) -> Path:
    """Where `cached_teacher` keeps the teacher that `key` describes: `cache/teacher-<hash>.pt`
    (a `state_dict`)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return Path(cache) / f"teacher-{digest[:16]}.pt"


def cached_teacher(
    key: Mapping, build: Callable[[], nn.Module], fit: Callable[[nn.Module], None], cache: Path
) -> nn.Module:
    """The teacher `build()` trained by `fit`, cached under `cache` by the hash of `key` (a JSON
    description of everything that determines it), so a study trains it once: under a file lock,
    one trial trains it and parallel ones wait, then load it. Written atomically; loaded with
    `weights_only`."""
    path = teacher_file(key, cache)
    model = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:  # one trial trains, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model
        fit(model)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        write_atomic(path, buffer.getvalue())
    return model
