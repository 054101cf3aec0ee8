"""Search spaces: parameters, `Space`, and ready-made spaces. Imports neither torch nor ray."""

from spaces.library import (
    NB201_EDGES,
    NB201_OPS,
    chain,
    compression,
    joint,
    mlp,
    nb201,
    nb201_arch_str,
    nb201_config,
    nb201_edge_names,
    training,
)
from spaces.params import Choice, Float, Int, Param
from spaces.space import Space

__all__ = [
    "NB201_EDGES",
    "NB201_OPS",
    "Choice",
    "Float",
    "Int",
    "Param",
    "Space",
    "chain",
    "compression",
    "joint",
    "mlp",
    "nb201",
    "nb201_arch_str",
    "nb201_config",
    "nb201_edge_names",
    "training",
]
