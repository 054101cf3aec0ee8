"""Models as a runtime runs them (`RUNTIMES`, a study's `deploy` key).

`onnxruntime`: the model exported to ONNX and run by ONNX Runtime on the CPU. A model quantized
with activations of at most 8 bits runs as an integer graph: ONNX Runtime static quantization
(QOperator format: `QLinearConv`, `QGemm`, `QLinearAdd`), int8 weights (per channel when the
model's are), uint8 activations calibrated on real batches. ONNX Runtime has no narrower CPU
kernels, so 2 to 6 bit weights and 4-bit activations run as 8-bit; it has no 16-bit or
weight-only integer convolutions, so a model with 16- or 32-bit activations runs as a float graph
of its quantized weights. `torch`: eager PyTorch, float kernels for every model (its int8
convolutions need `torch.compile`).
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
    """A copy in eval mode without the activation fake-quantizers: what a runtime is given (it
    quantizes activations itself, or runs them in float)."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        for key in _fake_quantizers(module):
            del module._forward_pre_hooks[key]
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


def quantize_int8(
    onnx_path: str | Path, calibration: torch.Tensor, path: str | Path, *, per_channel=True
) -> Path:
    """Static int8 quantization of an exported model (QOperator format, int8 weights per
    channel or per tensor, uint8 activations calibrated on `calibration`, `(n, *in_shape)`)."""
    _onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = _session(onnx_path).get_inputs()[0].name
    chunks = torch.split(calibration.detach().float().cpu(), 64)
    batches = [{name: chunk.numpy()} for chunk in chunks]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    path = Path(path)
    prepared = path.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(prepared))
    quantize_static(
        str(prepared),
        str(path),
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    prepared.unlink()
    return path


def runtime_graph(model: nn.Module, in_shape, *, calibration: torch.Tensor | None) -> bytes:
    """The ONNX graph ONNX Runtime runs for `model` (see the module's docstring), serialized.
    `calibration` (`(n, *in_shape)`) calibrates the activations of an int8 graph; a float graph
    needs none. Raises `DeployError` when the model cannot be exported."""
    with TemporaryDirectory() as folder:
        path = export_onnx(float_copy(model), in_shape, Path(folder) / "model.onnx")
        if kernels(model) == "int8":
            if calibration is None:
                raise ValueError("an int8 graph needs calibration inputs")
            per_channel = model.quant_spec.per_channel
            target = Path(folder) / "int8.onnx"
            path = quantize_int8(path, calibration, target, per_channel=per_channel)
        return path.read_bytes()


def _session(model: str | Path | bytes, threads: int = 1):
    """An ONNX Runtime CPU session with `threads` intra- and inter-op threads."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_latency(
    model: str | Path | bytes,
    in_shape,
    *,
    batch_size: int = 64,
    repeats: int = LATENCY_REPEATS,
    warmup: int = 5,
    threads: int = 1,
) -> float:
    """Median milliseconds of one batch through ONNX Runtime on the CPU, after `warmup` runs, in
    one session with `threads` threads; `model` is a path or the graph's bytes."""
    session = _session(model, threads)
    batch = np.random.default_rng(0).standard_normal((batch_size, *in_shape), dtype=np.float32)
    feed = {session.get_inputs()[0].name: batch}
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def onnx_accuracy(model: str | Path | bytes, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in percent of an ONNX model."""
    session = _session(model)
    logits = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0]
    return 100.0 * float((logits.argmax(1) == y.cpu().numpy()).mean())
