"""The device server: latency measured on the real target, one model at a time.

`paretune device serve` runs on the target. A request carries a model as TorchScript or ONNX
bytes (never pickle), its input shape, batch sizes and repeats; the answer gives, per batch
size, the median, p90 and spread (interquartile range) in milliseconds and the peak resident
memory. Requests wait their turn in a bounded queue ("busy" past it); answers are cached by the
hash of the model and the request.
"""

from __future__ import annotations

import hashlib
import io
import json
import resource
import statistics
import threading
import time
import warnings

import grpc

from cluster.remote import wire
from cluster.remote.device_client import (
    SERVICE,
    DeviceClient,
    DeviceUnreachable,
    RemoteLatency,
    torchscript_bytes,
)
from trainers.settings import LATENCY_REPEATS

FORMATS = ("torchscript", "onnx")
__all__ = [
    "DeviceClient",
    "DeviceService",
    "DeviceUnreachable",
    "RemoteLatency",
    "measure",
    "serve",
    "torchscript_bytes",
]


def _request(header: dict) -> dict:
    shape = wire.field(header, "input_shape", list, check=lambda v: 1 <= len(v) <= 5)
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 4096 for d in shape):
        raise wire.BadMessage(f"input_shape must be 1 to 5 positive integers, got {shape!r}")
    batches = wire.field(header, "batch_sizes", list, default=[1], check=lambda v: 0 < len(v) <= 8)
    if not all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= 1024 for b in batches):
        raise wire.BadMessage(f"batch_sizes must be integers in 1..1024, got {batches!r}")
    return {
        "format": wire.field(header, "format", str, check=lambda v: v in FORMATS),
        "input_shape": shape,
        "batch_sizes": batches,
        "repeats": wire.field(
            header, "repeats", int, default=LATENCY_REPEATS, check=lambda v: 1 <= v <= 1000
        ),
        "warmup": wire.field(header, "warmup", int, default=5, check=lambda v: 0 <= v <= 100),
        "threads": wire.field(header, "threads", int, default=1, check=lambda v: 1 <= v <= 256),
    }


def _load(kind: str, payload: bytes, *, threads: int = 1):
    """A callable `run(batch)` from model bytes; raises `BadMessage` when they are not a model.
    An ONNX model gets one session with `threads` intra- and inter-op threads."""
    if not payload:
        raise wire.BadMessage("no model in the payload")
    if kind == "torchscript":
        import torch

        try:
            with warnings.catch_warnings():  # TorchScript is deprecated; still the safe form
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(io.BytesIO(payload), map_location="cpu").eval()
        except Exception as error:  # torch raises many types for corrupt archives
            raise wire.BadMessage(f"not a TorchScript model: {str(error)[:200]}") from error

        def run(batch):
            with torch.no_grad():
                model(torch.from_numpy(batch))

        return run
    try:
        import onnxruntime
    except ImportError as error:
        raise wire.BadMessage("this device server has no onnxruntime for ONNX models") from error
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise wire.BadMessage(f"not an ONNX model: {str(error)[:200]}") from error
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})


def _reset_peak_memory() -> None:
    """Linux resets the peak resident set size (VmHWM) on this write; elsewhere it stays."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass


def _peak_memory() -> int:
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(run, request: dict) -> list[dict]:
    """Time `run` for every batch size: median, p90 and interquartile spread in ms, and the
    server's peak resident memory in bytes while that batch size ran (Linux resets the peak
    before each; elsewhere it is the process's peak so far)."""
    import numpy as np
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(request["threads"])
    rows = []
    try:
        for batch_size in request["batch_sizes"]:
            _reset_peak_memory()
            batch = np.random.default_rng(0).standard_normal(
                (batch_size, *request["input_shape"]), dtype=np.float32
            )
            times = []
            for i in range(request["warmup"] + request["repeats"]):
                start = time.perf_counter()
                try:
                    run(batch)
                except Exception as error:
                    message = f"the model failed on input {list(batch.shape)}: {str(error)[:200]}"
                    raise wire.BadMessage(message) from error
                if i >= request["warmup"]:
                    times.append(1000.0 * (time.perf_counter() - start))
            quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
            rows.append(
                {
                    "batch_size": batch_size,
                    "median_ms": statistics.median(times),
                    "p90_ms": float(np.percentile(times, 90)),
                    "spread_ms": quartiles[2] - quartiles[0],
                    "peak_memory_bytes": _peak_memory(),
                }
            )
    finally:
        torch.set_num_threads(before)
    return rows


class DeviceService:
    """The handlers, with one measuring lock, a bounded queue and a cache."""

    def __init__(self, *, queue_limit: int = 8):
        self.queue_limit = queue_limit
        self.lock = threading.Lock()
        self.waiting = 0
        self.counter = threading.Lock()
        self.cache: dict[str, list[dict]] = {}

    def measure(self, message: bytes, context: grpc.ServicerContext) -> bytes:
        header, payload = wire.decode(message)
        request = _request(header)
        key = hashlib.sha256(payload + json.dumps(request, sort_keys=True).encode()).hexdigest()
        if key in self.cache:
            return wire.encode({"model_hash": key, "cached": True, "results": self.cache[key]})
        with self.counter:
            if self.waiting >= self.queue_limit:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"busy: {self.waiting} requests queued (limit {self.queue_limit})",
                )
            self.waiting += 1
        try:
            run = _load(request["format"], payload, threads=request["threads"])
            with self.lock:  # one model at a time keeps the timings clean
                rows = measure(run, request)
        finally:
            with self.counter:
                self.waiting -= 1
        if len(self.cache) >= 256:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = rows
        return wire.encode({"model_hash": key, "cached": False, "results": rows})

    def handlers(self) -> dict:
        return {"Measure": self.measure}


def serve(*, host="127.0.0.1", port=0, security=None, queue_limit=8, max_mb=64):
    """Start a device server; returns `(server, port)`."""
    service = DeviceService(queue_limit=queue_limit)
    return wire.serve(
        SERVICE,
        service.handlers(),
        host=host,
        port=port,
        security=security,
        max_message=max_mb << 20,
        workers=queue_limit + 4,
    )
