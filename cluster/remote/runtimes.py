"""The device server's two ways to run a submitted model.

- ONNX (the default, and the only format a server takes without `--allow-torchscript`): a graph,
  not code. It is parsed, refused when a tensor's data lives in an outside file (it would name a
  file on the server), checked with `onnx.checker.check_model` and run in-process by ONNX
  Runtime on the CPU with the request's thread count, no memory arena, and a terminate flag
  that the measurement's timeout sets.
- TorchScript: code (a scripted `forward` can call `torch.from_file` and write through it). It
  is only loaded in a child process (`python -m cluster.remote.runtimes`) that first limits its
  own address space, CPU time and file writes (`resource.setrlimit`), and is killed past the
  timeout. The limits bound resources, not what the code may read or change: the flag is for
  a server whose clients are trusted.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
import sys
import tempfile
import warnings

from cluster.remote import timing, wire

BASE_MEMORY = 2 << 30  # the child's address space before the request's budget (torch itself)
START_S = 60.0  # the child's allowance for starting Python and importing torch


class OnnxModel:
    """`OnnxModel(payload, threads=1)(batch)` runs one batch; `stop()` ends a run under way."""

    def __init__(self, payload: bytes, *, threads: int = 1):
        try:
            import onnx
            import onnxruntime
        except ImportError as error:
            raise wire.BadMessage("this device server has no onnx/onnxruntime") from error
        self.model = _checked(onnx, payload)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.enable_cpu_mem_arena = False  # memory goes back after each request
        try:
            self.session = onnxruntime.InferenceSession(
                payload, options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise wire.BadMessage(f"ONNX Runtime refused the model: {str(error)[:200]}") from error
        self.name = self.session.get_inputs()[0].name
        self.options = onnxruntime.RunOptions()

    def __call__(self, batch) -> None:
        self.session.run(None, {self.name: batch}, self.options)

    def stop(self) -> None:
        self.options.terminate = True


def _checked(onnx, payload: bytes):
    """The parsed model, after the external-data refusal and the ONNX checker."""
    if not payload:
        raise wire.BadMessage("no model in the payload")
    try:
        model = onnx.load_model_from_string(payload)
    except Exception as error:  # protobuf raises its own DecodeError
        raise wire.BadMessage(f"not an ONNX model: {str(error)[:200]}") from error
    outside = [t.name for t in _tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if outside:
        raise wire.BadMessage(
            f"tensors {outside[:5]} keep their data in outside files: a device server takes "
            "only self-contained ONNX models (onnx.save without external data)"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # ValidationError, or a model the checker cannot read
        raise wire.BadMessage(f"the ONNX checker refused the model: {str(error)[:300]}") from error
    return model


def _tensors(model):
    """Every tensor of the model: initializers and attributes, in subgraphs and functions."""
    graphs, nodes = [model.graph], [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes.extend(graph.node)
            continue
        for attribute in nodes.pop().attribute:
            yield from [attribute.t, *attribute.tensors]
            graphs.extend([attribute.g, *attribute.graphs])


def torchscript_in_child(payload: bytes, request: dict, *, timeout_s: float, memory: int):
    """The rows of `timing.measure` for a TorchScript model, measured in a child process limited
    to `memory` bytes (over a base for torch) and the timeout in CPU and wall time."""
    limits = [str(BASE_MEMORY + memory), str(int(timeout_s + START_S))]
    message = wire.encode({"request": request, "timeout_s": timeout_s}, payload)
    with tempfile.TemporaryDirectory(prefix="paretune-device-") as folder:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "cluster.remote.runtimes", *limits],
                input=message,
                capture_output=True,
                cwd=folder,
                timeout=timeout_s + START_S,
            )
        except subprocess.TimeoutExpired:
            raise wire.OverLimit(
                f"the TorchScript measurement ran past the server's timeout of {timeout_s:g} s "
                "(--timeout-s) and was killed"
            ) from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no reason"]
        raise wire.OverLimit(
            f"the TorchScript child process ended with code {done.returncode} under its limits "
            f"(memory {memory} bytes over a {BASE_MEMORY} base, {limits[1]} s of CPU): "
            f"{reason[0][:200]}"
        ) from None
    if "error" in answer:
        kind = wire.OverLimit if answer["error"] == "limit" else wire.BadMessage
        raise kind(answer["message"])
    return answer["results"]


def _child(memory: int, cpu_s: int) -> dict:
    """In the child: limit this process, then load and time the model read from stdin."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    header, payload = wire.decode(sys.stdin.buffer.read())
    import torch

    request = header["request"]
    torch.set_num_threads(request["threads"])
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(io.BytesIO(payload), map_location="cpu").eval()
    except Exception as error:  # torch raises many types for corrupt archives
        raise wire.BadMessage(f"not a TorchScript model: {str(error)[:200]}") from error

    def run(batch):
        with torch.no_grad():
            model(torch.from_numpy(batch))

    return {"results": timing.measure(run, request, timeout_s=header["timeout_s"])}


if __name__ == "__main__":
    try:
        answer = _child(int(sys.argv[1]), int(sys.argv[2]))
    except wire.BadMessage as error:
        answer = {"error": "bad", "message": str(error)}
    except (wire.OverLimit, MemoryError) as error:
        answer = {"error": "limit", "message": str(error) or "out of memory under the limit"}
    sys.stdout.write(json.dumps(answer))
