"""The codes a quantized model stores (`trainers.store`): weights bit-packed at their width,
read back into a freshly built model (`restore`)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from trainers.quantize import (
    ActQuantizer,
    QuantSpec,
    act_points,
    decode,
    encode,
    fuse_batchnorm,
    layer_pairs,
    mask_of,
    point_bits,
    quantized_layers,
    spec_of,
)


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
    for name, (module, index) in act_points(model).items():
        if name in record["act_ranges"]:
            hook = ActQuantizer(point_bits(module, record["act_bits"]), index=index)
            hook.lo, hook.hi = record["act_ranges"][name]
            hook.observing = False
            module.register_forward_pre_hook(hook)
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
