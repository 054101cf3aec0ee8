"""A compressed model on disk: one `.npz` (no pickle) holding packed weight codes, the float
tensors that stay float, and a JSON description to rebuild the model and replay its records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainers import prune as pruning
from trainers import quantize
from trainers.models import build_model


def save(path: str | Path, model: nn.Module, *, description: Mapping) -> int:
    """Write the model; `description` has `model`, `arch`, `in_shape`, `num_classes`, `options`
    and `records` (the prune and quantize records, in order). Returns the file's bytes."""
    description = dict(description)
    records = []
    arrays = {}
    for record in description.get("records", []):
        if record["step"] == "quantize":  # its per-layer pairs go in as float32 arrays
            for name, pair in record["layers"].items():
                arrays[f"pairs/{name}"] = np.array([pair["offset"], pair["step"]], np.float32)
            record = {k: v for k, v in record.items() if k != "layers"}
        records.append(record)
    text = json.dumps({**description, "records": records})
    arrays["description"] = np.frombuffer(text.encode(), dtype=np.uint8)
    packed = quantize.weight_codes(model) if hasattr(model, "quant_spec") else {}
    for name, codes in packed.items():
        arrays[f"codes/{name}"] = codes
    for name, tensor in model.state_dict().items():
        if name.removesuffix(".weight") in packed or not tensor.is_floating_point():
            continue
        arrays[f"float/{name}"] = tensor.detach().cpu().float().numpy()
    path = Path(path)
    with path.open("wb") as file:
        np.savez(file, **arrays)
    return path.stat().st_size


def load(path: str | Path) -> tuple[nn.Module, dict]:
    """The model `save` wrote, rebuilt, pruned and quantized as recorded, in eval mode."""
    with np.load(path, allow_pickle=False) as arrays:
        description = json.loads(arrays["description"].tobytes().decode())
        pairs = {
            k.removeprefix("pairs/"): arrays[k] for k in arrays.files if k.startswith("pairs/")
        }
        codes = {
            k.removeprefix("codes/"): arrays[k] for k in arrays.files if k.startswith("codes/")
        }
        floats = {
            k.removeprefix("float/"): arrays[k] for k in arrays.files if k.startswith("float/")
        }
    model = build_model(
        description["model"],
        description["arch"],
        in_shape=description["in_shape"],
        num_classes=description["num_classes"],
        options=description.get("options"),
    )
    for record in description.get("records", []):
        if record["step"] == "prune":
            pruning.apply_record(model, record)
        elif record["step"] == "quantize":
            layers = {n: {"offset": p[0].tolist(), "step": p[1].tolist()} for n, p in pairs.items()}
            quantize.restore(model, {**record, "layers": layers}, codes)
    state = model.state_dict()
    with torch.no_grad():
        for name, value in floats.items():
            state[name].copy_(torch.from_numpy(value))
    return model.eval(), description
