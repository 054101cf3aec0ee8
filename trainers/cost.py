"""What a model costs: parameters, multiply-accumulates, stored bytes, measured latency."""

from __future__ import annotations

import itertools
import statistics
import time
from contextlib import contextmanager

import torch
from torch import nn

from trainers.quantize import packed_bytes, quantized_layers


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, in_shape) -> int:
    """Multiply-accumulates of one sample through the convs and linears, counted from the
    modules as they are (after pruning): a conv costs `out_numel * in_channels/groups * kh * kw`."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *in_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def size_bytes(model: nn.Module) -> int:
    """Bytes to store the model: quantized weights packed at their bit width plus one float32
    `(offset, step)` pair per tensor or channel; every other float parameter and buffer float32."""
    spec = getattr(model, "quant_spec", None)
    packed = {f"{n}.weight" for n in quantized_layers(model)} if spec else set()
    total = 0
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):
        if not tensor.is_floating_point():
            continue
        if name in packed:
            pairs = tensor.shape[0] if spec.per_channel else 1
            total += packed_bytes(tensor.numel(), spec.bits) + 8 * pairs
        else:
            total += 4 * tensor.numel()
    return total


@contextmanager
def _threads(count: int | None):
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    in_shape,
    *,
    batch_size: int = 64,
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = 1,
) -> float:
    """Median milliseconds of one forward pass of `batch_size` samples on the model's device,
    after `warmup` passes, with `threads` CPU threads (None keeps torch's setting)."""
    device = next(model.parameters()).device
    x = torch.randn(batch_size, *in_shape, device=device)
    was_training = model.training
    model.eval()
    times = []
    with _threads(threads):
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000.0 * statistics.median(times)
