"""The switched-on compression steps of a config's `compress.` keys (`trainers.compress_keys`)
applied to a model: pruning in order, quantization prepared and calibrated. The trial runs them
on its trained model, the cost estimate on an untrained one."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from trainers import prune as pruning
from trainers import quantize, sparsity
from trainers.compress_keys import act_bits, end_bits, prune_ratio, quant_spec
from trainers.settings import CompressionSettings


def prune_model(
    model: nn.Module, compress: Mapping, compression: CompressionSettings, *, data=None
) -> list[dict]:
    """The switched-on pruning steps in order: filters, neurons, weights (masks held). `data`
    ranks by the searched criteria; without it (an untrained model) filters and neurons rank by
    L1. Returns their records."""
    records = []
    if compress.get("prune"):
        criterion = compress.get("prune_criterion", "l1") if data is not None else "l1"
        gradients = None
        if criterion == "gradient":
            gradients = pruning.gradient_importance(model, data.x_train, data.y_train)
        ratio = prune_ratio(compress, compression)
        records.append(pruning.prune(model, ratio=ratio, criterion=criterion, gradients=gradients))
    if compress.get("neuron_prune"):
        criterion = compress.get("neuron_criterion", "activation") if data is not None else "l1"
        x = data.x_train[:512] if data is not None else None
        ratio = compress["neuron_ratio"]
        records.append(pruning.prune_neurons(model, ratio=ratio, criterion=criterion, x=x))
    if compress.get("weight_prune"):
        share, scope = compress["weight_sparsity"], compress.get("weight_prune_scope", "lamp")
        records.append(sparsity.prune_weights(model, sparsity=share, scope=scope))
    return records


def quant_overrides(model: nn.Module, compress: Mapping) -> dict[str, quantize.QuantSpec]:
    """`quantize.prepare`'s overrides: the end layers at `end_bits` (linear, per channel)."""
    ends = end_bits(compress)
    if ends == quant_spec(compress).bits:
        return {}
    spec = quantize.QuantSpec(ends, "binary" if ends == 1 else "linear", per_channel=True)
    return {name: spec for name in quantize.end_layers(model)}


def prepare_quantization(
    model: nn.Module, compress: Mapping, compression: CompressionSettings, x: torch.Tensor
) -> dict:
    """Quantizers on `model` as `compress` asks, activations calibrated on `x`: the hooks
    `quantize.finalize` takes."""
    hooks = quantize.prepare(
        model,
        quant_spec(compress),
        act_bits=act_bits(compress),
        act_range=compression.act_range,
        overrides=quant_overrides(model, compress),
    )
    quantize.calibrate(model, hooks, x)
    return hooks
