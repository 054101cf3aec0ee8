"""The NB201 cell's supernet (`trainers.supernet`): every edge a mix of its allowed ops."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from spaces import NB201_EDGES, Space, nb201_edge_names
from trainers.blocks import Add, check_input, conv_bn
from trainers.nb201 import Reduction, nb201_op
from trainers.supernet.base import SuperNet, mixed


class MixedCell(nn.Module):
    def __init__(self, edge_ops: Mapping[str, tuple[str, ...]], channels: int):
        super().__init__()
        self.edges = nn.ModuleDict(
            {
                name: nn.ModuleList(nb201_op(op, channels) for op in ops)
                for name, ops in edge_ops.items()
            }
        )
        self.add = Add()

    def forward(self, x, drawn):
        nodes = [x]
        for to in (1, 2, 3):
            total = None
            for name, (t, src) in zip(nb201_edge_names(), NB201_EDGES):
                if t == to:
                    y = mixed(self.edges[name], nodes[src], *drawn[name])
                    total = y if total is None else self.add(total, y)
            nodes.append(total)
        return nodes[3]


class NB201Super(SuperNet):
    """`trainers.models.NB201Net` with every edge a mix of its allowed ops."""

    def choices_of(self, arch: Space) -> dict[str, tuple]:
        return {name: tuple(arch[name].options) for name in nb201_edge_names()}

    def build(
        self, *, in_shape, num_classes: int, channels: int = 16, cells: int = 1, width_mult=1.0
    ):
        check_input("nb201", in_shape)
        edge_ops = self.choices
        c = max(1, round(channels * width_mult))
        self.stem = nn.Sequential(*conv_bn(in_shape[0], c, 3))
        layers = []
        for stage in range(3):
            if stage > 0:
                layers.append(Reduction(c, 2 * c))
                c *= 2
            layers += [MixedCell(edge_ops, c) for _ in range(cells)]
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        drawn = self.draw()
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, drawn) if isinstance(layer, MixedCell) else layer(x)
        return self.classifier(self.head(x))

    def config_of(self, labels: Mapping) -> dict:
        return {name: labels[name] for name in nb201_edge_names()}

    def derive(self) -> dict[str, str | int]:
        """Each edge's op of largest `alpha`, except that the cell never comes out cut off from
        its input (a constant network): while every path holds a `none`, the `none` edge whose
        best other op is most probable takes that op (the original DARTS derived no `none`)."""
        labels = super().derive()
        probs = {name: p.tolist() for name, p in self.probabilities().items()}
        while not self.valid(labels):
            candidates = [
                (probs[name][k], name, op)
                for name, ops in self.choices.items()
                if labels[name] == "none"
                for k, op in enumerate(ops)
                if op != "none"
            ]
            if not candidates:  # the space allows only `none` where it matters
                break
            _, name, op = max(candidates)
            labels[name] = op
        return labels

    def valid(self, labels: Mapping) -> bool:
        return _connected(labels)

    def discrete_key(self, key: str, labels: Mapping) -> str | None:
        parts = key.split(".")
        if len(parts) > 4 and parts[0] == "layers" and parts[2] == "edges":
            chosen = self.choices[parts[3]].index(labels[parts[3]])
            return ".".join(parts[:4] + parts[5:]) if int(parts[4]) == chosen else None
        return None if key.startswith("alphas.") else key


def _connected(labels: Mapping) -> bool:
    """Whether some path of the NB201 cell from node 0 to node 3 has no `none` edge."""
    reached = {0}
    for (to, src), name in zip(NB201_EDGES, nb201_edge_names()):  # sources come first
        if src in reached and labels[name] != "none":
            reached.add(to)
    return 3 in reached
