"""Ready-made spaces: the NAS-Bench-201 cell, a MobileNetV2-style chain, training
hyperparameters, compression, and their joint product."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spaces.params import Choice, Float, Int
from spaces.space import Space

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) in the order of the standard string |1<-0|+|2<-0|2<-1|+|3<-0|3<-1|3<-2|
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def nb201_edge_names() -> tuple[str, ...]:
    return tuple(f"edge_{to}_{src}" for to, src in NB201_EDGES)


def nb201() -> Space:
    """The NAS-Bench-201 cell: 6 edges `edge_<to>_<from>`, each one of `NB201_OPS`."""
    return Space({name: Choice(NB201_OPS) for name in nb201_edge_names()})


def nb201_arch_str(config: Mapping, *, prefix: str = "") -> str:
    """The standard string, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~2|`."""
    ops = {}
    for (to, src), name in zip(NB201_EDGES, nb201_edge_names()):
        key = prefix + name
        if key not in config:
            raise ValueError(f"nb201_arch_str: config has no {key!r} (keys: {sorted(config)})")
        if config[key] not in NB201_OPS:
            raise ValueError(f"{key}: {config[key]!r} is not one of {list(NB201_OPS)}")
        ops.setdefault(to, []).append(f"{config[key]}~{src}")
    return "+".join("|" + "|".join(ops[to]) + "|" for to in (1, 2, 3))


def nb201_config(arch_str: str, *, prefix: str = "") -> dict:
    """The inverse of `nb201_arch_str`."""
    nodes = arch_str.strip().split("+")
    edges = [tuple(tok.split("~")) for node in nodes for tok in node.strip("|").split("|")]
    expected = [str(src) for _, src in NB201_EDGES]
    if len(nodes) != 3 or [src for _, src in edges] != expected:
        raise ValueError(f"not a NAS-Bench-201 string: {arch_str!r}")
    config = {prefix + n: op for n, (op, _) in zip(nb201_edge_names(), edges)}
    for key, op in config.items():
        if op not in NB201_OPS:
            raise ValueError(f"{key}: {op!r} is not one of {list(NB201_OPS)}")
    return config


def chain(
    *,
    stages: int = 3,
    depth: tuple[int, int] = (1, 3),
    widths: Sequence[int] = (8, 16, 24, 32, 48, 64),
    kernels: Sequence[int] = (3, 5, 7),
    expansions: Sequence[int] = (1, 3, 6),
) -> Space:
    """A MobileNetV2-style macro space: per stage `s<i>_depth`, `_width`, `_kernel`, `_expand`."""
    if not isinstance(stages, int) or stages < 1:
        raise ValueError(f"chain: stages must be a positive integer, got {stages!r}")
    if min(widths, default=0) < 1 or min(kernels, default=0) < 1 or min(expansions, default=0) < 1:
        raise ValueError("chain: widths, kernels and expansions must be non-empty and positive")
    if any(k % 2 == 0 for k in kernels):
        raise ValueError(f"chain: kernel sizes must be odd (same padding), got {list(kernels)}")
    params = {}
    for i in range(stages):
        params[f"s{i}_depth"] = Int(*depth)
        params[f"s{i}_width"] = Choice(tuple(widths))
        params[f"s{i}_kernel"] = Choice(tuple(kernels))
        params[f"s{i}_expand"] = Choice(tuple(expansions))
    return Space(params)


def mlp(*, layers: tuple[int, int] = (1, 3), widths: Sequence[int] = (32, 64, 128, 256)) -> Space:
    """A multilayer perceptron: `layers` hidden layers of `width` units."""
    return Space({"layers": Int(*layers), "width": Choice(tuple(widths))})


def training() -> Space:
    """Optimizer, learning rate, weight decay, batch size, label smoothing (momentum for SGD)."""
    return Space(
        {
            "optimizer": Choice(("adamw", "sgd")),
            "lr": Float(1e-4, 0.3, log=True),
            "momentum": Float(0.5, 0.99, when={"optimizer": "sgd"}),
            "weight_decay": Float(1e-6, 1e-2, log=True),
            "batch_size": Choice((32, 64, 128)),
            "label_smoothing": Float(0.0, 0.2),
        }
    )


MULTIBIT = (2, 3, 4, 6, 8)  # weight bits that take a scheme and a granularity; 1 is binary


def compression() -> Space:
    """Filter, neuron and weight pruning, quantization (binary weights at `weight_bits` 1) and
    distillation; switching a technique off hides its knobs."""
    multibit = {"quantize": True, "weight_bits": MULTIBIT}
    return Space(
        {
            "prune": Choice((False, True)),
            "prune_ratio": Float(0.1, 0.75, step=0.05, when={"prune": True}),
            "prune_criterion": Choice(("l1", "l2", "gradient"), when={"prune": True}),
            "neuron_prune": Choice((False, True)),
            "neuron_ratio": Float(0.1, 0.75, step=0.05, when={"neuron_prune": True}),
            "neuron_criterion": Choice(("activation", "l1"), when={"neuron_prune": True}),
            "weight_prune": Choice((False, True)),
            "weight_sparsity": Float(0.5, 0.95, step=0.05, when={"weight_prune": True}),
            "weight_prune_scope": Choice(("lamp", "layer", "global"), when={"weight_prune": True}),
            "quantize": Choice((False, True)),
            "weight_bits": Choice((1, *MULTIBIT), when={"quantize": True}),
            "act_bits": Choice((4, 8, 16, 32), when={"quantize": True}),
            "quant_scheme": Choice(("linear", "log"), when=multibit),
            "quant_granularity": Choice(("per_tensor", "per_channel"), when=multibit),
            "quant_mode": Choice(("ptq", "qat"), when={"quantize": True}),
            "distill": Choice((False, True)),
            "distill_weight": Float(0.1, 10.0, log=True, when={"distill": True}),
            "distill_temperature": Float(1.0, 10.0, when={"distill": True}),
            "distill_loss": Choice(("mse", "kl"), when={"distill": True}),
        }
    )


def joint(arch: Space, train: Space, compress: Space) -> Space:
    """`arch.*`, `train.*` and `compress.*` in one space."""
    return Space.combine({"arch": arch, "train": train, "compress": compress})
