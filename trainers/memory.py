"""Peak activation memory: the most bytes of activations a model holds at once while it runs one
sample, the RAM constraint of microcontroller search (uNAS, MCUNet); weights live in flash and
are not counted.

The rule. The model runs as its `torch.fx` graph, operation by operation in execution order, at
batch 1. Each operation writes its output into a buffer of `numel * bytes_per_element` bytes; a
buffer is live from the operation that writes it through the last operation that reads it (the
model's input from the start, its output to the end). Two kinds of operations write no new
buffer: views (`nn.Identity`, `nn.Flatten`, `flatten`/`view`/`reshape`) share their input's, and
elementwise operations (batch norms, activations, additions, scalings) write over an input of
their size that no later operation reads, taking a new buffer only when every input is still
needed (ONNX Runtime's memory planner reuses a buffer so; batch norms and activations are fused
into their convolutions at deployment anyway). Every other operation (convolutions, linears,
pools) takes a new buffer. While an operation runs, its inputs, its output and every earlier
buffer a later operation still reads are live: the input a residual addition still needs, the
nodes of a NAS-Bench-201 cell that later edges read and the running sum of a node. The peak is
the largest such total.

Why `torch.fx`: tracing records every operation, functional ones (`x + y`, `x * 0.0`,
`torch.flatten`) included, with who reads each tensor, so residual inputs are held without the
model describing them; our three builders have static control flow and trace whole. Forward
hooks see only modules, so they would miss an addition written in `forward` (the builders make
theirs `Add` modules, which lets the tests count independently with hooks). A model `torch.fx`
cannot trace raises `ValueError`.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn import functional as F

from trainers.blocks import Add
from trainers.deploy import activation_bits

_VIEW_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten)
_VIEW_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, operator.getitem}
_VIEW_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous"}
_ELEMENTWISE_MODULES = (
    Add,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.Hardtanh,  # ReLU6 too
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Dropout,
)
_ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.sub,
    operator.mul,
    operator.imul,
    operator.truediv,
    operator.neg,
    torch.add,
    torch.sub,
    torch.mul,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    F.relu,
    F.relu6,
    F.hardtanh,
    F.silu,
    F.gelu,
    F.hardswish,
}
_ELEMENTWISE_METHODS = {"add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh"}
_ELEMENTWISE_METHODS |= {f"{name}_" for name in _ELEMENTWISE_METHODS}


def activation_bytes(model: nn.Module) -> int:
    """Bytes per activation element as deployed: the activation quantizers' bits rounded up to
    whole bytes (8 bits: 1, 4 bits: 1, 16 bits: 2), 4 for a float model."""
    return math.ceil(min(activation_bits(model), 32) / 8)


def peak_mem_bytes(model: nn.Module, in_shape, *, bytes_per_element: int | None = None) -> int:
    """The peak activation memory of `model` on one sample of shape `in_shape` (no batch
    dimension), in bytes: `max(live elements) * bytes_per_element` over `memory_profile`. By
    default `bytes_per_element` is `activation_bytes(model)` (the deployed dtype)."""
    if bytes_per_element is None:
        bytes_per_element = activation_bytes(model)
    return max(live for _, live in memory_profile(model, in_shape)) * int(bytes_per_element)


def memory_profile(model: nn.Module, in_shape) -> list[tuple[str, int]]:
    """`(operation, live elements)` for each operation of `model` on one sample, in execution
    order (the rule is the module's docstring): a module's path, or the graph's name for a
    function (`add_1`)."""
    graph = _traced(model, in_shape)
    modules = dict(graph.named_modules())
    nodes = list(graph.graph.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    buffer, start, end, size = {}, {}, {}, {}
    for node in nodes:
        if node.op in ("get_attr", "output"):
            continue
        reads = max((index[user] for user in node.users), default=index[node])
        inputs = [n for n in node.all_input_nodes if n in buffer]
        own = _shared(node, inputs, modules, buffer=buffer, end=end, size=size, at=index[node])
        if own is None:
            own = node
            start[own], end[own], size[own] = index[node], reads, _numel(node)
        buffer[node] = own
        end[own] = max(end[own], reads)
    profile = []
    for node in nodes:
        if node.op in ("call_module", "call_function", "call_method"):
            i = index[node]
            live = sum(size[b] for b in size if start[b] <= i <= end[b])
            profile.append((node.target if node.op == "call_module" else node.name, live))
    return profile


def _shared(node: fx.Node, inputs, modules, *, buffer, end, size, at: int):
    """The buffer `node` writes into when it writes none of its own: a view's input's, or for
    an elementwise operation the buffer of an input of its size no later operation reads."""
    kind = _kind(node, modules)
    if kind == "view" and inputs:
        return buffer[inputs[0]]
    if kind == "elementwise":
        for source in inputs:
            own = buffer[source]
            if end[own] <= at and size[own] == _numel(node):
                return own
    return None


def _kind(node: fx.Node, modules) -> str:
    """`view`, `elementwise` or `new` (an operation that writes a buffer of its own)."""
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, _VIEW_MODULES):
            return "view"
        return "elementwise" if isinstance(module, _ELEMENTWISE_MODULES) else "new"
    if node.op == "call_function":
        if node.target in _VIEW_FUNCTIONS:
            return "view"
        return "elementwise" if node.target in _ELEMENTWISE_FUNCTIONS else "new"
    if node.op == "call_method":
        if node.target in _VIEW_METHODS:
            return "view"
        return "elementwise" if node.target in _ELEMENTWISE_METHODS else "new"
    return "new"  # the model's input


def _numel(node: fx.Node) -> int:
    """Elements of the tensors `node` outputs (0 for anything else: a size, a constant)."""
    meta = node.meta.get("tensor_meta")
    metas = [meta] if isinstance(meta, TensorMetadata) else meta  # a tuple of outputs
    if not isinstance(metas, list | tuple):
        return 0
    return sum(math.prod(m.shape) for m in metas if isinstance(m, TensorMetadata))


class _Tracer(fx.Tracer):
    """Keeps a module with a forward pre-hook (an activation quantizer, `trainers.quantize`)
    whole: traced into, its hook would run on `torch.fx`'s proxies. A quantized `Add` is then
    one operation, elementwise as its addition."""

    def is_leaf_module(self, module: nn.Module, name: str) -> bool:
        return bool(module._forward_pre_hooks) or super().is_leaf_module(module, name)


@torch.no_grad()
def _traced(model: nn.Module, in_shape) -> fx.GraphModule:
    """`model`'s graph with every node's output shape, from one sample in eval mode."""
    try:
        graph = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as error:  # tracing raises many types for data-dependent control flow
        raise ValueError(
            f"peak memory needs a model torch.fx can trace: {type(error).__name__}: {error}"
        ) from error
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        ShapeProp(graph).propagate(torch.zeros(1, *in_shape, device=device))
    finally:
        model.train(was_training)
    return graph
