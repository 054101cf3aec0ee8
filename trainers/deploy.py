"""The int8 path with a real CPU speed-up: export to ONNX, quantize statically with ONNX Runtime
(int8 weights per channel, uint8 activations calibrated on real batches), run with its int8
kernels. Needs the `deploy` extra (onnx, onnxscript, onnxruntime)."""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        message = "the int8 path needs onnxruntime: pip install 'paretune[deploy]'"
        raise ValueError(message) from error
    return onnxruntime


def export_onnx(model: nn.Module, in_shape, path: str | Path, *, batch_size: int = 64) -> Path:
    """The float model as ONNX with a dynamic batch dimension."""
    path = Path(path)
    model = model.eval().cpu()
    example = (torch.randn(batch_size, *in_shape),)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def quantize_int8(onnx_path: str | Path, calibration: torch.Tensor, path: str | Path) -> Path:
    """Static int8 quantization of an exported model (QOperator format, per-channel weights)."""
    _onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = _input_name(onnx_path)
    chunks = torch.split(calibration.cpu(), 64)
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
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    prepared.unlink()
    return path


def _session(path, threads: int = 1):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _input_name(path) -> str:
    return _session(path).get_inputs()[0].name


def onnx_latency(
    path, in_shape, *, batch_size: int = 64, repeats: int = 30, warmup: int = 5, threads: int = 1
) -> float:
    """Median milliseconds of one batch through ONNX Runtime on the CPU."""
    session = _session(path, threads)
    feed = {session.get_inputs()[0].name: np.random.randn(batch_size, *in_shape).astype(np.float32)}
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        session.run(None, feed)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def onnx_accuracy(path, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy in percent of an ONNX model."""
    session = _session(path)
    logits = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})[0]
    return 100.0 * float((logits.argmax(1) == y.cpu().numpy()).mean())
