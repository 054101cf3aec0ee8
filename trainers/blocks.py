"""What the model builders share (`trainers.models`, `trainers.nb201`, `trainers.supernet`):
prune groups, the input shapes each builder takes, conv-batch-norm pairs, the `Add` module."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn


@dataclass
class PruneGroup:
    """Channels pruned together. `out`: layers whose output channels they are (weight dim 0);
    `norm`: batch norms over them; `depthwise`: convs mapping each channel to itself;
    `inp`: layers reading them (weight dim 1); `stage`: the key of a per-stage ratio."""

    name: str
    stage: str
    out: list[str] = field(default_factory=list)
    norm: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    inp: list[str] = field(default_factory=list)


def between(name: str, stage: str, conv: str, norm: str, reader: str) -> PruneGroup:
    """The channels one conv (and its norm) produces and one layer reads."""
    return PruneGroup(name, stage, out=[conv], norm=[norm], inp=[reader])


# The shapes of a sample (`in_shape`) by rank, and the layers of each convolutional rank.
INPUTS = {1: "(features,)", 2: "(channels, length)", 3: "(channels, height, width)"}
# the ranks of `in_shape` each builder takes (`INPUTS`)
IN_RANKS = {"mlp": (1, 2, 3), "chain": (2, 3), "nb201": (3,)}
LAYERS = {
    1: {"conv": nn.Conv1d, "norm": nn.BatchNorm1d, "pool": nn.AdaptiveAvgPool1d},
    2: {"conv": nn.Conv2d, "norm": nn.BatchNorm2d, "pool": nn.AdaptiveAvgPool2d},
}


def check_input(model: str, in_shape) -> int:
    """The spatial dimensions of samples of shape `in_shape` (its rank - 1); a `ValueError`
    naming the model, the data's shape and the shapes the model takes unless its rank is one
    of `IN_RANKS[model]`."""
    accepted = IN_RANKS[model]
    if len(in_shape) not in accepted:
        forms = " or ".join(INPUTS[rank] for rank in accepted)
        raise ValueError(
            f"model {model!r} takes samples of shape {forms}; the data's samples have shape "
            f"{tuple(in_shape)} (the data is (n, {', '.join(map(str, in_shape))}))"
        )
    return len(in_shape) - 1


def conv_bn(
    cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1, dims: int = 2
) -> list:
    layers = LAYERS[dims]
    conv = layers["conv"](cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, layers["norm"](cout)]


class Add(nn.Module):
    """`a + b`: a residual addition as a module, seen by forward hooks like every layer."""

    def forward(self, a, b):
        return a + b
