"""The architecture parameters of a supernet and the mixed operation (`trainers.supernet`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from spaces import Space

MODES = ("darts", "gdas")


class SuperNet(nn.Module):
    """The architecture parameters and how they are drawn; a subclass says the `choices_of` an
    architecture space and `build`s the network (`options`: its keywords, `width_mult`, ...)."""

    def __init__(self, arch: Space, *, in_shape, num_classes: int, mode: str, **options):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"supernet mode {mode!r}: allowed {list(MODES)}")
        choices = self.choices_of(arch)
        self.mode, self.tau = mode, 1.0
        self.choices = {name: tuple(labels) for name, labels in choices.items()}
        self.alphas = nn.ParameterDict(
            {
                name: nn.Parameter(1e-3 * torch.randn(len(labels)))
                for name, labels in choices.items()
            }
        )
        self.build(in_shape=tuple(in_shape), num_classes=num_classes, **options)

    def choices_of(self, arch: Space) -> dict[str, tuple]:
        """Each choice's name and labels, from the architecture space `arch`."""
        raise NotImplementedError

    def build(self, *, in_shape: tuple, num_classes: int, **options) -> None:
        """The network's modules, every choice's ops among them (`self.choices` is set)."""
        raise NotImplementedError

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.alphas.parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {name: F.softmax(alpha, dim=-1) for name, alpha in self.alphas.items()}

    def draw(self) -> dict[str, tuple[torch.Tensor, int | None]]:
        """Per choice `(weights, index)`: `index` the one op to run, or None to run them all."""
        drawn = {}
        for name, alpha in self.alphas.items():
            if self.mode == "darts":
                drawn[name] = (F.softmax(alpha, dim=-1), None)
            elif not self.training:
                index = int(alpha.argmax())
                drawn[name] = (F.one_hot(torch.tensor(index), len(alpha)).to(alpha), index)
            else:
                weights = F.gumbel_softmax(alpha, tau=self.tau, hard=True)
                drawn[name] = (weights, int(weights.argmax()))
        return drawn

    def derive(self) -> dict[str, str | int]:
        """Each choice's label of largest `alpha`."""
        return {name: self.choices[name][int(a.argmax())] for name, a in self.alphas.items()}

    def valid(self, labels: Mapping) -> bool:
        """Whether the discrete network of `labels` is a usable one (not cut off from its input)."""
        return True

    @torch.no_grad()
    def set_architecture(self, labels: Mapping) -> None:
        """Make every choice one-hot on `labels[name]` (softmax exactly 1 there, 0 elsewhere)."""
        for name, alpha in self.alphas.items():
            index = self.choices[name].index(labels[name])
            alpha.fill_(-1e9)
            alpha[index] = 0.0


def mixed(ops, x: torch.Tensor, weights: torch.Tensor, index: int | None) -> torch.Tensor:
    """`sum_k weights[k] * ops[k](x)`; with `index`, only that op runs (the others' weights are
    0 and added as scalars, for their gradient, as GDAS does)."""
    if index is None:
        return sum(weights[k] * op(x) for k, op in enumerate(ops))
    out = weights[index] * ops[index](x)
    return out + sum(weights[k] for k in range(len(ops)) if k != index)
