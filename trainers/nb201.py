"""The NAS-Bench-201 network (`trainers.models`' `nb201`): a stem, three stages of cells whose
six edges each run one op, and residual reduction blocks between the stages."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from spaces import NB201_EDGES, nb201_edge_names
from trainers.blocks import Add, PruneGroup, between, check_input, conv_bn


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(), *conv_bn(cin, cout, kernel, stride=stride))


class Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


def nb201_op(op: str, channels: int) -> nn.Module:
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
            {name: nb201_op(config[name], channels) for name in nb201_edge_names()}
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
        self.stem = nn.Sequential(*conv_bn(in_shape[0], c, 3))
        current = PruneGroup("stage0", "s0", out=["stem.0"], norm=["stem.1"])
        groups, layers = [current], []
        for stage in range(3):
            if stage > 0:
                path = f"layers.{len(layers)}"
                layers.append(Reduction(c, 2 * c))
                c *= 2
                current.inp += [f"{path}.conv_a.1", f"{path}.downsample.1"]
                inner = between(
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
