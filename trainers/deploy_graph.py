"""The ONNX file of a model as it ships (`trainers.deploy.runtime_graph`): the exporter's float
graph made canonical, and for a quantized model rewritten to carry its own quantization, never
recalibrated:

- each quantized weight as its codes (uint8 up to 8 bits, uint16 above: a byte or two a weight,
  whatever the bit width; the levels are the trained ones) and a decoder: linear and symmetric
  codes through `DequantizeLinear` (per channel on axis 0) when the activations are integer,
  else `Cast`, `Sub` (zero point), `Mul` (step); log codes through a table of signed powers of
  two (`Gather`) times each tensor's or channel's scale; binary codes through the table
  `[-1, 1, 0]` times the scale (code 2: a masked weight). A masked weight decodes to exactly 0.
- each activation quantizer at its frozen range: `QuantizeLinear`/`DequantizeLinear` (uint8,
  `Clip`ped to the narrower range below 8 bits), the QDQ pairs ONNX Runtime fuses into integer
  kernels where a layer's input and output are both quantized; above 8 bits the same arithmetic
  in float ops (`Sub`, `Div`, `Round`, `Clip`, `Mul`, `Add`), bit for bit `fake_quantize`'s.

ONNX Runtime folds the constant decoders when it loads the file; the file's bytes are what a
device receives, so `size_bytes` counts them.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from trainers.quantize import (
    QuantSpec,
    act_hooks,
    decode,
    encode,
    layer_pairs,
    mask_of,
    quant_params,
    quantized_layers,
    spec_of,
)

_LAYER_OPS = ("Conv", "Gemm")


class GraphError(ValueError):
    """The exported graph lacks a quantized layer's weight where the rewrite looks for it."""


def canonical(model: onnx.ModelProto) -> None:
    """Undo the exporter's merging of equal initializers (an `Identity` of one for another): the
    file's structure, and so its size, is the architecture's whatever the weights' values (an
    untrained model's equal zero biases would otherwise merge)."""
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in tensors:
            copy = TensorProto()
            copy.CopyFrom(tensors[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            kept.append(node)
    _set_nodes(graph, kept)


def _set_nodes(graph: onnx.GraphProto, nodes: list) -> None:
    del graph.node[:]
    graph.node.extend(nodes)


def quantize_graph(model: onnx.ModelProto, torch_model: nn.Module, *, integer: bool) -> None:
    """Rewrite the float export of quantized `torch_model` in place (see the module's
    docstring); `integer`: its activations are quantized to at most 8 bits."""
    graph = model.graph
    tensors = {t.name: t for t in graph.initializer}
    users = {n.input[1]: n for n in graph.node if n.op_type in _LAYER_OPS and len(n.input) > 1}
    before: dict[int, list] = {}
    for name, layer in quantized_layers(torch_model).items():
        key = f"{name}.weight"
        if key not in users or key not in tensors:
            raise GraphError(
                f"the exported graph has no initializer {key!r} feeding a conv or gemm"
            )
        graph.initializer.remove(tensors[key])
        before[id(users[key])] = _weight(graph, layer, key, integer=integer)
    after = _activations(graph, torch_model, users)
    nodes = [*after.get(None, ())]
    for node in graph.node:
        nodes += [*before.get(id(node), ()), node]
        nodes += [m for out in node.output for m in after.get(out, ())]
    _set_nodes(graph, nodes)


def _activations(graph, torch_model: nn.Module, users: dict) -> dict:
    """The nodes quantizing every hooked activation (`act_hooks`), rewiring its consumers; by
    the tensor they follow (None: a graph input). A tensor quantized at one range is quantized
    once, whoever reads it: a layer and the residual addition that share an input share its
    codes, which ONNX Runtime needs to run the layer producing it on integer kernels."""
    produced = {out for node in graph.node for out in node.output}
    done: dict[tuple, str] = {}
    after: dict[str | None, list] = {}
    for point, hook in act_hooks(torch_model).items():
        for node, index, prefix in _consumers(graph, point, users):
            source = node.input[index]
            key = (source, hook.spec, hook.lo, hook.hi)
            if key not in done:
                nodes, done[key] = _activation(graph, hook.spec, hook.lo, hook.hi, source, prefix)
                after.setdefault(source if source in produced else None, []).extend(nodes)
            node.input[index] = done[key]
    return after


def _consumers(graph, point: str, users: dict) -> list[tuple]:
    """`(node, input index, name prefix)` of each graph node reading quantization point
    `point` (`act_points`): a layer's by its weight, an `Add` module's by its scope (every
    call of it)."""
    if f"{point}.weight" in users:
        return [(users[f"{point}.weight"], 0, f"{point}.input")]
    module, _, index = point.rpartition(".")
    adds = [n for n in graph.node if n.op_type == "Add" and _scope(n.name) == module]
    if not adds:
        raise GraphError(f"the exported graph has no Add node of module {module!r}")
    return [(n, int(index), f"{point}.input" + (f".{k}" if k else "")) for k, n in enumerate(adds)]


def _scope(name: str) -> str:
    """The module path of an exported node from its name (`/blocks/blocks.0/add/Add` ->
    `blocks.0.add`): a container's child is scoped `{container}.{child}`."""
    parts, previous = [], None
    for part in name.split("/")[1:-1]:
        nested = previous is not None and part.startswith(f"{previous}.")
        parts.append(part[len(previous) + 1 :] if nested else part)
        previous = part
    return ".".join(parts)


def _constant(graph: onnx.GraphProto, name: str, value) -> str:
    graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return name


def _weight(graph: onnx.GraphProto, layer: nn.Module, key: str, *, integer: bool) -> list:
    """The nodes decoding `layer`'s weight into `key` from its codes (initializers added)."""
    spec, mask = spec_of(layer), mask_of(layer)
    offset, step = (t.detach().cpu() for t in layer_pairs(layer))
    weight = layer.weight.detach().cpu()
    codes = encode(weight, spec, offset, step)
    channel = (-1,) + (1,) * (weight.dim() - 1) if spec.per_channel else ()
    offset, step = offset.reshape(channel), step.reshape(channel)
    if spec.scheme == "log":  # a masked weight's code is level 0, zero
        return _table(graph, key, codes, _log_levels(spec), offset)
    if spec.scheme == "binary":
        codes = codes if mask is None else torch.where(mask.cpu(), codes, 2)
        return _table(graph, key, codes, np.array([-1.0, 1.0, 0.0], np.float32), -offset)
    zero = torch.round(-offset / step)  # whole (`quant_params`), nearest for an older model
    codes = codes if mask is None else torch.where(mask.cpu(), codes, zero.to(codes.dtype))
    if integer and spec.scheme == "symmetric" and spec.bits <= 8:  # int8, zero point 0
        flat = (-1,) if spec.per_channel else ()  # per axis: 1-D scale and zero point
        signed = _constant(graph, f"{key}.codes", (codes - zero).numpy().astype(np.int8))
        scale = _constant(graph, f"{key}.scale", step.numpy().reshape(flat))
        point = _constant(graph, f"{key}.zero", np.zeros(step.numel(), np.int8).reshape(flat))
        axis = {"axis": 0} if spec.per_channel else {}
        return [helper.make_node("DequantizeLinear", [signed, scale, point], [key], **axis)]
    kind = np.uint8 if spec.bits <= 8 else np.uint16
    stored = _constant(graph, f"{key}.codes", codes.numpy().astype(kind))
    centred = [stored, _constant(graph, f"{key}.zero", zero.numpy())]
    return [
        helper.make_node("Cast", [stored], [f"{key}.float"], to=TensorProto.FLOAT),
        helper.make_node("Sub", [f"{key}.float", centred[1]], [f"{key}.centred"]),
        helper.make_node(
            "Mul", [f"{key}.centred", _constant(graph, f"{key}.step", step.numpy())], [key]
        ),
    ]


def _log_levels(spec: QuantSpec) -> np.ndarray:
    """Each log code's value at scale 1: `sign * 2**-(level - 1)`, level 0 being 0."""
    codes = torch.arange(2**spec.bits)
    one = torch.ones(())
    return decode(codes, spec, one, torch.zeros(())).numpy().astype(np.float32)


def _table(graph, key: str, codes: torch.Tensor, table: np.ndarray, scale) -> list:
    """`table[codes] * scale` into `key`."""
    stored = _constant(graph, f"{key}.codes", codes.numpy().astype(np.uint8))
    levels = _constant(graph, f"{key}.levels", table)
    scale = _constant(graph, f"{key}.scale", scale.numpy().astype(np.float32))
    return [
        helper.make_node("Cast", [stored], [f"{key}.index"], to=TensorProto.INT64),
        helper.make_node("Gather", [levels, f"{key}.index"], [f"{key}.unit"], axis=0),
        helper.make_node("Mul", [f"{key}.unit", scale], [key]),
    ]


def _activation(graph, spec: QuantSpec, lo: float, hi: float, source: str, prefix: str):
    """The nodes quantizing tensor `source` at `[lo, hi]` (frozen), and their output's name."""
    offset, step = quant_params(torch.zeros(()), spec, lo=lo, hi=hi)
    top = 2**spec.bits - 1
    zero = float(-offset / step)
    out = f"{prefix}.quantized"
    if spec.bits <= 8 and abs(zero - round(zero)) < 1e-4 and 0 <= round(zero) <= 255:
        scale = _constant(graph, f"{prefix}.scale", step.numpy().astype(np.float32))
        point = _constant(graph, f"{prefix}.zero", np.uint8(round(zero)))
        nodes = []
        if spec.bits < 8:  # uint8 saturates at 255: the narrower codes' range, in values
            bounds = [offset.numpy(), (offset + top * step).numpy()]
            low, high = (_constant(graph, f"{prefix}.{s}", b) for s, b in zip(("lo", "hi"), bounds))
            nodes.append(helper.make_node("Clip", [source, low, high], [f"{prefix}.clipped"]))
            source = f"{prefix}.clipped"
        return [
            *nodes,
            helper.make_node("QuantizeLinear", [source, scale, point], [f"{prefix}.codes"]),
            helper.make_node("DequantizeLinear", [f"{prefix}.codes", scale, point], [out]),
        ], out
    names = {
        s: _constant(graph, f"{prefix}.{s}", v) for s, v in _float_constants(offset, step, top)
    }
    steps = [
        ("Sub", [source, names["offset"]], "shifted"),
        ("Div", ["shifted", names["step"]], "scaled"),
        ("Round", ["scaled"], "rounded"),
        ("Clip", ["rounded", names["first"], names["top"]], "codes"),
        ("Mul", ["codes", names["step"]], "steps"),
        ("Add", ["steps", names["offset"]], None),
    ]
    local = lambda n: n if n in names.values() or n == source else f"{prefix}.{n}"  # noqa: E731
    return [
        helper.make_node(op, [local(i) for i in inputs], [f"{prefix}.{output}" if output else out])
        for op, inputs, output in steps
    ], out


def _float_constants(offset, step, top: int):
    yield "offset", offset.numpy().astype(np.float32)
    yield "step", step.numpy().astype(np.float32)
    yield "first", np.float32(0.0)
    yield "top", np.float32(top)
