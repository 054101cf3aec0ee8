"""The codes of a tensor: linear (asymmetric and symmetric), logarithmic (2 to 16 bits) and
binary (1 bit), per tensor or per output channel, over a mask's kept values; fake quantization
with a straight-through estimator (`trainers.quantize` applies them to models).

Every code decodes as `offset + code * step` (linear, binary) or `sign * scale * 2**-(level - 1)`
(log), with one `(offset, step)` or `(scale, 0)` pair per tensor or channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCHEMES = ("linear", "symmetric", "log", "binary")


@dataclass(frozen=True)
class QuantSpec:
    """`bits` in 2..16, or 1 with the `binary` scheme; `scheme` one of `SCHEMES`; `per_channel`
    along dim 0. Binary codes decode as `-scale + code * 2 * scale`, i.e. `±scale` with `scale`
    the mean absolute weight (XNOR-Net's per-channel scale when `per_channel`)."""

    bits: int
    scheme: str = "linear"
    per_channel: bool = False

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"quant_scheme {self.scheme!r}: allowed {list(SCHEMES)}")
        binary = self.scheme == "binary"
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise ValueError(f"weight_bits {self.bits!r}: allowed 1 (binary) or 2 to 16")
        if binary and self.bits != 1:
            raise ValueError(f"weight_bits {self.bits!r} with the binary scheme: allowed [1]")
        if not binary and not 2 <= self.bits <= 16:
            raise ValueError(
                f"weight_bits {self.bits!r} with the {self.scheme} scheme: allowed 2 to 16 "
                "(1 is the binary scheme)"
            )


def _reduce(x: torch.Tensor, per_channel: bool, op) -> torch.Tensor:
    if per_channel and x.dim() > 1:
        return op(x.detach().flatten(1), 1).view(-1, *([1] * (x.dim() - 1)))
    return op(x.detach().flatten(), 0)


def _range(x: torch.Tensor, per_channel: bool, mask):
    """`(lo, hi)` over the kept entries (all when `mask` is None); 0 where nothing is kept."""
    if mask is None:
        return _reduce(x, per_channel, torch.amin), _reduce(x, per_channel, torch.amax)
    lo = _reduce(torch.where(mask, x, torch.inf), per_channel, torch.amin)
    hi = _reduce(torch.where(mask, x, -torch.inf), per_channel, torch.amax)
    empty = lo > hi
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _binary_params(x: torch.Tensor, per_channel: bool, mask):
    magnitude = x.detach().abs() if mask is None else x.detach().abs() * mask
    kept = torch.ones_like(magnitude) if mask is None else mask.to(magnitude.dtype)
    scale = _reduce(magnitude, per_channel, torch.sum) / _reduce(kept, per_channel, torch.sum)
    scale = torch.nan_to_num(scale, nan=0.0)  # a channel with nothing kept
    return -scale, 2 * scale


def quant_params(x: torch.Tensor, spec: QuantSpec, *, lo=None, hi=None, mask=None):
    """`(offset, step)` for linear schemes (`offset = -zero_point * step` with a whole zero
    point in `[0, 2**bits)`, the range `[min(lo, 0), max(hi, 0)]`, as ONNX's
    `QuantizeLinear` takes it), `(scale, 0)` for log, `(-scale, 2 * scale)` for
    binary; `lo`/`hi` override the range; `mask` (bool, `x`'s shape) limits it to kept entries."""
    if spec.scheme == "binary":
        return _binary_params(x, spec.per_channel, mask)
    if lo is None or hi is None:
        low, high = _range(x, spec.per_channel, mask)
        lo, hi = low if lo is None else lo, high if hi is None else hi
    lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    if spec.scheme == "linear":  # the range widened to hold 0, at a whole zero point
        lo, hi = lo.clamp_max(0.0), hi.clamp_min(0.0)
        step = (hi - lo) / (2**spec.bits - 1)
        step = torch.where(step > 0, step, torch.ones_like(step))
        return -torch.round(-lo / step) * step, step
    bound = torch.maximum(lo.abs(), hi.abs())
    if spec.scheme == "log":
        return bound, torch.zeros_like(bound)
    half = 2 ** (spec.bits - 1) - 1
    step = torch.where(bound > 0, bound / half, torch.ones_like(bound))
    return -half * step, step


def encode(x: torch.Tensor, spec: QuantSpec, offset, step) -> torch.Tensor:
    """Codes in `[0, 2**bits)`: linear `clamp(round((x - offset) / step), 0, 2**b - 1)`; log a
    sign bit over a level, level 0 being zero and level k the magnitude `scale * 2**-(k-1)`;
    binary `x >= 0`."""
    if spec.scheme == "binary":
        return (x >= 0).to(torch.int64)
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


def fake_quantize(x: torch.Tensor, spec: QuantSpec, *, lo=None, hi=None, mask=None):
    """Quantize and decode, differentiable by the straight-through estimator; entries outside
    `mask` come out zero. Runs in fp32 whatever `x`'s dtype and any autocast (bf16 would merge
    levels: 221 of 8 bits' 256), and returns fp32 (fp64 for fp64)."""
    with torch.autocast(x.device.type, enabled=False):
        x = x if x.dtype == torch.float64 else x.float()
        offset, step = quant_params(x, spec, lo=lo, hi=hi, mask=mask)
        out = _RoundThrough.apply(x, spec, offset.to(x.dtype), step.to(x.dtype))
        return out if mask is None else out * mask
