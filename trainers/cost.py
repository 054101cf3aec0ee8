"""What a model costs: parameters, multiply-accumulates, the deployed file's bytes and
paretune's packed ones, peak activation memory, latency measured as the model's runtime runs it
(`trainers.deploy`); `measure` gives them all, `deployed` with the accuracy of the deployed
graph."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
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


def packed_bytes(model: nn.Module) -> int:
    """Bytes paretune's own storage takes (`trainers.store.stored_bytes`): quantized weights
    packed at their bit width plus one float32 `(offset, step)` pair per tensor or channel, a
    float32 range per quantized activation, every other parameter and buffer float32. The
    row's `packed_bytes`; `size_bytes` is the deployed file's (`measure`)."""
    return stored_bytes(model)


def size_bytes(model: nn.Module, in_shape, *, runtime: str = "onnxruntime") -> int:
    """The deployed file's bytes (`measure`'s `size_bytes`): the ONNX file of
    `deploy.runtime_graph` on `onnxruntime`, `packed_bytes` on `torch`."""
    deploy.check_runtime(runtime)
    if runtime == "torch":
        return packed_bytes(model)
    return len(deploy.runtime_graph(model, in_shape))


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
    batch_size: int = 64,
    repeats: int = LATENCY_REPEATS,
    threads: int = 1,
    source=None,
) -> float:
    """Median milliseconds of one batch of `batch_size` through `model` as `runtime` runs it
    (`trainers.deploy.RUNTIMES`): for `onnxruntime`, the graph of `deploy.runtime_graph` in one
    ONNX Runtime session on the CPU; for `torch`, `deploy.float_copy(model)` on the model's
    device. `source(model, in_shape, *, batch_size, repeats, threads, onnx)` measures elsewhere
    (a device server), given the float copy and, for `onnxruntime`, the graph's bytes (else
    None). Raises `deploy.DeployError` when the runtime cannot export the model."""
    deploy.check_runtime(runtime)
    graph = deploy.runtime_graph(model, in_shape) if runtime == "onnxruntime" else None
    timing = {"batch_size": batch_size, "repeats": repeats, "threads": threads}
    return _latency(model, graph, in_shape, source=source, **timing)[0]


def _latency(model, graph: bytes | None, in_shape, *, source, threads: int, **timing):
    """`(ms, session)`: `deployed_latency` of `model` whose runtime graph is `graph` (None on
    `torch`), and the ONNX Runtime session that timed it (None when none did)."""
    if source is not None:
        return source(
            deploy.float_copy(model), in_shape, onnx=graph, threads=threads, **timing
        ), None
    if graph is None:
        return measure_latency(deploy.float_copy(model), in_shape, threads=threads, **timing), None
    run = deploy.session(graph, threads)
    return deploy.session_latency(run, in_shape, **timing), run


def deployed(
    model: nn.Module,
    example: torch.Tensor,
    *,
    runtime: str = "onnxruntime",
    batch_size: int = 64,
    repeats: int = LATENCY_REPEATS,
    threads: int = 1,
    source=None,
    strict: bool = True,
    splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[dict, bytes | None]:
    """`(metrics, graph)`: `measure`'s costs of `model`, each split of `splits` (`{"val": (x,
    y)}`) scored on the deployed graph as `<split>_acc` in the very ONNX Runtime session that
    was timed (a new one when a `source` timed it elsewhere) with `score_seconds` the scoring
    took, and the graph's bytes (None on `torch`, whose model is `model` itself: it scores
    nothing here)."""
    in_shape = tuple(example.shape[1:])
    costs = {
        "params": count_params(model),
        "macs": count_macs(model, in_shape),
        "packed_bytes": packed_bytes(model),
    }
    with suppress(ValueError):  # not traceable: the other costs stand
        costs["peak_mem_bytes"] = peak_mem_bytes(model, in_shape)
    deploy.check_runtime(runtime)
    graph = None
    try:
        if runtime == "onnxruntime":
            graph = deploy.runtime_graph(model, in_shape)
        costs["size_bytes"] = costs["packed_bytes"] if graph is None else len(graph)
        timing = {"batch_size": batch_size, "repeats": repeats, "threads": threads}
        costs["latency_ms"], run = _latency(model, graph, in_shape, source=source, **timing)
    except Exception as error:  # a device server lost, a model the runtime cannot export
        if strict:
            raise
        costs.setdefault("size_bytes", None)
        costs["latency_ms"] = None
        costs["error"] = f"latency not measured: {type(error).__name__}: {error}"
        return costs, graph
    if graph is not None and splits:
        costs.update(scores(run or deploy.session(graph, threads), splits))
    return costs, graph


def scores(run, splits: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """`<split>_acc` of the ONNX Runtime session `run` on each split, and `score_seconds`."""
    started = time.perf_counter()
    accuracies = {f"{name}_acc": deploy.accuracy(run, x, y) for name, (x, y) in splits.items()}
    return {**accuracies, "score_seconds": time.perf_counter() - started}


def measure(model: nn.Module, example: torch.Tensor, **timing) -> dict:
    """The costs of `model` as deployed, for a batch `example` of shape `(n, *in_shape)`:
    `params`, `macs` (one sample), `size_bytes` (the deployed file's bytes: the ONNX file of
    `trainers.deploy.runtime_graph` on `onnxruntime`, the stored model on `torch`),
    `packed_bytes` (paretune's packed storage, `packed_bytes`), `peak_mem_bytes` (activation
    RAM of one sample; left out when `torch.fx` cannot trace the model) and `latency_ms`
    (`deployed_latency`: median of `repeats` batches of `batch_size` on `runtime`,
    `trainers.deploy.RUNTIMES`). Keywords: `runtime`, `batch_size`, `repeats`, `threads`,
    `source` (measures latency elsewhere, e.g. `cluster.remote.device.RemoteLatency(
    "host:port")`, a device server; `CostSettings.timing()` gives these from a trial's
    settings) and `strict`. The model is left in the mode it was in. A
    `trainers.deploy.DeployError` says why the runtime cannot run it; with `strict` False any
    latency failure gives `latency_ms` (and, unexported, `size_bytes`) None and the reason as
    `error`. `example` is the shape only: the deployed graph carries the model's own
    activation ranges."""
    return deployed(model, example, **timing)[0]
