"""Tensor quantization: linear (asymmetric and symmetric) and logarithmic codes, 2 to 16 bits,
and binary weights (1 bit); per tensor or per output channel; weights and activations;
post-training (calibrated) or quantization-aware (fake quantization with a straight-through
estimator). The bit-packed codes a quantized model stores: `trainers.quant_codes`.

Every code decodes as `offset + code * step` (linear, binary) or `sign * scale * 2**-(level - 1)`
(log), with one `(offset, step)` or `(scale, 0)` pair per tensor or channel. A layer whose weight
is masked (`weight_mask`, from `trainers.sparsity`) is quantized over its kept weights only and its
masked weights stay exactly zero.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.blocks import Add
from trainers.quant_math import SCHEMES as SCHEMES
from trainers.quant_math import QuantSpec as QuantSpec
from trainers.quant_math import decode as decode
from trainers.quant_math import encode as encode
from trainers.quant_math import fake_quantize as fake_quantize
from trainers.quant_math import quant_params as quant_params

_CONVS = nn.Conv1d | nn.Conv2d  # 1-D and 2-D models
RANGES = ("minmax", "percentile")


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
    """A forward pre-hook quantizing a module's input number `index` (linear, per tensor). While
    `observing`, it records the range of what passes (min/max, or the mean of per-batch
    percentiles)."""

    def __init__(
        self, bits: int, *, method: str = "minmax", percentile: float = 99.99, index: int = 0
    ):
        if method not in RANGES:
            raise ValueError(f"activation range {method!r}: allowed {list(RANGES)}")
        self.spec, self.index = QuantSpec(bits), index
        self.method, self.percentile = method, percentile
        self.observing, self.lows, self.highs = True, [], []
        self.lo = self.hi = None

    def __call__(self, module, inputs):
        x = inputs[self.index]
        if self.observing:
            self._observe(x.detach().float())
            return None
        quantized = fake_quantize(x, self.spec, lo=self.lo, hi=self.hi)
        return (*inputs[: self.index], quantized, *inputs[self.index + 1 :])

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


def act_hook(module: nn.Module, index: int = 0) -> ActQuantizer | None:
    """The activation quantizer hooked on a module's input number `index`, if any."""
    hooks = [h for h in module._forward_pre_hooks.values() if isinstance(h, ActQuantizer)]
    return next((h for h in hooks if h.index == index), None)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, _CONVS | nn.Linear)}


def act_points(model: nn.Module) -> dict[str, tuple[nn.Module, int]]:
    """Where activations are quantized, as `(module, input index)` by name: each conv and linear
    layer's input (the layer's name) and both inputs of each residual `Add` (`{name}.0`,
    `{name}.1`), so that the runtime adds integers and the layers around it run on integer
    kernels (ONNX Runtime fuses a layer whose inputs and output are all quantized)."""
    points = {}
    for name, module in model.named_modules():
        if isinstance(module, _CONVS | nn.Linear):
            points[name] = (module, 0)
        elif isinstance(module, Add):
            points |= {f"{name}.{i}": (module, i) for i in (0, 1)}
    return points


def point_bits(module: nn.Module, act_bits: int) -> int:
    """The bits of an activation quantizer on `module`'s input: `act_bits`, and at least 8 on
    a residual `Add`'s (a 4-bit sum of a projection and its skip loses too much)."""
    return max(act_bits, 8) if isinstance(module, Add) else act_bits


def act_hooks(model: nn.Module) -> dict[str, ActQuantizer]:
    """The activation quantizers hooked on `model`, by `act_points` name."""
    hooks = {n: act_hook(m, i) for n, (m, i) in act_points(model).items()}
    return {n: h for n, h in hooks.items() if h is not None}


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
    (observing) on every `act_points` input when `act_bits < 32`. Sets `model.quant_spec` and
    each layer's."""
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
    for name, (module, index) in act_points(model).items() if act_bits < 32 else ():
        bits = point_bits(module, act_bits)
        hooks[name] = ActQuantizer(bits, method=act_range, index=index)
        module.register_forward_pre_hook(hooks[name])
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
        "act_bits": min((h.spec.bits for h in hooks.values()), default=32),
        "act_ranges": {n: [h.lo, h.hi] for n, h in hooks.items()},
        "layers": layers,
    }


def baked(model: nn.Module) -> nn.Module:
    """A copy of `model` under quantization-aware training as `finalize` leaves it (its record
    dropped); `model` trains on. Each parametrized layer of the copy gets a class of its own:
    torch's parametrized class is shared by a module and its deep copy, and `finalize` removes
    the weight's property from the class."""
    twin = copy.deepcopy(model)
    for layer in quantized_layers(twin).values():
        if parametrize.is_parametrized(layer):
            shared = type(layer)
            layer.__class__ = type(shared.__name__, shared.__bases__, dict(shared.__dict__))
    finalize(twin, act_hooks(twin))
    return twin
