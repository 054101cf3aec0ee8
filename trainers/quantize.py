"""Tensor quantization: linear (asymmetric and symmetric) and logarithmic codes, 2 to 16 bits,
per tensor or per output channel; weights and activations; post-training (calibrated) or
quantization-aware (fake quantization with a straight-through estimator); bit-packed storage.

Every code decodes as `offset + code * step` (linear) or `sign * scale * 2**-(level - 1)`
(log), with one `(offset, step)` or `(scale, 0)` pair per tensor or channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

SCHEMES = ("linear", "symmetric", "log")
RANGES = ("minmax", "percentile")


@dataclass(frozen=True)
class QuantSpec:
    """`bits` in 2..16; `scheme` one of `SCHEMES`; `per_channel` along dim 0."""

    bits: int
    scheme: str = "linear"
    per_channel: bool = False

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 16:
            raise ValueError(f"quantization bits {self.bits!r}: allowed 2 to 16")
        if self.scheme not in SCHEMES:
            raise ValueError(f"quantization scheme {self.scheme!r}: allowed {list(SCHEMES)}")


def _reduce(x: torch.Tensor, per_channel: bool, op) -> torch.Tensor:
    if per_channel and x.dim() > 1:
        return op(x.detach().flatten(1), 1).view(-1, *([1] * (x.dim() - 1)))
    return op(x.detach().flatten(), 0)


def quant_params(x: torch.Tensor, spec: QuantSpec, *, lo=None, hi=None):
    """`(offset, step)` for linear schemes, `(scale, 0)` for log; `lo`/`hi` override the range."""
    lo = _reduce(x, spec.per_channel, torch.amin) if lo is None else torch.as_tensor(lo)
    hi = _reduce(x, spec.per_channel, torch.amax) if hi is None else torch.as_tensor(hi)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    if spec.scheme == "linear":
        step = (hi - lo) / (2**spec.bits - 1)
        return lo, torch.where(step > 0, step, torch.ones_like(step))
    bound = torch.maximum(lo.abs(), hi.abs())
    if spec.scheme == "log":
        return bound, torch.zeros_like(bound)
    half = 2 ** (spec.bits - 1) - 1
    step = torch.where(bound > 0, bound / half, torch.ones_like(bound))
    return -half * step, step


def encode(x: torch.Tensor, spec: QuantSpec, offset, step) -> torch.Tensor:
    """Codes in `[0, 2**bits)`: linear `clamp(round((x - offset) / step), 0, 2**b - 1)`; log a
    sign bit over a level, level 0 being zero and level k the magnitude `scale * 2**-(k-1)`."""
    if spec.scheme != "log":
        top = 2**spec.bits - 1 if spec.scheme == "linear" else 2**spec.bits - 2
        return torch.clamp(torch.round((x - offset) / step), 0, top).to(torch.int64)
    levels = 2 ** (spec.bits - 1) - 1
    scale = offset
    magnitude = x.abs()
    exponent = torch.round(torch.log2(scale / magnitude.clamp_min(1e-30)))
    level = torch.clamp(exponent, 0, levels - 1) + 1
    smallest = scale * 2.0 ** -(levels - 1)
    level = torch.where(magnitude < smallest / 2, torch.zeros_like(level), level)
    sign = (x < 0).to(torch.int64) << (spec.bits - 1)
    return level.to(torch.int64) | sign


def decode(codes: torch.Tensor, spec: QuantSpec, offset, step) -> torch.Tensor:
    if spec.scheme != "log":
        return offset + codes.to(step.dtype) * step
    half = 1 << (spec.bits - 1)
    level = (codes % half).to(offset.dtype)
    sign = 1.0 - 2.0 * (codes >= half).to(offset.dtype)
    magnitude = torch.where(level > 0, offset * torch.exp2(1.0 - level), torch.zeros_like(level))
    return sign * magnitude


class _RoundThrough(torch.autograd.Function):
    """Forward: the quantized value; backward: the gradient passes straight through."""

    @staticmethod
    def forward(ctx, x, spec, offset, step):
        return decode(encode(x, spec, offset, step), spec, offset, step)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


def fake_quantize(x: torch.Tensor, spec: QuantSpec, *, lo=None, hi=None) -> torch.Tensor:
    """Quantize and decode, differentiable by the straight-through estimator."""
    offset, step = quant_params(x, spec, lo=lo, hi=hi)
    return _RoundThrough.apply(x, spec, offset.to(x.dtype), step.to(x.dtype))


def pack(codes: np.ndarray | torch.Tensor, bits: int) -> np.ndarray:
    """Codes `< 2**bits` as a little-endian bit stream: `ceil(n * bits / 8)` bytes (two 4-bit
    codes per byte, the first in the low nibble)."""
    codes = np.asarray(codes, dtype=np.uint32).reshape(-1)
    planes = (codes[:, None] >> np.arange(bits, dtype=np.uint32)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little")


def unpack(buffer: np.ndarray, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(buffer, count=count * bits, bitorder="little").reshape(count, bits)
    return (planes.astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(1)


def packed_bytes(count: int, bits: int) -> int:
    return math.ceil(count * bits / 8)


def fuse_batchnorm(model: nn.Module) -> list[str]:
    """Fold every batch norm that directly follows a conv in an `nn.Sequential` into the conv
    (weight scaled per filter, a bias added); the norm becomes `nn.Identity`. Returns the convs."""
    fused = []
    for path, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                setattr(seq, bn_name, nn.Identity())
                fused.append(f"{path}.{name}" if path else name)
    return fused


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)


class WeightQuantizer(nn.Module):
    """A parametrization: the weight the layer uses is the fake-quantized stored one."""

    def __init__(self, spec: QuantSpec):
        super().__init__()
        self.spec = spec

    def forward(self, weight):
        return fake_quantize(weight, self.spec)


class ActQuantizer:
    """A forward pre-hook quantizing a layer's input (linear, per tensor). While `observing`, it
    records the range of what passes (min/max, or the mean of per-batch percentiles)."""

    def __init__(self, bits: int, *, method: str = "minmax", percentile: float = 99.99):
        if method not in RANGES:
            raise ValueError(f"activation range {method!r}: allowed {list(RANGES)}")
        self.spec = QuantSpec(bits)
        self.method, self.percentile = method, percentile
        self.observing, self.lows, self.highs = True, [], []
        self.lo = self.hi = None

    def __call__(self, module, inputs):
        (x,) = inputs
        if self.observing:
            self._observe(x.detach().float())
            return None
        return (fake_quantize(x, self.spec, lo=self.lo, hi=self.hi),)

    def _observe(self, x):
        flat = x.flatten()
        if self.method == "minmax":
            self.lows.append(flat.min().item())
            self.highs.append(flat.max().item())
        else:
            sample = flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(0))]
            sample = sample[:100_000].cpu()
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
            lo, hi = torch.quantile(sample, q).tolist()
            self.lows.append(lo)
            self.highs.append(hi)

    def freeze(self):
        agg = min if self.method == "minmax" else (lambda v: sum(v) / len(v))
        self.lo, self.hi = agg(self.lows), (max if self.method == "minmax" else agg)(self.highs)
        self.observing = False


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def prepare(
    model: nn.Module, spec: QuantSpec, *, act_bits: int = 32, act_range: str = "minmax"
) -> dict[str, ActQuantizer]:
    """Fuse batch norms, fake-quantize every conv and linear weight, and hook an activation
    quantizer (observing) on their inputs when `act_bits < 32`. Sets `model.quant_spec`."""
    if act_bits != 32 and not 2 <= act_bits <= 16:
        raise ValueError(f"activation bits {act_bits!r}: allowed 2 to 16, or 32 for none")
    fuse_batchnorm(model)
    hooks = {}
    for name, layer in quantized_layers(model).items():
        parametrize.register_parametrization(layer, "weight", WeightQuantizer(spec))
        if act_bits < 32:
            hooks[name] = ActQuantizer(act_bits, method=act_range)
            layer.register_forward_pre_hook(hooks[name])
    model.quant_spec = spec
    return hooks


@torch.no_grad()
def calibrate(model: nn.Module, hooks: dict[str, ActQuantizer], x: torch.Tensor, *, batch=64):
    """Run calibration batches through the model, then freeze the activation ranges."""
    model.eval()
    for i in range(0, len(x), batch):
        model(x[i : i + batch])
    for hook in hooks.values():
        hook.freeze()


def finalize(model: nn.Module, hooks: dict[str, ActQuantizer]) -> dict:
    """Bake the fake-quantized weights in, and return the record: spec, activation ranges and the
    `(offset, step)` of every layer."""
    spec = model.quant_spec
    layers = {}
    for name, layer in quantized_layers(model).items():
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        offset, step = quant_params(layer.weight, spec)
        layers[name] = {"offset": offset.flatten().tolist(), "step": step.flatten().tolist()}
    return {
        "step": "quantize",
        "bits": spec.bits,
        "scheme": spec.scheme,
        "per_channel": spec.per_channel,
        "act_bits": next(iter(hooks.values())).spec.bits if hooks else 32,
        "act_ranges": {n: [h.lo, h.hi] for n, h in hooks.items()},
        "layers": layers,
    }


def weight_codes(model: nn.Module) -> dict[str, np.ndarray]:
    """The packed codes of every quantized weight (after `finalize`)."""
    spec = model.quant_spec
    packed = {}
    for name, layer in quantized_layers(model).items():
        offset, step = quant_params(layer.weight, spec)
        packed[name] = pack(encode(layer.weight.detach(), spec, offset, step).cpu(), spec.bits)
    return packed


def restore(model: nn.Module, record: dict, packed: dict[str, np.ndarray]) -> None:
    """Rebuild a quantized model from its record and packed codes (the model freshly built and
    pruned to the same shapes): fuse, decode the weights, re-hook the activation quantizers."""
    spec = QuantSpec(record["bits"], record["scheme"], record["per_channel"])
    fuse_batchnorm(model)
    for name, layer in quantized_layers(model).items():
        entry = record["layers"][name]
        shape = (-1,) + (1,) * (layer.weight.dim() - 1) if spec.per_channel else ()
        offset = torch.tensor(entry["offset"]).view(shape)
        step = torch.tensor(entry["step"]).view(shape)
        codes = torch.from_numpy(
            unpack(packed[name], spec.bits, layer.weight.numel()).astype(np.int64)
        )
        with torch.no_grad():
            layer.weight.copy_(decode(codes.view(layer.weight.shape), spec, offset, step))
        if name in record["act_ranges"]:
            hook = ActQuantizer(record["act_bits"])
            hook.lo, hook.hi = record["act_ranges"][name]
            hook.observing = False
            layer.register_forward_pre_hook(hook)
    model.quant_spec = spec
