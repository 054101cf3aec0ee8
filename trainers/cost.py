"""What a model costs: parameters, multiply-accumulates, stored bytes, peak activation memory,
latency measured as the model's runtime runs it (`trainers.deploy`); `measure` gives them all."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager, suppress

import torch
from torch import nn

from trainers import deploy
from trainers.memory import peak_mem_bytes
from trainers.settings import LATENCY_REPEATS
from trainers.store import stored_bytes


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, in_shape) -> int:
    """Multiply-accumulates of one sample through the convs and linears, counted from the
    modules as they are (after pruning): a conv costs `out_numel * in_channels/groups * kh * kw`
    (`* k` for a 1-D conv)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            kernel = math.prod(module.kernel_size)
            total += output.numel() * (module.in_channels // module.groups) * kernel
        else:
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]
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
    """Bytes to store the model, exactly as `trainers.store.save` writes its tensors
    (`store.stored_bytes`): quantized weights packed at their bit width plus one float32
    `(offset, step)` pair per tensor or channel, a float32 range per quantized activation, every
    other float parameter and buffer float32. The runtime's graph (int8 codes for 2 to 8 bits)
    is rebuilt from that storage, so it is not what is counted."""
    return stored_bytes(model)


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
    repeats: int = LATENCY_REPEATS,
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


def deployed_latency(
    model: nn.Module,
    in_shape,
    *,
    runtime: str = "onnxruntime",
    calibration: torch.Tensor | None = None,
    batch_size: int = 64,
    repeats: int = LATENCY_REPEATS,
    threads: int = 1,
    source=None,
) -> float:
    """Median milliseconds of one batch of `batch_size` through `model` as `runtime` runs it
    (`trainers.deploy.RUNTIMES`): for `onnxruntime`, the graph of `deploy.runtime_graph` (int8
    for a quantized model, its activations calibrated on `calibration`, `(n, *in_shape)`) in
    one ONNX Runtime session on the CPU; for `torch`, `deploy.float_copy(model)` on the model's
    device. `source(model, in_shape, *, batch_size, repeats, threads, onnx)` measures elsewhere
    (a device server), given the float copy and, for `onnxruntime`, the graph's bytes (else
    None). Raises `deploy.DeployError` when the runtime cannot export the model."""
    deploy.check_runtime(runtime)
    runnable = deploy.float_copy(model)
    graph = None
    if runtime == "onnxruntime":
        graph = deploy.runtime_graph(model, in_shape, calibration=calibration)
    timing = {"batch_size": batch_size, "repeats": repeats, "threads": threads}
    if source is not None:
        return source(runnable, in_shape, onnx=graph, **timing)
    if graph is None:
        return measure_latency(runnable, in_shape, **timing)
    return deploy.onnx_latency(graph, in_shape, **timing)


def measure(
    model: nn.Module,
    example: torch.Tensor,
    *,
    runtime: str = "onnxruntime",
    batch_size: int = 64,
    repeats: int = LATENCY_REPEATS,
    threads: int = 1,
    source=None,
    strict: bool = True,
) -> dict:
    """The costs of `model` as deployed, for a batch `example` of shape `(n, *in_shape)`:
    `params`, `macs` (one sample), `size_bytes` (as `trainers.store` stores it: quantized
    weights packed), `peak_mem_bytes` (activation RAM of one sample; left out when `torch.fx`
    cannot trace the model) and `latency_ms` (`deployed_latency`: median of `repeats` batches
    of `batch_size` on `runtime`, `trainers.deploy.RUNTIMES`; int8 kernels for a quantized
    model, activations calibrated on `example`). `source` measures latency elsewhere, e.g.
    `cluster.remote.device.RemoteLatency("host:port")`, a device server
    (`CostSettings.timing()` gives these keywords from a trial's settings). The model is left in
    the mode it was in. A `trainers.deploy.DeployError` says why the runtime cannot run it;
    with `strict` False any latency failure gives `latency_ms` None and the reason as `error`."""
    in_shape = tuple(example.shape[1:])
    costs = {
        "params": count_params(model),
        "macs": count_macs(model, in_shape),
        "size_bytes": size_bytes(model),
    }
    with suppress(ValueError):  # not traceable: the other costs stand
        costs["peak_mem_bytes"] = peak_mem_bytes(model, in_shape)
    timing = {"batch_size": batch_size, "repeats": repeats, "threads": threads}
    try:
        costs["latency_ms"] = deployed_latency(
            model, in_shape, runtime=runtime, calibration=example, source=source, **timing
        )
    except Exception as error:  # a device server lost, a model the runtime cannot export
        if strict:
            raise
        costs["latency_ms"] = None
        costs["error"] = f"latency not measured: {type(error).__name__}: {error}"
    return costs
