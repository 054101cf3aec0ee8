"""Models as a runtime runs them (`RUNTIMES`, a study's `deploy` key).

`onnxruntime`: the model exported to ONNX (`runtime_graph`: the file that ships, its weights as
their codes and its activations at the ranges it was trained or calibrated with, see
`trainers.deploy_graph`) and run by ONNX Runtime on the CPU; a model with activations of at most
8 bits carries them as QDQ pairs, which ONNX Runtime runs on integer kernels where a layer's
input and output are both quantized. Every weight scheme deploys at its own levels (log,
binary and 2 to 16 bits included) and takes a byte a weight in the file (two above 8 bits).
`torch`: eager PyTorch, float kernels for every model (its int8 convolutions need
`torch.compile`); its model is the PyTorch model itself.
"""

from __future__ import annotations

import copy
import logging
import re
import statistics
import time
import warnings
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import torch
from torch import nn

from trainers import quantize
from trainers.settings import LATENCY_REPEATS
from trainers.settings import RUNTIMES as RUNTIMES
from trainers.settings import check_runtime as check_runtime


class DeployError(ValueError):
    """The runtime cannot run the model; the message gives the exporter's reason."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        message = "runtime onnxruntime needs `pip install onnxruntime`, or set `deploy: torch`"
        raise ValueError(message) from error
    return onnxruntime


def _fake_quantizers(module: nn.Module) -> dict:
    return {
        key: hook
        for key, hook in module._forward_pre_hooks.items()
        if isinstance(hook, quantize.ActQuantizer)
    }


def activation_bits(model: nn.Module) -> int:
    """The narrowest activation quantizer's bits; 32 when none is hooked."""
    bits = [h.spec.bits for m in model.modules() for h in _fake_quantizers(m).values()]
    return min(bits, default=32)


def kernels(model: nn.Module) -> str:
    """What ONNX Runtime runs `model` as: `"int8"` when it is quantized (`quantize.prepare`)
    with activations of at most 8 bits, else `"fp32"`."""
    quantized = getattr(model, "quant_spec", None) is not None
    return "int8" if quantized and activation_bits(model) <= 8 else "fp32"


def float_copy(model: nn.Module) -> nn.Module:
    """A copy in eval mode without the activation fake-quantizers, batch norms at torch's
    default momentum: what the exporter is given (`runtime_graph` adds the quantizers)."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        for key in _fake_quantizers(module):
            del module._forward_pre_hooks[key]
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1  # training-only, yet exported: one file whatever it was
    return twin


def _reason(error: Exception) -> str:
    """The exporter's reason in a line: the summary of a torch.export-based failure, the message
    of a TorchScript-based one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    text = text.partition("## Exception summary")[2] or text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"


def _export(model: nn.Module, example: torch.Tensor, path: Path, *, dynamo: bool) -> None:
    """`model` as ONNX at `path`, batch dimension dynamic, by the TorchScript-based exporter or
    (`dynamo`) the torch.export-based one."""
    if dynamo:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        batch = {"dynamic_shapes": ({0: torch.export.Dim("batch")},), "external_data": False}
    else:
        names = {"input_names": ["input"], "output_names": ["output"]}
        batch = names | {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo, verbose=False, **batch)


def export_onnx(model: nn.Module, in_shape, path: str | Path, *, batch_size: int = 64) -> Path:
    """The float model as ONNX with a dynamic batch dimension. The TorchScript-based exporter
    first (0.15 to 0.5 s for the default chain on these cores, where the torch.export-based one
    takes 2.5 to 7 s: a trial exports once, twice with a cost check), the torch.export-based
    one when it fails or torch has dropped it. Raises `DeployError` with both exporters'
    reasons when neither can export the model."""
    path = Path(path)
    model = model.eval().cpu()
    example = torch.randn(batch_size, *in_shape)
    reasons = []
    with torch.no_grad():
        for dynamo in (False, True):
            try:
                _export(model, example, path, dynamo=dynamo)
                return path
            except Exception as error:  # exporters raise many types for an unsupported model
                reasons.append(_reason(error))
    raise DeployError(f"the model cannot be exported to ONNX: {'; then '.join(reasons)}")


def runtime_graph(model: nn.Module, in_shape) -> bytes:
    """The ONNX file ONNX Runtime runs for `model` (see the module's docstring), serialized:
    the same bytes for the same model, and the same size for any model of its architecture and
    compression, trained or not. Raises `DeployError` when the model cannot be exported."""
    import onnx

    from trainers import deploy_graph

    with TemporaryDirectory() as folder:
        path = export_onnx(float_copy(model), in_shape, Path(folder) / "model.onnx")
        graph = onnx.load(str(path))
    deploy_graph.canonical(graph)
    if getattr(model, "quant_spec", None) is not None:
        try:
            deploy_graph.quantize_graph(graph, model, integer=kernels(model) == "int8")
        except deploy_graph.GraphError as error:
            raise DeployError(f"the quantized model cannot be deployed: {error}") from error
    return graph.SerializeToString()


def session(model: str | Path | bytes, threads: int = 1):
    """An ONNX Runtime CPU session with `threads` intra- and inter-op threads."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def session_latency(
    run, in_shape, *, batch_size: int = 64, repeats: int = LATENCY_REPEATS, warmup: int = 5
) -> float:
    """Median milliseconds of one batch through the ONNX Runtime session `run`, after `warmup`
    runs."""
    batch = np.random.default_rng(0).standard_normal((batch_size, *in_shape), dtype=np.float32)
    feed = {run.get_inputs()[0].name: batch}
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        run.run(None, feed)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def onnx_latency(
    model: str | Path | bytes,
    in_shape,
    *,
    batch_size: int = 64,
    repeats: int = LATENCY_REPEATS,
    warmup: int = 5,
    threads: int = 1,
) -> float:
    """`session_latency` in a new session of `model` (a path or the graph's bytes) with
    `threads` threads."""
    timing = {"batch_size": batch_size, "repeats": repeats, "warmup": warmup}
    return session_latency(session(model, threads), in_shape, **timing)


def predictions(run, x: torch.Tensor, *, batch: int = 1024) -> np.ndarray:
    """The classes the ONNX Runtime session `run` predicts for `x`, `(n,)`."""
    name = run.get_inputs()[0].name
    chunks = torch.split(x.detach().float().cpu(), batch)
    return np.concatenate([run.run(None, {name: c.numpy()})[0].argmax(1) for c in chunks])


def accuracy(run, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in percent of the ONNX Runtime session `run` (`evaluate`'s rounding)."""
    hits = int((predictions(run, x) == y.cpu().numpy()).sum())
    return 100.0 * hits / len(y)


def onnx_accuracy(model: str | Path | bytes, x: torch.Tensor, y: torch.Tensor) -> float:
    """`accuracy` of an ONNX model (a path or the graph's bytes)."""
    return accuracy(session(model), x, y)
