"""Unstructured weight pruning by magnitude: the smallest `floor(sparsity * n)` weights of every
conv and linear layer (`scope="layer"`), or of all of them ranked together by `|w|` (`"global"`)
or by LAMP scores (`"lamp"`, layer-adaptive: Lee et al., ICLR 2021), masked to zero. A layer's
mask is its `weight_mask` buffer (bool, the weight's shape, True = kept); while `hold` is on, a
parametrization multiplies the weight by it, so masked weights stay zero through fine-tuning and
quantization-aware training whatever the optimizer does. The record carries the masks
(bit-packed, base64), so it replays on a fresh model.

Stored as a bitmask plus the kept values (`trainers.store.weight_bytes`). Dense kernels still
multiply the zeros: weight pruning shrinks the file, not the latency or the MACs.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.quant_codes import pack, unpack
from trainers.quantize import mask_of, quantized_layers

SCOPES = ("lamp", "layer", "global")


class WeightMask(nn.Module):
    """A parametrization: the weight the layer uses is the stored one times its mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)  # the layer's `weight_mask` holds it

    def forward(self, weight):
        return weight * self.mask


def check(*, sparsity: float, scope: str = "lamp") -> None:
    """A `ValueError` naming the config key unless `0 <= sparsity < 1` and `scope` in `SCOPES`."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise ValueError(f"weight_sparsity {sparsity!r}: allowed a number in [0, 1)")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"weight_sparsity {sparsity!r}: allowed [0, 1)")
    if scope not in SCOPES:
        raise ValueError(f"weight_prune_scope {scope!r}: allowed {list(SCOPES)}")


def zeros_for(sparsity: float, count: int) -> int:
    """`floor(sparsity * count)`, the weights a layer (or all of them) loses."""
    return math.floor(sparsity * count + 1e-9)


def _keep_largest(magnitude: torch.Tensor, zeros: int) -> torch.Tensor:
    keep = torch.ones(magnitude.numel(), dtype=torch.bool, device=magnitude.device)
    keep[torch.argsort(magnitude.flatten(), stable=True)[:zeros]] = False
    return keep.view(magnitude.shape)


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP's score of each weight: `w_u**2 / sum(w_v**2 for every v with |w_v| >= |w_u|)` (the
    largest scores 1, so every layer keeps at least one weight), `weight`'s shape."""
    squared = weight.detach().flatten() ** 2
    order = torch.argsort(squared, stable=True)
    ranked = squared[order]
    scores = torch.empty_like(squared)
    scores[order] = ranked / ranked.flip(0).cumsum(0).flip(0).clamp_min(1e-30)
    return scores.view(weight.shape)


def magnitude_masks(
    weights: Mapping[str, torch.Tensor], *, sparsity: float, scope: str = "lamp"
) -> dict[str, torch.Tensor]:
    """Masks keeping the largest `|w|`: `floor(sparsity * n)` zeros in each tensor (`layer`), or
    in all of them together ranked by `|w|` (`global`) or by `lamp_scores` (`lamp`); ties go to
    the earlier layer and entry."""
    check(sparsity=sparsity, scope=scope)
    score = lamp_scores if scope == "lamp" else torch.abs
    magnitudes = {name: score(w.detach()) for name, w in weights.items()}
    if scope == "layer":
        return {n: _keep_largest(m, zeros_for(sparsity, m.numel())) for n, m in magnitudes.items()}
    flat = torch.cat([m.flatten() for m in magnitudes.values()])
    keep = _keep_largest(flat, zeros_for(sparsity, flat.numel()))
    pieces = keep.split([m.numel() for m in magnitudes.values()])
    return {n: p.view(m.shape) for (n, m), p in zip(magnitudes.items(), pieces)}


@torch.no_grad()
def _install(layer: nn.Module, mask: torch.Tensor) -> None:
    if mask.shape != layer.weight.shape:
        raise ValueError(
            f"a weight mask of shape {tuple(mask.shape)} for a weight of shape "
            f"{tuple(layer.weight.shape)}"
        )
    mask = mask.to(device=layer.weight.device, dtype=torch.bool)
    layer.register_buffer("weight_mask", mask)
    layer.weight.mul_(mask)


def hold(model: nn.Module) -> None:
    """Keep every masked weight at zero through training (a parametrization), until `release`."""
    for layer in quantized_layers(model).values():
        if mask_of(layer) is not None and not parametrize.is_parametrized(layer, "weight"):
            parametrize.register_parametrization(layer, "weight", WeightMask(mask_of(layer)))


def release(model: nn.Module) -> None:
    """Bake the masks in: a plain weight with its zeros, the `weight_mask` buffer kept."""
    for layer in quantized_layers(model).values():
        if parametrize.is_parametrized(layer, "weight") and any(
            isinstance(p, WeightMask) for p in layer.parametrizations.weight
        ):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


def prune_weights(
    model: nn.Module,
    *,
    sparsity: float,
    scope: str = "lamp",
    layers: Sequence[str] | None = None,
) -> dict:
    """Mask the smallest weights of `layers` (default: every conv and linear) in place and `hold`
    the masks. Pruning a pruned model again (gradually, to a higher `sparsity`) ranks the weights
    as they are, masked ones being zero, and keeps every earlier zero. Returns the JSON record
    `apply_record` replays: per layer the zeros and the mask (`pack(mask, 1)` as base64, in
    `weight.flatten()` order)."""
    check(sparsity=sparsity, scope=scope)
    candidates = quantized_layers(model)
    names = list(candidates) if layers is None else list(layers)
    unknown = [n for n in names if n not in candidates]
    if unknown:
        raise ValueError(f"weight pruning: no conv or linear layer {unknown}")
    weights = {n: candidates[n].weight for n in names}
    masks = magnitude_masks(weights, sparsity=sparsity, scope=scope)
    release(model)
    for name, mask in masks.items():
        old = mask_of(candidates[name])
        _install(candidates[name], mask if old is None else mask & old)
    hold(model)
    entries = {n: {"zeros": int((~m).sum()), "mask": encode_mask(m)} for n, m in masks.items()}
    return {"step": "weight_prune", "sparsity": sparsity, "scope": scope, "layers": entries}


def encode_mask(mask: torch.Tensor) -> str:
    return mask_text(pack(mask.flatten().cpu().numpy(), 1))


def mask_text(packed: np.ndarray) -> str:
    """A bit-packed mask (`pack(mask, 1)`) as a record holds it: base64."""
    return base64.b64encode(packed.tobytes()).decode("ascii")


def decode_mask(text: str, shape) -> torch.Tensor:
    count = math.prod(shape)
    bits = unpack(np.frombuffer(base64.b64decode(text), dtype=np.uint8), 1, count)
    return torch.from_numpy(bits.astype(bool)).view(tuple(shape))


def apply_record(model: nn.Module, record: Mapping) -> None:
    """Replay a `weight_prune` record on a freshly built model of the same config (filter and
    neuron records replayed first): masks installed and the weights zeroed, not held."""
    layers = quantized_layers(model)
    for name, entry in record["layers"].items():
        mask = decode_mask(entry["mask"], layers[name].weight.shape)
        if int((~mask).sum()) != entry["zeros"]:
            raise ValueError(f"weight_prune record: {name}'s mask lacks {entry['zeros']} zeros")
        _install(layers[name], mask)


def sparsity_of(model: nn.Module) -> float:
    """The share of conv and linear weights that are masked."""
    layers = quantized_layers(model).values()
    total = sum(layer.weight.numel() for layer in layers)
    masks = [mask_of(layer) for layer in layers if mask_of(layer) is not None]
    masked = sum(int((~mask).sum()) for mask in masks)
    return masked / max(total, 1)
