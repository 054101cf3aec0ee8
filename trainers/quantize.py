"""Tensor quantization: linear (asymmetric and symmetric) and logarithmic codes, 2 to 16 bits,
and binary weights (1 bit); per tensor or per output channel; weights and activations;
post-training (calibrated) or quantization-aware (fake quantization with a straight-through
estimator); bit-packed storage.

Every code decodes as `offset + code * step` (linear, binary) or `sign * scale * 2**-(level - 1)`
(log), with one `(offset, step)` or `(scale, 0)` pair per tensor or channel. A layer whose weight
is masked (`weight_mask`, from `trainers.sparsity`) is quantized over its kept weights only and its
masked weights stay exactly zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

SCHEMES = ("linear", "symmetric", "log", "binary")
_CONVS = nn.Conv1d | nn.Conv2d  # 1-D and 2-D models
RANGES = ("minmax", "percentile")


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
    """`(offset, step)` for linear schemes, `(scale, 0)` for log, `(-scale, 2 * scale)` for
    binary; `lo`/`hi` override the range; `mask` (bool, `x`'s shape) limits it to kept entries."""
    if spec.scheme == "binary":
        return _binary_params(x, spec.per_channel, mask)
    if lo is None or hi is None:
        low, high = _range(x, spec.per_channel, mask)
        lo, hi = low if lo is None else lo, high if hi is None else hi
    lo, hi = torch.as_tensor(lo), torch.as_tensor(hi)
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
    `mask` come out zero."""
    offset, step = quant_params(x, spec, lo=lo, hi=hi, mask=mask)
    out = _RoundThrough.apply(x, spec, offset.to(x.dtype), step.to(x.dtype))
    return out if mask is None else out * mask


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
            if isinstance(conv, _CONVS) and isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d):
                _fold(conv, bn)
                setattr(seq, bn_name, nn.Identity())
                fused.append(f"{path}.{name}" if path else name)
    return fused


@torch.no_grad()
def _fold(conv: nn.Conv1d | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, *[1] * (conv.weight.dim() - 1)))
    conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)


class WeightQuantizer(nn.Module):
    """A parametrization: the weight the layer uses is the fake-quantized stored one (masked)."""

    def __init__(self, spec: QuantSpec, mask: torch.Tensor | None = None):
        super().__init__()
        self.spec = spec
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, weight):
        return fake_quantize(weight, self.spec, mask=self.mask)


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


def act_hook(layer: nn.Module) -> ActQuantizer | None:
    """The activation quantizer hooked on a layer's input, if any."""
    hooks = [h for h in layer._forward_pre_hooks.values() if isinstance(h, ActQuantizer)]
    return hooks[0] if hooks else None


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, _CONVS | nn.Linear)}


def mask_of(layer: nn.Module) -> torch.Tensor | None:
    """The layer's `weight_mask` (bool, the weight's shape; True = kept), if it is weight-pruned."""
    return getattr(layer, "weight_mask", None)


def spec_of(layer: nn.Module) -> QuantSpec | None:
    """The spec a quantized layer's weight is stored at (set by `prepare` and `restore`)."""
    return getattr(layer, "quant_spec", None)


def end_layers(model: nn.Module) -> tuple[str, ...]:
    """The first and the last conv or linear layer: the ones binary weights leave at 8 bits."""
    names = list(quantized_layers(model))
    return tuple(dict.fromkeys([names[0], names[-1]])) if names else ()


def prepare(
    model: nn.Module,
    spec: QuantSpec,
    *,
    act_bits: int = 32,
    act_range: str = "minmax",
    overrides: Mapping[str, QuantSpec] | None = None,
) -> dict[str, ActQuantizer]:
    """Fuse batch norms, fake-quantize every conv and linear weight (at `overrides[name]` where
    given, else `spec`; a weight-pruned layer keeps its zeros), and hook an activation quantizer
    (observing) on their inputs when `act_bits < 32`. Sets `model.quant_spec` and each layer's."""
    if act_bits != 32 and not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits {act_bits!r}: allowed 2 to 16, or 32 for none")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(quantized_layers(model)))
    if unknown:
        raise ValueError(f"quantization overrides for layers not in the model: {unknown}")
    for layer in quantized_layers(model).values():
        if parametrize.is_parametrized(layer, "weight"):  # masks: `weight_mask` keeps them
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    fuse_batchnorm(model)
    hooks = {}
    for name, layer in quantized_layers(model).items():
        layer.quant_spec, layer.quant_pairs = overrides.get(name, spec), None
        quantizer = WeightQuantizer(spec_of(layer), mask_of(layer))
        parametrize.register_parametrization(layer, "weight", quantizer)
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


def _spec_fields(spec: QuantSpec) -> dict:
    return {"bits": spec.bits, "scheme": spec.scheme, "per_channel": spec.per_channel}


def layer_pairs(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The `(offset, step)` a quantized layer's weight was quantized with (kept by `finalize` and
    `restore`, so its codes decode to exactly the weight), on the weight's device."""
    pairs = getattr(layer, "quant_pairs", None)
    if pairs is None:  # quantized without `finalize`: the pairs of the weight as it is
        pairs = quant_params(layer.weight.detach(), spec_of(layer), mask=mask_of(layer))
    return tuple(t.to(layer.weight.device) for t in pairs)


def finalize(model: nn.Module, hooks: dict[str, ActQuantizer]) -> dict:
    """Bake the fake-quantized weights in, and return the record: spec, the layers quantized at
    another spec (`layer_specs`), activation ranges and the `(offset, step)` of every layer."""
    spec = model.quant_spec
    layers = {}
    for name, layer in quantized_layers(model).items():
        original = layer.parametrizations.weight.original.detach()
        offset, step = quant_params(original, spec_of(layer), mask=mask_of(layer))
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        layer.quant_pairs = (offset, step)
        layers[name] = {"offset": offset.flatten().tolist(), "step": step.flatten().tolist()}
    return {
        "step": "quantize",
        **_spec_fields(spec),
        "layer_specs": {
            name: _spec_fields(spec_of(layer))
            for name, layer in quantized_layers(model).items()
            if spec_of(layer) != spec
        },
        "act_bits": next(iter(hooks.values())).spec.bits if hooks else 32,
        "act_ranges": {n: [h.lo, h.hi] for n, h in hooks.items()},
        "layers": layers,
    }


def layer_codes(layer: nn.Module) -> np.ndarray:
    """The packed codes of a quantized layer's kept weights (after `finalize`), in
    `weight[mask]` order: `ceil(kept * bits / 8)` bytes."""
    spec, mask = spec_of(layer), mask_of(layer)
    offset, step = layer_pairs(layer)
    codes = encode(layer.weight.detach(), spec, offset, step)
    codes = codes.flatten() if mask is None else codes[mask]
    return pack(codes.cpu(), spec.bits)


def weight_codes(model: nn.Module) -> dict[str, np.ndarray]:
    """The packed codes of every quantized weight (after `finalize`)."""
    return {name: layer_codes(layer) for name, layer in quantized_layers(model).items()}


def restore(model: nn.Module, record: dict, packed: dict[str, np.ndarray]) -> None:
    """Rebuild a quantized model from its record and packed codes (the model freshly built,
    pruned to the same shapes and masked as recorded): fuse, decode the weights, re-hook the
    activation quantizers."""
    specs = record_specs(record, quantized_layers(model))
    fuse_batchnorm(model)
    for name, layer in quantized_layers(model).items():
        layer.quant_spec = specs[name]
        _decode_into(layer, record["layers"][name], packed[name])
        if name in record["act_ranges"]:
            hook = ActQuantizer(record["act_bits"])
            hook.lo, hook.hi = record["act_ranges"][name]
            hook.observing = False
            layer.register_forward_pre_hook(hook)
    model.quant_spec = QuantSpec(record["bits"], record["scheme"], record["per_channel"])


def record_specs(record: Mapping, names) -> dict[str, QuantSpec]:
    """The spec of each layer in `names` by a `quantize` record: its own, else the record's."""
    spec = QuantSpec(record["bits"], record["scheme"], record["per_channel"])
    own = record.get("layer_specs", {})
    return {name: QuantSpec(**own[name]) if name in own else spec for name in names}


@torch.no_grad()
def _decode_into(layer: nn.Module, pairs: Mapping, packed: np.ndarray) -> None:
    spec, mask, weight = spec_of(layer), mask_of(layer), layer.weight
    shape = (-1,) + (1,) * (weight.dim() - 1) if spec.per_channel else ()
    offset = torch.tensor(pairs["offset"]).view(shape)
    step = torch.tensor(pairs["step"]).view(shape)
    layer.quant_pairs = (offset, step)
    kept = weight.numel() if mask is None else int(mask.sum())
    codes = torch.from_numpy(unpack(packed, spec.bits, kept).astype(np.int64))
    if mask is not None:
        codes = torch.zeros(weight.shape, dtype=torch.int64).masked_scatter(mask.cpu(), codes)
    values = decode(codes.view(weight.shape), spec, offset, step)
    weight.copy_(values if mask is None else values * mask.cpu())
