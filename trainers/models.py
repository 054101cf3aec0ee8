"""Model builders: a config of `spaces/` in, an `nn.Module` out.

Each builder takes the samples' shape `in_shape` without the batch, of a rank in `IN_RANKS`:
`mlp` any of `INPUTS`, `chain` 1-D `(channels, length)` (Conv1d, BatchNorm1d, pooling over the
length) or 2-D `(channels, height, width)`, `nb201` 2-D only; another rank raises `ValueError`
(`check_input`). Residual additions are `Add` modules, so forward hooks on leaf modules see
every operation.

Every model carries `prune_groups`: the sets of channels that must be removed together (a conv's
filters, its batch norm, a depthwise conv in between, and every layer that reads them; residual
additions and cell edges put all their producers in one group). Modules are named by their path
so a pruning record replays on a freshly built model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from spaces import NB201_EDGES, nb201_edge_names


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


def _between(name: str, stage: str, conv: str, norm: str, reader: str) -> PruneGroup:
    """The channels one conv (and its norm) produces and one layer reads."""
    return PruneGroup(name, stage, out=[conv], norm=[norm], inp=[reader])


# The shapes of a sample (`in_shape`) by rank, and the layers of each convolutional rank.
INPUTS = {1: "(features,)", 2: "(channels, length)", 3: "(channels, height, width)"}
_LAYERS = {
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


def _conv_bn(
    cin: int, cout: int, kernel: int, *, stride: int = 1, groups: int = 1, dims: int = 2
) -> list:
    layers = _LAYERS[dims]
    conv = layers["conv"](cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, layers["norm"](cout)]


class Add(nn.Module):
    """`a + b`: a residual addition as a module, seen by forward hooks like every layer."""

    def forward(self, a, b):
        return a + b


class MLP(nn.Module):
    def __init__(self, config: Mapping, *, in_shape, num_classes: int):
        super().__init__()
        check_input("mlp", in_shape)
        width, layers = int(config["width"]), int(config["layers"])
        sizes = [int(torch.tensor(in_shape).prod())] + [width] * layers
        body = []
        for i in range(layers):
            body += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
        self.features = nn.Sequential(nn.Flatten(), *body)
        self.classifier = nn.Linear(sizes[-1], num_classes)
        self.prune_groups = [
            PruneGroup(
                f"hidden{i}",
                f"hidden{i}",
                out=[f"features.{2 * i + 1}"],
                inp=[f"features.{2 * i + 3}" if i + 1 < layers else "classifier"],
            )
            for i in range(layers)
        ]

    def forward(self, x):
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(
        self, cin: int, cout: int, *, stride: int, kernel: int, expand: int, dims: int = 2
    ):
        super().__init__()
        hidden = cin * expand
        self.expand = (
            nn.Sequential(*_conv_bn(cin, hidden, 1, dims=dims), nn.ReLU6()) if expand > 1 else None
        )
        self.depthwise = nn.Sequential(
            *_conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden, dims=dims), nn.ReLU6()
        )
        self.project = nn.Sequential(*_conv_bn(hidden, cout, 1, dims=dims))
        self.residual = stride == 1 and cin == cout
        self.add = Add() if self.residual else None

    def forward(self, x):
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return self.add(x, y) if self.residual else y


class ChainNet(nn.Module):
    """MobileNetV2-style: a 3x3 stem, stages of inverted residual blocks (stride 2 from the
    second stage on), global pooling and a linear classifier; 1-D or 2-D."""

    def __init__(self, config: Mapping, *, in_shape, num_classes: int, width_mult: float = 1.0):
        super().__init__()
        dims = check_input("chain", in_shape)
        stages = sorted({int(k[1 : k.index("_")]) for k in config if k.startswith("s")})
        widths = [max(1, round(int(config[f"s{i}_width"]) * width_mult)) for i in stages]
        self.stem = nn.Sequential(*_conv_bn(in_shape[0], widths[0], 3, dims=dims), nn.ReLU6())
        current = PruneGroup("stem", "s0", out=["stem.0"], norm=["stem.1"])
        groups = [current]
        blocks, cin = [], widths[0]
        for i in stages:
            for j in range(int(config[f"s{i}_depth"])):
                expand = int(config[f"s{i}_expand"])
                block = InvertedResidual(
                    cin,
                    widths[i],
                    stride=2 if (j == 0 and i > 0) else 1,
                    kernel=int(config[f"s{i}_kernel"]),
                    expand=expand,
                    dims=dims,
                )
                path = f"blocks.{len(blocks)}"
                if block.expand is not None:
                    current.inp.append(f"{path}.expand.0")
                    hidden = _between(
                        f"{path}.hidden",
                        f"s{i}",
                        f"{path}.expand.0",
                        f"{path}.expand.1",
                        f"{path}.project.0",
                    )
                    groups.append(hidden)
                else:
                    current.inp.append(f"{path}.project.0")
                    hidden = current
                hidden.depthwise.append(f"{path}.depthwise.0")
                hidden.norm.append(f"{path}.depthwise.1")
                if not block.residual:
                    current = PruneGroup(f"{path}.out", f"s{i}")
                    groups.append(current)
                current.out.append(f"{path}.project.0")
                current.norm.append(f"{path}.project.1")
                blocks.append(block)
                cin = widths[i]
        current.inp.append("classifier")
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(_LAYERS[dims]["pool"](1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)
        self.prune_groups = groups

    def forward(self, x):
        return self.classifier(self.pool(self.blocks(self.stem(x))))


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(), *_conv_bn(cin, cout, kernel, stride=stride))


class Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


def _nb201_op(op: str, channels: int) -> nn.Module:
    if op == "none":
        return Zero()
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    return ReLUConvBN(channels, channels, 1 if op == "nor_conv_1x1" else 3)


class Cell(nn.Module):
    def __init__(self, config: Mapping, channels: int):
        super().__init__()
        self.edges = nn.ModuleDict(
            {name: _nb201_op(config[name], channels) for name in nb201_edge_names()}
        )
        self.add = Add()

    def forward(self, x):
        """Each node is the running sum of its incoming edges, in edge order."""
        nodes = [x]
        for to in (1, 2, 3):
            total = None
            for name, (t, src) in zip(nb201_edge_names(), NB201_EDGES):
                if t == to:
                    y = self.edges[name](nodes[src])
                    total = y if total is None else self.add(total, y)
            nodes.append(total)
        return nodes[3]


class Reduction(nn.Module):
    """The NAS-Bench-201 residual block between stages (stride 2, channels doubled)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))
        self.add = Add()

    def forward(self, x):
        return self.add(self.conv_b(self.conv_a(x)), self.downsample(x))


class NB201Net(nn.Module):
    """The NAS-Bench-201 network: stem, 3 stages of `cells` cells with reduction blocks."""

    def __init__(
        self,
        config: Mapping,
        *,
        in_shape,
        num_classes: int,
        channels: int = 16,
        cells: int = 1,
        width_mult: float = 1.0,
    ):
        super().__init__()
        check_input("nb201", in_shape)
        c = max(1, round(channels * width_mult))
        self.stem = nn.Sequential(*_conv_bn(in_shape[0], c, 3))
        current = PruneGroup("stage0", "s0", out=["stem.0"], norm=["stem.1"])
        groups, layers = [current], []
        for stage in range(3):
            if stage > 0:
                path = f"layers.{len(layers)}"
                layers.append(Reduction(c, 2 * c))
                c *= 2
                current.inp += [f"{path}.conv_a.1", f"{path}.downsample.1"]
                inner = _between(
                    f"{path}.inner",
                    f"s{stage}",
                    f"{path}.conv_a.1",
                    f"{path}.conv_a.2",
                    f"{path}.conv_b.1",
                )
                current = PruneGroup(
                    f"stage{stage}",
                    f"s{stage}",
                    out=[f"{path}.conv_b.1", f"{path}.downsample.1"],
                    norm=[f"{path}.conv_b.2"],
                )
                groups += [inner, current]
            for _ in range(cells):
                path = f"layers.{len(layers)}"
                cell = Cell(config, c)
                for name, op in cell.edges.items():
                    if isinstance(op, ReLUConvBN):
                        current.inp.append(f"{path}.edges.{name}.1")
                        current.out.append(f"{path}.edges.{name}.1")
                        current.norm.append(f"{path}.edges.{name}.2")
                layers.append(cell)
        current.norm.append("head.0")
        current.inp.append("classifier")
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.classifier = nn.Linear(c, num_classes)
        self.prune_groups = groups

    def forward(self, x):
        return self.classifier(self.head(self.layers(self.stem(x))))


MODELS = {"mlp": MLP, "chain": ChainNet, "nb201": NB201Net}
# the ranks of `in_shape` each builder takes (`INPUTS`)
IN_RANKS = {"mlp": (1, 2, 3), "chain": (2, 3), "nb201": (3,)}
# the layer whose response a student learns from its teacher, by default
FEATURE_LAYERS = {"mlp": "features", "chain": "blocks", "nb201": "layers"}


def infer_model(arch: Mapping) -> str:
    """The builder a config is for, from its keys."""
    keys = set(arch)
    if set(nb201_edge_names()) <= keys:
        return "nb201"
    if "s0_width" in keys:
        return "chain"
    if {"layers", "width"} <= keys:
        return "mlp"
    raise ValueError(
        f"cannot tell the model from keys {sorted(keys)}: expected the nb201 edges "
        f"{list(nb201_edge_names())}, chain keys s<i>_depth/_width/_kernel/_expand, "
        "or mlp keys layers/width"
    )


def build_model(
    name: str, arch: Mapping, *, in_shape, num_classes: int, options: Mapping | None = None
) -> nn.Module:
    """`MODELS[name](arch, ...)`; `options` are the builder's keywords (`width_mult`, ...).
    Samples of a shape the builder does not take (`IN_RANKS`) raise `ValueError`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {sorted(MODELS)}")
    return MODELS[name](arch, in_shape=tuple(in_shape), num_classes=num_classes, **(options or {}))
