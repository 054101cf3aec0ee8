"""Weight-sharing supernets of the NAS-Bench-201 cell and of the chain, built from the operation
builders of `trainers.models`, so an architecture weight that is one-hot runs exactly the
discrete network `build_model` makes of that config (`discrete_state` carries the weights over).

A supernet has `choices`: each a name, its labels (the values it picks from) and an architecture
parameter `alphas[name]` of one logit per label. The NB201 supernet has one choice per edge
(`edge_<to>_<from>`, labels the allowed ops), shared by every cell. The chain supernet has per
stage `s<i>_block` (labels `"<kernel>x<expand>"`: every block of the stage runs the weighted mix
of one inverted residual per pair) and `s<i>_depth` (the stage's output is the weighted mix of
its output after each allowed depth); widths are held (`widths`), not searched.

`mode` says how the weights are drawn: `darts` mixes every op by `softmax(alpha)`; `gdas`
samples one op per choice with the Gumbel-softmax at temperature `tau` and runs only that one,
its straight-through one-hot weight carrying the gradient to `alpha` (in eval mode, the argmax).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from spaces import NB201_EDGES, Space, nb201_edge_names
from trainers.models import Add, Reduction, _conv_bn, _nb201_op, check_input
from trainers.supernet_base import MODES, SuperNet, mixed
from trainers.supernet_chain import ChainSuper, chain_widths

__all__ = ["MODES", "ChainSuper", "NB201Super", "SuperNet", "build_supernet", "chain_widths"]
__all__ += ["discrete_state", "mixed"]


class MixedCell(nn.Module):
    def __init__(self, edge_ops: Mapping[str, tuple[str, ...]], channels: int):
        super().__init__()
        self.edges = nn.ModuleDict(
            {
                name: nn.ModuleList(_nb201_op(op, channels) for op in ops)
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

    def __init__(
        self,
        arch: Space,
        *,
        in_shape,
        num_classes: int,
        mode: str,
        channels: int = 16,
        cells: int = 1,
        width_mult: float = 1.0,
    ):
        edge_ops = {name: tuple(arch[name].options) for name in nb201_edge_names()}
        super().__init__(edge_ops, mode=mode)
        check_input("nb201", in_shape)
        c = max(1, round(channels * width_mult))
        self.stem = nn.Sequential(*_conv_bn(in_shape[0], c, 3))
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


def build_supernet(
    kind: str, arch: Space, *, in_shape, num_classes: int, mode: str, options=None, widths=None
) -> SuperNet:
    """The supernet of `kind` (`nb201` or `chain`) over the architecture space `arch`;
    `options` are the discrete builder's keywords (`channels`, `cells`, `width_mult`)."""
    shape = {"in_shape": tuple(in_shape), "num_classes": num_classes, "mode": mode}
    if kind == "nb201":
        return NB201Super(arch, **shape, **(options or {}))
    if kind == "chain":
        return ChainSuper(arch, **shape, widths=widths or chain_widths(arch), **(options or {}))
    raise ValueError(f"supernet of {kind!r}: allowed 'nb201' and 'chain'")


def discrete_state(supernet: SuperNet, labels: Mapping) -> dict[str, torch.Tensor]:
    """The state dict of the discrete network `build_model(supernet.config_of(labels))`: the
    weights of the chosen op of every choice."""
    state = {}
    for key, value in supernet.state_dict().items():
        mapped = supernet.discrete_key(key, labels)
        if mapped is not None:
            state[mapped] = value.detach().clone()
    return state
