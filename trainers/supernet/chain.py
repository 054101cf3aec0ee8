"""The chain's supernet (`trainers.supernet`): each stage's kernel x expansion and depth mixed."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from spaces import Space
from trainers.blocks import LAYERS, check_input, conv_bn
from trainers.models import InvertedResidual
from trainers.supernet.base import SuperNet, mixed


def _stage_count(arch: Space) -> int:
    return len([n for n in arch.names if n.endswith("_kernel")])


def chain_widths(arch: Space, *, pick: str = "median") -> list:
    """Each stage's held width: its only option, else the `pick` (`min`, `median`, `max`) of
    its options."""
    picks = {
        "min": lambda o: o[0],
        "median": lambda o: o[(len(o) - 1) // 2],
        "max": lambda o: o[-1],
    }
    if pick not in picks:
        raise ValueError(f"chain width pick {pick!r}: allowed {sorted(picks)}")
    return [picks[pick](sorted(arch[f"s{i}_width"].options)) for i in range(_stage_count(arch))]


def _depths(arch: Space, i: int) -> tuple[int, ...]:
    param = arch[f"s{i}_depth"]
    options = getattr(param, "options", None)
    return tuple(options) if options else tuple(range(param.low, param.high + 1))


def _pair(label) -> tuple[int, int]:
    """A block's `(kernel, expand)` from its label `"<kernel>x<expand>"`."""
    kernel, expand = (int(v) for v in str(label).split("x"))
    return kernel, expand


class ChainSuper(SuperNet):
    """`trainers.models.ChainNet` with each stage's kernel x expansion and depth mixed."""

    def choices_of(self, arch: Space) -> dict[str, tuple]:
        choices = {}
        for i in range(_stage_count(arch)):
            kernels, expands = arch[f"s{i}_kernel"].options, arch[f"s{i}_expand"].options
            choices[f"s{i}_block"] = tuple(f"{k}x{e}" for k in kernels for e in expands)
            choices[f"s{i}_depth"] = _depths(arch, i)
        return choices

    def build(self, *, in_shape, num_classes: int, widths: list, width_mult: float = 1.0):
        choices = self.choices
        stages = sum(name.endswith("_block") for name in choices)
        dims = check_input("chain", in_shape)
        self.widths = [int(w) for w in widths]
        scaled = [max(1, round(w * width_mult)) for w in self.widths]
        self.stem = nn.Sequential(*conv_bn(in_shape[0], scaled[0], 3, dims=dims), nn.ReLU6())
        self.stages, cin = nn.ModuleList(), scaled[0]
        for i in range(stages):
            blocks = nn.ModuleList()
            for j in range(max(choices[f"s{i}_depth"])):
                stride = 2 if (j == 0 and i > 0) else 1
                blocks.append(
                    nn.ModuleList(
                        InvertedResidual(
                            cin, scaled[i], stride=stride, kernel=k, expand=e, dims=dims
                        )
                        for k, e in map(_pair, choices[f"s{i}_block"])
                    )
                )
                cin = scaled[i]
            self.stages.append(blocks)
        self.pool = nn.Sequential(LAYERS[dims]["pool"](1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        drawn = self.draw()
        x = self.stem(x)
        for i, blocks in enumerate(self.stages):
            depths = self.choices[f"s{i}_depth"]
            weights, index = drawn[f"s{i}_depth"]
            last = max(depths) if index is None else depths[index]
            outs = {}
            for j in range(last):
                x = mixed(blocks[j], x, *drawn[f"s{i}_block"])
                outs[j + 1] = x
            picks = range(len(depths)) if index is None else [index]
            x = sum(weights[d] * outs[depths[d]] for d in picks)
            if index is not None:
                x = x + sum(weights[d] for d in range(len(depths)) if d != index)
        return self.classifier(self.pool(x))

    def config_of(self, labels: Mapping) -> dict:
        config = {}
        for i, width in enumerate(self.widths):
            kernel, expand = _pair(labels[f"s{i}_block"])
            config |= {f"s{i}_depth": int(labels[f"s{i}_depth"]), f"s{i}_width": width}
            config |= {f"s{i}_kernel": kernel, f"s{i}_expand": expand}
        return config

    def discrete_key(self, key: str, labels: Mapping) -> str | None:
        parts = key.split(".")
        if parts[0] == "alphas":
            return None
        if parts[0] != "stages":
            return key
        stage, block, pair = (int(p) for p in parts[1:4])
        chosen = self.choices[f"s{stage}_block"].index(labels[f"s{stage}_block"])
        depths = [int(labels[f"s{i}_depth"]) for i in range(len(self.stages))]
        if pair != chosen or block >= depths[stage]:
            return None
        return ".".join(["blocks", str(sum(depths[:stage]) + block), *parts[4:]])
