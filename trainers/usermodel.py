"""Filter pruning for a model paretune did not build: any `nn.Module` of standard layers, its
channel coupling found from its `torch.fx` graph. Its costs: `measure` (`trainers.cost`)."""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional

from trainers.blocks import PruneGroup
from trainers.cost import measure as measure

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_SAME_CHANNELS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.ELU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
)
_SAME_OPS = {  # functions and tensor methods that keep channels
    torch.relu,
    functional.relu,
    functional.relu6,
    functional.gelu,
    functional.silu,
    functional.leaky_relu,
    torch.sigmoid,
    torch.tanh,
    functional.dropout,
    functional.max_pool1d,
    functional.max_pool2d,
    functional.avg_pool1d,
    functional.avg_pool2d,
    "relu",
    "sigmoid",
    "tanh",
}
_FLATTENS = {torch.flatten, "flatten", "view", "reshape"}
_GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_GLOBAL_POOL_OPS = {functional.adaptive_avg_pool1d, functional.adaptive_avg_pool2d}


def prune_groups(model: nn.Module) -> list[PruneGroup]:
    """The channels `trainers.prune.prune` may remove from `model`, found in its `torch.fx`
    graph: each conv's filters with the batch norms over them, depthwise convs on the way, and
    the one conv (or, after global pooling and a flatten, the one linear layer) that reads
    them. Sets `model.prune_groups` and returns them. Raises a `ValueError` naming the layer
    whose channels cannot be followed (read by two operations, as by a residual addition or a
    concatenation; flattened with spatial positions; read by an operation not known to keep
    channels), so nothing is pruned from a model this cannot handle."""
    try:
        graph = fx.symbolic_trace(model)
    except Exception as error:  # tracing raises many types for data-dependent control flow
        raise ValueError(
            f"filter pruning of {type(model).__name__} needs a graph torch.fx can trace: "
            f"{type(error).__name__}: {error}"
        ) from error
    modules = dict(graph.named_modules())
    groups = []
    for node in graph.graph.nodes:
        if node.op == "call_module" and _plain_conv(modules[node.target]):
            groups.append(_follow(node, modules, type(model).__name__))
    if not groups:
        raise ValueError(f"filter pruning: {type(model).__name__} has no convolution to prune")
    model.prune_groups = groups
    return groups


def _plain_conv(module) -> bool:
    return isinstance(module, _CONVS) and module.groups == 1


def _follow(conv: fx.Node, modules, model_name: str) -> PruneGroup:
    group = PruneGroup(conv.target, conv.target, out=[conv.target])
    channels, pooled, node = modules[conv.target].out_channels, False, conv

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"filter pruning cannot handle layer {conv.target!r} "
            f"({type(modules[conv.target]).__name__}) of {model_name}: {why}"
        )

    while True:
        users = list(node.users)
        if len(users) != 1:
            what = ", ".join(_name(u) for u in users) or "nothing"
            raise refuse(f"its channels are read by {len(users)} operations ({what})")
        node = users[0]
        if node.op == "output":
            raise refuse("its channels are the model's output")
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, _NORMS):
            group.norm.append(node.target)
        elif isinstance(module, _CONVS) and module.groups == module.in_channels == channels:
            group.depthwise.append(node.target)  # maps each channel to itself
        elif _plain_conv(module) and not pooled:
            group.inp.append(node.target)
            return group
        elif _global_pool(node, module):
            pooled = True
        elif isinstance(module, nn.Flatten) or _target(node) in _FLATTENS:
            if not pooled:
                raise refuse(f"{_name(node)} flattens its channels with spatial positions")
        elif isinstance(module, nn.Linear) and pooled and module.in_features == channels:
            group.inp.append(node.target)
            return group
        elif not (isinstance(module, _SAME_CHANNELS) or _target(node) in _SAME_OPS):
            raise refuse(f"its channels reach {_name(node)}, which is not known to keep them")


def _target(node: fx.Node):
    """A function's or tensor method's target (None for a module)."""
    return node.target if node.op in ("call_function", "call_method") else None


def _global_pool(node: fx.Node, module) -> bool:
    """Pooling to one position per channel (a module, or the function with size 1)."""
    if isinstance(module, _GLOBAL_POOLS):
        return _to_one(module.output_size)
    return _target(node) in _GLOBAL_POOL_OPS and _to_one(node.args[1:2] or (0,))


def _to_one(size) -> bool:
    sizes = size if isinstance(size, tuple | list) else (size,)
    return all(s == 1 or s == (1, 1) for s in sizes)


def _name(node: fx.Node) -> str:
    return repr(node.target) if node.op == "call_module" else node.name
