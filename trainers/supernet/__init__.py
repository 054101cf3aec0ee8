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

from spaces import Space
from trainers.supernet.base import MODES, SuperNet, mixed
from trainers.supernet.chain import ChainSuper, chain_widths
from trainers.supernet.nb201 import NB201Super

__all__ = ["MODES", "ChainSuper", "NB201Super", "SuperNet", "build_supernet", "chain_widths"]
__all__ += ["discrete_state", "mixed"]


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
