"""A compressed model on disk: one `.npz` (no pickle) of three arrays.

- `description`: JSON, how to rebuild the model and replay its records (`layout` 2);
- `bytes` (uint8): the bitmask of every weight-pruned layer, then the packed codes of every
  quantized layer (its kept weights only), layer by layer;
- `floats` (float32): the `(offset, step)` pairs of every quantized layer (all offsets, then all
  steps), the `(lo, hi)` range of every quantized activation, the kept weights of every
  weight-pruned float layer, then every other float tensor in `state_dict` order.

Nothing says where a piece starts: the model rebuilt from the description knows every length,
so the file carries `stored_bytes(model)` bytes of tensors and about 1 kB more. Files of the
first layout (one array per tensor, no `layout` key) still load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainers import prune as pruning
from trainers import quant_codes, quantize, sparsity
from trainers.models import build_model
from trainers.quant_codes import packed_bytes
from trainers.quantize import mask_of, quantized_layers, spec_of

LAYOUT = 2
SHAPE_STEPS = ("prune", "neuron_prune")  # records replayed by `trainers.prune.apply_record`


def weight_bytes(layer: nn.Module) -> int:
    """Bytes `save` writes for a conv or linear layer's weight of `n` entries: a bitmask of
    `ceil(n / 8)` when weight-pruned (then only the `kept` weights follow); when quantized
    `ceil(kept * bits / 8)` of packed codes plus a float32 `(offset, step)` pair per output
    channel (per tensor: one), else `4 * kept`."""
    weight, mask, spec = layer.weight, mask_of(layer), spec_of(layer)
    kept = weight.numel() if mask is None else int(mask.sum())
    bitmask = 0 if mask is None else packed_bytes(weight.numel(), 1)
    if spec is None:
        return bitmask + 4 * kept
    pairs = weight.shape[0] if spec.per_channel else 1
    return bitmask + packed_bytes(kept, spec.bits) + 8 * pairs


def stored_bytes(model: nn.Module) -> int:
    """Bytes of the tensors `save` writes: `weight_bytes` of every conv and linear weight, 8 per
    quantized activation (its float32 range) and 4 per entry of every other float parameter and
    buffer (the description and the file's headers are not counted)."""
    layers = quantized_layers(model)
    ranges = 8 * len(quantize.act_hooks(model))
    others = sum(4 * t.numel() for t in _other_floats(model, layers))
    return sum(weight_bytes(m) for m in layers.values()) + ranges + others


def _weight_keys(names) -> tuple[str, ...]:
    return tuple(f"{n}.{k}" for n in names for k in ("weight", "parametrizations.weight."))


def _other_floats(model: nn.Module, layers: Mapping[str, nn.Module]) -> list[torch.Tensor]:
    """Every float tensor of `state_dict` but the given layers' weights, in order."""
    skip = _weight_keys(layers)
    return [
        t for k, t in model.state_dict().items() if t.is_floating_point() and not k.startswith(skip)
    ]


def _special(model: nn.Module) -> tuple[dict, dict]:
    layers = quantized_layers(model)
    masked = {n: m for n, m in layers.items() if mask_of(m) is not None}
    quantized = {n: m for n, m in layers.items() if spec_of(m) is not None}
    return masked, quantized


def _payload(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """The `bytes` and `floats` arrays, in the order `load` reads them."""
    masked, quantized = _special(model)
    raw = [quant_codes.pack(mask_of(m).flatten().cpu().numpy(), 1) for m in masked.values()]
    raw += [quant_codes.layer_codes(m) for m in quantized.values()]
    pairs = [quantize.layer_pairs(m) for m in quantized.values()]
    floats = [offset.flatten() for offset, _ in pairs] + [step.flatten() for _, step in pairs]
    floats += [torch.tensor([h.lo, h.hi]) for h in quantize.act_hooks(model).values()]
    floats += [m.weight.detach()[mask_of(m)] for n, m in masked.items() if n not in quantized]
    floats += [t.flatten() for t in _other_floats(model, {**masked, **quantized})]
    raw = np.concatenate(raw) if raw else np.zeros(0, np.uint8)
    floats = torch.cat([t.detach().float().cpu() for t in floats]) if floats else torch.zeros(0)
    return raw, floats.numpy()


def _lean(record: Mapping) -> dict:
    """The record without what the arrays hold: quantization pairs and activation ranges (the
    layers' names kept), masks (the names kept)."""
    if record["step"] == "quantize":
        lean = {k: v for k, v in record.items() if k not in ("layers", "act_ranges")}
        return {**lean, "act_layers": list(record["act_ranges"])}
    if record["step"] == "weight_prune":
        return {**record, "layers": list(record["layers"])}
    return dict(record)


def save(path: str | Path, model: nn.Module, *, description: Mapping) -> int:
    """Write the model; `description` has `model`, `arch`, `in_shape`, `num_classes`, `options`
    and `records` (the prune, weight_prune and quantize records, in order). Returns the file's
    bytes."""
    records = [_lean(r) for r in description.get("records", [])]
    text = json.dumps({**description, "records": records, "layout": LAYOUT})
    raw, floats = _payload(model)
    arrays = {"description": np.frombuffer(text.encode(), dtype=np.uint8)}
    arrays |= {"bytes": raw, "floats": floats}
    path = Path(path)
    with path.open("wb") as file:
        np.savez(file, **arrays)
    return path.stat().st_size


class _Reader:
    """Takes the pieces of one array in order; `done` checks nothing is left over."""

    def __init__(self, array: np.ndarray, name: str):
        self.array, self.name, self.at = array, name, 0

    def take(self, count: int) -> np.ndarray:
        if self.at + count > len(self.array):
            raise ValueError(f"model file: its {self.name} array is shorter than the model needs")
        self.at += count
        return self.array[self.at - count : self.at]

    def done(self) -> None:
        if self.at != len(self.array):
            raise ValueError(f"model file: {len(self.array) - self.at} {self.name} left unread")


def _build(description: Mapping) -> nn.Module:
    return build_model(
        description["model"],
        description["arch"],
        in_shape=description["in_shape"],
        num_classes=description["num_classes"],
        options=description.get("options"),
    )


def _masks(model: nn.Module, record: Mapping, raw: _Reader) -> dict:
    """The record with its masks back, read in model order as `_payload` wrote them."""
    entries = {}
    for name, layer in quantized_layers(model).items():
        if name in record["layers"]:
            count = layer.weight.numel()
            packed = raw.take(packed_bytes(count, 1))
            zeros = count - int(quant_codes.unpack(packed, 1, count).sum())
            entries[name] = {"zeros": zeros, "mask": sparsity.mask_text(packed)}
    return {**record, "layers": entries}


def _quantized(model: nn.Module, record: Mapping, raw: _Reader, floats: _Reader) -> dict:
    """The record with its pairs back, and each layer's packed codes."""
    layers = quantized_layers(model)
    specs = quant_codes.record_specs(record, layers)
    codes = {}
    for name, layer in layers.items():
        mask = mask_of(layer)
        kept = layer.weight.numel() if mask is None else int(mask.sum())
        codes[name] = raw.take(packed_bytes(kept, specs[name].bits))
    counts = {n: layers[n].weight.shape[0] if s.per_channel else 1 for n, s in specs.items()}
    offsets = {n: floats.take(c).tolist() for n, c in counts.items()}
    pairs = {n: {"offset": offsets[n], "step": floats.take(c).tolist()} for n, c in counts.items()}
    points = quantize.act_points(model)
    ranges = {n: floats.take(2).tolist() for n in points if n in record["act_layers"]}
    return {**record, "layers": pairs, "act_ranges": ranges}, codes


@torch.no_grad()
def _fill(model: nn.Module, floats: _Reader) -> None:
    """The kept weights of weight-pruned float layers, then every other float tensor."""
    masked, quantized = _special(model)
    for name, layer in masked.items():
        if name not in quantized:
            values = torch.from_numpy(floats.take(int(mask_of(layer).sum())).copy())
            layer.weight.masked_scatter_(mask_of(layer), values.to(layer.weight))
    for tensor in _other_floats(model, {**masked, **quantized}):
        values = torch.from_numpy(floats.take(tensor.numel()).copy())
        tensor.copy_(values.view(tensor.shape))


def load(path: str | Path) -> tuple[nn.Module, dict]:
    """The model `save` wrote, rebuilt, pruned, masked and quantized as recorded, in eval mode."""
    with np.load(path, allow_pickle=False) as file:
        arrays = {k: file[k] for k in file.files}
    description = json.loads(arrays["description"].tobytes().decode())
    model = _build(description)
    if description.get("layout") != LAYOUT:
        _load_first_layout(model, description, arrays)
        return model.eval(), description
    raw, floats = _Reader(arrays["bytes"], "bytes"), _Reader(arrays["floats"], "floats")
    for record in description.get("records", []):
        if record["step"] in SHAPE_STEPS:
            pruning.apply_record(model, record)
        elif record["step"] == "weight_prune":
            sparsity.apply_record(model, _masks(model, record, raw))
        elif record["step"] == "quantize":
            quant_codes.restore(model, *_quantized(model, record, raw, floats))
    _fill(model, floats)
    raw.done()
    floats.done()
    return model.eval(), description


def _load_first_layout(model: nn.Module, description: Mapping, arrays: Mapping) -> None:
    """Files written before layout 2: `codes/<layer>`, `pairs/<layer>`, `float/<tensor>`."""

    def named(prefix):
        return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}

    pairs, codes, floats = named("pairs/"), named("codes/"), named("float/")
    for record in description.get("records", []):
        if record["step"] == "prune":
            pruning.apply_record(model, record)
        elif record["step"] == "quantize":
            layers = {n: {"offset": p[0].tolist(), "step": p[1].tolist()} for n, p in pairs.items()}
            quant_codes.restore(model, {**record, "layers": layers}, codes)
    state = model.state_dict()
    with torch.no_grad():
        for name, value in floats.items():
            state[name].copy_(torch.from_numpy(value))
