"""A trial's model for the device, exactly as its costs were measured (`paretune export`).

Formats (`FORMATS`), and what each carries:

- `onnx` (`.onnx`): the graph ONNX Runtime ran when the trial's latency was measured
  (`trainers.deploy.runtime_graph`): pruned channels gone; a model quantized with activations
  of at most 8 bits as an integer graph (`QLinearConv`, `QGemm`, `QLinearAdd`: int8 weights,
  uint8 activations calibrated on the same training images as in the trial), any other model
  as a float graph (quantized weights at their dequantized values, activations in float).
- `torchscript` (`.pt`): the PyTorch model whose accuracy the trial reported, traced: pruned
  channels gone, weights at their quantized values (stored as float32), activation
  quantization simulated in float (fake quantization). It runs on float kernels, as
  `deploy: torch` times it, so it is not smaller than a float model. TorchScript is deprecated
  in torch 2.13 but still loads (`torch.jit.load`), without pickle.

Both take float32 input `(batch, *in_shape)`, normalized as the study's dataset is
(`(x - mean) / std`), and return logits `(batch, classes)`; `meta` (the input's shape and
normalization, the trial's measured metrics) goes into the ONNX model's `metadata_props` (keys
`paretune.<name>`, JSON values) or the TorchScript archive's extra file `paretune.json`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from trainers import deploy, quantize

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript"}


def config_key(config: Mapping) -> str:
    """A name for a config that survives the trip through Parquet: keys sorted, inactive
    (None) values left out, every number as a float (an int column may come back as float)."""

    def plain(value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        return float(value)

    items = {k: plain(v) for k, v in sorted(config.items()) if v is not None}
    text = json.dumps(items, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def model_file(folder: str | Path, config: Mapping) -> Path:
    """Where a study keeps the final model (`trainers.store` format) of the trial that ran
    `config`: `folder/<config_key>.npz`."""
    return Path(folder) / f"{config_key(config)}.npz"


def format_of(out: str | Path, fmt: str | None = None) -> str:
    """The format to write: `fmt` when given, else the one `out`'s suffix names. Raises
    `ValueError` naming the allowed formats and suffixes."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r} is not allowed; allowed: {sorted(FORMATS)}")
        return fmt
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot tell the format of {str(out)!r} from its suffix {suffix or '(none)'!r}: "
            f"name it .onnx or .pt, or give --format ({', '.join(FORMATS)})"
        )
    return SUFFIXES[suffix]


def carries(model: nn.Module, fmt: str) -> str:
    """What an export of `model` in `fmt` holds, in words."""
    if fmt == "torchscript":
        quantized = getattr(model, "quant_spec", None) is not None
        simulated = ", quantized weights and activations simulated in float" if quantized else ""
        return f"TorchScript of the PyTorch model as evaluated (float kernels{simulated})"
    if deploy.kernels(model) == "int8":
        return "ONNX integer graph as ONNX Runtime ran it (int8 weights, uint8 activations)"
    return "ONNX float graph as ONNX Runtime ran it"


def export_model(
    model: nn.Module,
    in_shape,
    out: str | Path,
    *,
    fmt: str,
    calibration: torch.Tensor | None = None,
    meta: Mapping | None = None,
) -> int:
    """Write `model` (eval mode, CPU) to `out` in `fmt`, with `meta` (see the module's
    docstring); an int8 ONNX graph calibrates its activations on `calibration`
    (`(n, *in_shape)`, the trial's own images). Returns the file's bytes. Raises
    `deploy.DeployError` when the model cannot be exported, `ValueError` on a bad format."""
    format_of(out, fmt)
    out = Path(out)
    model = model.eval().cpu()
    if fmt == "onnx":
        if deploy.kernels(model) != "int8":
            calibration = None
        graph = deploy.runtime_graph(model, in_shape, calibration=calibration)
        out.write_bytes(_with_metadata(graph, meta or {}))
    else:
        example = torch.zeros(1, *in_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated in torch 2.13; ranges are constants
            traced = torch.jit.trace(traceable(model), example, check_trace=False)
            torch.jit.save(traced, str(out), _extra_files={"paretune.json": json.dumps(meta or {})})
    return out.stat().st_size


def _with_metadata(graph: bytes, meta: Mapping) -> bytes:
    """The serialized ONNX `graph` with `meta` in its `metadata_props`; the graph unchanged."""
    if not meta:
        return graph
    import onnx

    model = onnx.load_from_string(graph)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = f"paretune.{key}", json.dumps(value)
    return model.SerializeToString()


class _TracedActQuantizer:
    """`quantize.ActQuantizer`'s arithmetic at its calibrated range, without the autograd
    function (straight-through gradient) that tracing cannot record."""

    def __init__(self, hook: quantize.ActQuantizer):
        self.spec, self.lo, self.hi = hook.spec, hook.lo, hook.hi

    def __call__(self, module, inputs):
        (x,) = inputs
        offset, step = quantize.quant_params(x, self.spec, lo=self.lo, hi=self.hi)
        offset, step = offset.to(x.dtype), step.to(x.dtype)
        codes = quantize.encode(x, self.spec, offset, step)
        return (quantize.decode(codes, self.spec, offset, step),)


def traceable(model: nn.Module) -> nn.Module:
    """A copy of `model` whose activation quantizers `torch.jit.trace` can record."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        hooks = module._forward_pre_hooks
        for key, hook in list(hooks.items()):
            if isinstance(hook, quantize.ActQuantizer):
                hooks[key] = _TracedActQuantizer(hook)
    return twin
