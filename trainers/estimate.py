"""The costs of a config known before training: what a trial checks its bounds on first."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trainers import quantize, sparsity
from trainers.compress_keys import split_config
from trainers.compress_steps import prepare_quantization, prune_model
from trainers.cost import measure
from trainers.models import build_model, model_name
from trainers.settings import DEFAULT_CHAIN, TrialSettings
from trainers.train import resolve_device


def estimate_cost(
    config: Mapping, settings: TrialSettings, *, in_shape, num_classes: int, repeats=None
):
    """`params`, `macs`, `size_bytes`, `latency_ms` and `peak_mem_bytes` known before training:
    the untrained model built, pruned to its final shapes, quantized to its final storage and
    measured as trained ones are (`trainers.measure`: on the runtime's graph, int8 activations
    calibrated on random inputs, `repeats` timed batches: by default a quarter of the trial's,
    at least 3). Takes a fraction of a second to a second."""
    arch, _, compress = split_config(config)
    arch = arch or DEFAULT_CHAIN
    options = settings.model_options
    model = build_model(
        model_name(arch, settings.model),
        arch,
        in_shape=in_shape,
        num_classes=num_classes,
        options=options,
    )
    prune_model(model, compress, settings.compression)  # its final shapes and weight counts
    sparsity.release(model)
    device = resolve_device(settings.device)
    model = model.to(device)
    inputs = torch.randn(64, *in_shape, generator=torch.Generator().manual_seed(0)).to(device)
    if compress.get("quantize"):
        hooks = prepare_quantization(model, compress, settings.compression, inputs)
        quantize.finalize(model, hooks)
    timing = settings.cost.timing()
    timing["repeats"] = repeats or max(3, timing["repeats"] // 4)
    return measure(model, inputs, **timing)
