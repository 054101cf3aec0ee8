"""Where a trial runs and at what precision: pure decisions on plain values (the device asked
for, the GPUs Ray assigned, the GPU share, the GPU's compute capability), tested on any
machine, and `on_trial_device`, which applies them around a trial. Importing this module loads
no torch."""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

from trainers.settings import PRECISIONS, TrialSettings

NATIVE_BF16 = (8, 0)  # CUDA compute capability from which bf16 runs natively (Ampere)
_CURRENT = contextvars.ContextVar("trial_device", default="cpu")


def decide_device(
    asked: str,
    *,
    gpu_share: float | None,
    gpu_ids: Sequence = (),
    visible: str | None = None,
    cuda_available: Callable[[], bool],
) -> str:
    """The device a trial uses, as text (`"cpu"`, `"cuda:0"`). `asked` is the trial setting
    `device` (`auto`, `cpu`, `cuda`, `cuda:N`); `gpu_share` the trial's `gpus_per_trial` under
    Ray (None outside Ray: `auto` is CUDA when `cuda_available()`, else the CPU); `gpu_ids`
    the GPUs Ray assigned (`ray.get_gpu_ids()`), `visible` the process's
    `CUDA_VISIBLE_DEVICES` (Ray sets it to the assigned ones). A trial with no GPU share runs
    on the CPU and never asks about CUDA; one with a share runs on its first assigned GPU, by
    its index among the visible ones. A CUDA device asked for without a share, or a share with
    no GPU assigned or visible, raises `ValueError`."""
    if asked not in ("auto", "cpu", "mps") and not asked.startswith("cuda"):
        raise ValueError(f"trial setting 'device' {asked!r}: allowed auto, cpu, cuda[:N], mps")
    if gpu_share is None:
        if asked == "auto":
            return "cuda" if cuda_available() else "cpu"
        return asked
    if asked == "cpu" or (gpu_share == 0 and asked == "auto"):
        return "cpu"
    if gpu_share == 0:
        raise ValueError(
            f"trial setting 'device' {asked!r} with gpus_per_trial 0: Ray gave the trial no "
            "GPU; set gpus_per_trial > 0, or device 'auto' or 'cpu'"
        )
    if not gpu_ids or not cuda_available():
        raise ValueError(
            f"gpus_per_trial {gpu_share} but the trial sees no GPU (assigned {list(gpu_ids)}, "
            "CUDA available: no): start the node with GPUs, or set gpus_per_trial 0"
        )
    first = str(gpu_ids[0])
    order = [d.strip() for d in visible.split(",")] if visible is not None else None
    return f"cuda:{order.index(first) if order and first in order else int(first)}"


def precision(device_type: str, capability: tuple[int, int] | None, *, asked="auto") -> str:
    """`"bf16"`, `"fp16"` or `"fp32"`: what training autocasts to on `device_type` (`cpu`,
    `cuda`, ...) of CUDA compute `capability` (`(major, minor)`; None off CUDA). `auto` is bf16
    where it is native (CUDA from 8.0), fp16 (with a gradient scaler) on older CUDA, fp32
    elsewhere; `asked` (the trial setting `precision`) overrides it where the device has it."""
    if asked not in PRECISIONS:
        raise ValueError(f"trial setting 'precision' {asked!r}: allowed {list(PRECISIONS)}")
    if device_type != "cuda":
        if asked == "fp16":
            raise ValueError(f"precision 'fp16' on {device_type}: allowed auto, bf16, fp32")
        return "fp32" if asked == "auto" else asked
    native = tuple(capability or (0, 0)) >= NATIVE_BF16
    if asked == "bf16" and not native:
        raise ValueError(
            f"precision 'bf16' on a GPU of compute capability {capability}: native from "
            f"{NATIVE_BF16}; allowed here: auto, fp16, fp32"
        )
    if asked == "auto":
        return "bf16" if native else "fp16"
    return asked


def memory_fraction(gpu_share: float | None) -> float | None:
    """The share of its GPU's memory a trial may take: its `gpus_per_trial` when a fraction of
    one GPU, else None (no cap)."""
    return gpu_share if gpu_share is not None and 0 < gpu_share < 1 else None


def trial_device():
    """The `torch.device` of the trial under way (`on_trial_device`); the CPU outside one."""
    import torch

    return torch.device(_CURRENT.get())


def device_precision(device, asked: str = "auto") -> str:
    """`precision` for a `torch.device`, its capability read from the GPU."""
    import torch

    cuda = device.type == "cuda"
    capability = torch.cuda.get_device_capability(device) if cuda else None
    return precision(device.type, capability, asked=asked)


def on_trial_device(run: Callable) -> Callable:
    """Wrap a trial function `run(config, report=None, *, settings, ...)`: it runs with
    `settings.device` decided (`decide_device` from the settings' `gpu_share` and `gpu_ids`),
    its GPU's memory capped at `memory_fraction`, and the CUDA cache emptied when it ends (a
    reused Ray actor keeps its process)."""

    @functools.wraps(run)
    def trial(config, report=None, *, settings: TrialSettings | None = None, **options):
        import torch

        settings = settings or TrialSettings()
        device = decide_device(
            settings.device,
            gpu_share=settings.gpu_share,
            gpu_ids=settings.gpu_ids,
            visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
            cuda_available=torch.cuda.is_available,
        )
        cuda = torch.device(device).type == "cuda"
        if cuda:
            fraction = memory_fraction(settings.gpu_share) or 1.0
            torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))
        token = _CURRENT.set(device)
        try:
            return run(
                config, report, settings=dataclasses.replace(settings, device=device), **options
            )
        finally:
            _CURRENT.reset(token)
            if cuda:
                torch.cuda.empty_cache()

    return trial
