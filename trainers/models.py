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

import torch
from torch import nn

from spaces import nb201_edge_names
from trainers.blocks import IN_RANKS as IN_RANKS
from trainers.blocks import INPUTS as INPUTS
from trainers.blocks import LAYERS, Add, PruneGroup, between, check_input, conv_bn
from trainers.nb201 import NB201Net


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
            nn.Sequential(*conv_bn(cin, hidden, 1, dims=dims), nn.ReLU6()) if expand > 1 else None
        )
        self.depthwise = nn.Sequential(
            *conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden, dims=dims), nn.ReLU6()
        )
        self.project = nn.Sequential(*conv_bn(hidden, cout, 1, dims=dims))
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
        self.stem = nn.Sequential(*conv_bn(in_shape[0], widths[0], 3, dims=dims), nn.ReLU6())
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
                    hidden = between(
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
        self.pool = nn.Sequential(LAYERS[dims]["pool"](1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)
        self.prune_groups = groups

    def forward(self, x):
        return self.classifier(self.pool(self.blocks(self.stem(x))))


MODELS = {"mlp": MLP, "chain": ChainNet, "nb201": NB201Net}
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


def model_name(arch: Mapping, model: str = "auto") -> str:
    """The builder of `arch`: `model`, or with `auto` the one `infer_model` tells."""
    return infer_model(arch) if model == "auto" else model
