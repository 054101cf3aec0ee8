"""The device server: latency measured on the real target, one model at a time.

`paretune device serve` runs on the target. A request carries a model as ONNX bytes (or, on a
server started with `--allow-torchscript`, TorchScript: see `cluster.remote.runtimes`), its
input shape, batch sizes and repeats; the answer gives, per batch size, the median, p90 and
spread (interquartile range) in milliseconds and the peak resident memory. Before anything is
loaded a request is checked against the server's memory budget (the largest input batch plus
the model); a measurement runs at most `timeout_s`. Requests wait their turn in a bounded queue
("busy" past it) and are loaded and timed one at a time, under one lock; answers are cached by
the hash of the model and the request.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from dataclasses import dataclass

import grpc

from cluster.remote import runtimes, wire
from cluster.remote.device_client import (
    SERVICE,
    DeviceClient,
    DeviceUnreachable,
    RemoteLatency,
    torchscript_bytes,
)
from cluster.remote.timing import measure
from trainers.settings import LATENCY_REPEATS

FORMATS = ("torchscript", "onnx")
__all__ = [
    "DeviceClient",
    "DeviceService",
    "DeviceUnreachable",
    "Limits",
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


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may use: `memory_mb` for its largest input batch (float32) plus the
    model's bytes, `timeout_s` for its measurement, and whether TorchScript (code) is run."""

    memory_mb: int = 1024
    timeout_s: float = 120.0
    allow_torchscript: bool = False

    def check(self, request: dict, payload: bytes) -> None:
        """Raises `wire.Refused` for TorchScript without the flag, `wire.OverLimit` past the
        memory budget; allocates nothing."""
        if request["format"] == "torchscript" and not self.allow_torchscript:
            raise wire.Refused(
                "this device server takes ONNX only: a TorchScript model is code, and runs only "
                "on a server started with --allow-torchscript (which runs submitted code); "
                "send the model as ONNX (format 'onnx')"
            )
        batch = max(request["batch_sizes"])
        need = 4 * batch * math.prod(request["input_shape"]) + len(payload)
        if need > self.memory_mb << 20:
            raise wire.OverLimit(
                f"the request needs {need} bytes (input {request['input_shape']} in float32 at "
                f"batch {batch}, plus a {len(payload)}-byte model): over the server's memory "
                f"budget of {self.memory_mb} MiB (--memory-mb)"
            )


class DeviceService:
    """The handlers, with one lock for loading and timing, a bounded queue and a cache."""

    def __init__(self, *, queue_limit: int = 8, limits: Limits = Limits()):
        self.queue_limit, self.limits = queue_limit, limits
        self.lock = threading.Lock()
        self.waiting = 0
        self.counter = threading.Lock()
        self.cache: dict[str, list[dict]] = {}

    def measure(self, message: bytes, context: grpc.ServicerContext) -> bytes:
        header, payload = wire.decode(message)
        request = _request(header)
        self.limits.check(request, payload)
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
            with self.lock:  # one model at a time, loaded and timed, keeps the timings clean
                rows = self._measure(request, payload)
        finally:
            with self.counter:
                self.waiting -= 1
        if len(self.cache) >= 256:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = rows
        return wire.encode({"model_hash": key, "cached": False, "results": rows})

    def _measure(self, request: dict, payload: bytes) -> list[dict]:
        timeout_s = self.limits.timeout_s
        if request["format"] == "torchscript":
            memory = self.limits.memory_mb << 20
            return runtimes.torchscript_in_child(
                payload, request, timeout_s=timeout_s, memory=memory
            )
        model = runtimes.OnnxModel(payload, threads=request["threads"])
        return measure(model, request, timeout_s=timeout_s)

    def handlers(self) -> dict:
        return {"Measure": self.measure}


def serve(*, host="127.0.0.1", port=0, security=None, queue_limit=8, max_mb=64, limits=Limits()):
    """Start a device server (requests of at most `max_mb` MiB, each within `limits`); returns
    `(server, port)`."""
    service = DeviceService(queue_limit=queue_limit, limits=limits)
    return wire.serve(
        SERVICE,
        service.handlers(),
        host=host,
        port=port,
        security=security,
        max_message=max_mb << 20,
        workers=queue_limit + 4,
    )
