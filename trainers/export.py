"""A trial's model for the device, exactly as its costs were measured (`paretune export`).

Formats (`FORMATS`), and what each carries:

- `onnx` (`.onnx`): the file the trial timed, scored and sized, bit for bit
  (`trainers.deploy.runtime_graph`; its row's `deploy` record holds its bytes and sha256):
  pruned channels gone, quantized weights as their codes, activations quantized at the ranges
  the model was trained or calibrated with (QDQ), any other model a float graph.
- `torchscript` (`.pt`): the PyTorch model whose accuracy the trial reported as `torch_val_acc`
  and `torch_test_acc`, traced: pruned channels gone, weights at their quantized values (stored
  as float32), activation quantization simulated in float (fake quantization). It runs on
  float kernels, as `deploy: torch` times it, so it is not smaller than a float model.
  TorchScript is deprecated in torch 2.13 but still loads (`torch.jit.load`), without pickle.

Both take float32 input `(batch, *in_shape)`, normalized as the study's dataset is
(`(x - mean) / std`), and return logits `(batch, classes)`; `meta` (the input's shape and
normalization, the trial's measured metrics) goes into a JSON file beside the ONNX file
(`<out>.json`: the ONNX file stays the one that was measured) or the TorchScript archive's
extra file `paretune.json`.
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
    if getattr(model, "quant_spec", None) is None:
        return "ONNX float graph as ONNX Runtime ran it"
    activations = "QDQ at their own ranges" if deploy.kernels(model) == "int8" else "in float"
    return f"ONNX graph as ONNX Runtime ran it (weights as their codes, activations {activations})"


def export_model(
    model: nn.Module, in_shape, out: str | Path, *, fmt: str, meta: Mapping | None = None
) -> int:
    """Write `model` (eval mode, CPU) to `out` in `fmt`, with `meta` (see the module's
    docstring). Returns the file's bytes. Raises `deploy.DeployError` when the model cannot be
    exported, `ValueError` on a bad format."""
    format_of(out, fmt)
    out = Path(out)
    model = model.eval().cpu()
    if fmt == "onnx":
        out.write_bytes(deploy.runtime_graph(model, in_shape))
        Path(f"{out}.json").write_text(json.dumps(meta or {}, indent=1))
    else:
        example = torch.zeros(1, *in_shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated in torch 2.13; ranges are constants
            traced = torch.jit.trace(traceable(model), example, check_trace=False)
            torch.jit.save(traced, str(out), _extra_files={"paretune.json": json.dumps(meta or {})})
    return out.stat().st_size


class _TracedActQuantizer:
    """`quantize.ActQuantizer`'s arithmetic at its calibrated range, without the autograd
    function (straight-through gradient) that tracing cannot record."""

    def __init__(self, hook: quantize.ActQuantizer):
        self.spec, self.lo, self.hi, self.index = hook.spec, hook.lo, hook.hi, hook.index

    def __call__(self, module, inputs):
        x = inputs[self.index]
        offset, step = quantize.quant_params(x, self.spec, lo=self.lo, hi=self.hi)
        offset, step = offset.to(x.dtype), step.to(x.dtype)
        codes = quantize.encode(x, self.spec, offset, step)
        x = quantize.decode(codes, self.spec, offset, step)
        return (*inputs[: self.index], x, *inputs[self.index + 1 :])


def traceable(model: nn.Module) -> nn.Module:
    """A copy of `model` whose activation quantizers `torch.jit.trace` can record."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        hooks = module._forward_pre_hooks
        for key, hook in list(hooks.items()):
            if isinstance(hook, quantize.ActQuantizer):
                hooks[key] = _TracedActQuantizer(hook)
    return twin
