"""The device server's clients: `DeviceClient` (one request) and `RemoteLatency` (a trial's
latency source, retried while the server is unreachable)."""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import grpc

from cluster.remote import wire
from trainers.settings import LATENCY_REPEATS

SERVICE = "paretune.Device"


class DeviceUnreachable(RuntimeError):
    """The device server did not answer (down, wrong address, or killed mid-request)."""


class DeviceClient:
    """Measures models on a device server: `DeviceClient("host:port").latency(model, shape)`."""

    def __init__(self, address: str, *, token=None, root_cert=None, timeout: float = 120.0):
        self.address = address.removeprefix("remote://")
        self.connection = wire.channel(self.address, token=token, root_cert=root_cert)
        self.timeout = timeout

    def measure_bytes(self, payload: bytes, *, format: str = "torchscript", **request) -> dict:
        message = wire.encode({"format": format, **request}, payload)
        try:
            answer = wire.call(self.connection, SERVICE, "Measure", message, timeout=self.timeout)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise DeviceUnreachable(
                    f"device server at {self.address} is unreachable: {error.details()}"
                ) from error
            raise
        header, _ = wire.decode(answer)
        return header

    def measure(
        self, model, in_shape, *, batch_sizes=(1,), repeats=LATENCY_REPEATS, **request
    ) -> dict:
        """Trace `model` (an `nn.Module`) to TorchScript and measure it on the device, at each
        of `batch_sizes` (the wire's fields keep their names: `input_shape`, `batch_sizes`)."""
        return self.measure_bytes(
            torchscript_bytes(model, in_shape),
            input_shape=list(in_shape),
            batch_sizes=list(batch_sizes),
            repeats=repeats,
            **request,
        )

    def latency(
        self, model, in_shape, *, batch_size=64, repeats=LATENCY_REPEATS, threads=1, onnx=None
    ) -> float:
        """The median latency in milliseconds at one batch size: of `onnx` (an ONNX graph's
        bytes) when given, else of `model` traced to TorchScript."""
        request = {"batch_sizes": [batch_size], "repeats": repeats, "threads": threads}
        if onnx is None:
            answer = self.measure(model, in_shape, **request)
        else:
            answer = self.measure_bytes(onnx, format="onnx", input_shape=list(in_shape), **request)
        return answer["results"][0]["median_ms"]

    def close(self):
        self.connection[0].close()


def torchscript_bytes(model, in_shape) -> bytes:
    import torch

    was_training = model.training
    model = model.eval()
    example = torch.randn(1, *in_shape, device=next(model.parameters()).device)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(model, example, check_trace=False), buffer)
    model.train(was_training)
    return buffer.getvalue()


@dataclass(frozen=True)
class RemoteLatency:
    """A trial's latency source (`latency: remote://host:port` in a study): the median measured
    on the device server, of the runtime's ONNX graph when the trial gives one (`onnx`, under
    `deploy: onnxruntime`), else of the model as TorchScript. Picklable, so it travels to Ray
    workers; connects per call. While the server is unreachable it tries again, waiting 0.5 s,
    then twice as long each time (at most 8 s), for `retry_s` seconds, then raises
    `DeviceUnreachable`."""

    address: str
    token: str | None = None
    retry_s: float = 60.0

    def __call__(self, model, in_shape, *, batch_size, repeats, threads, onnx=None) -> float:
        request = {"batch_size": batch_size, "repeats": repeats, "threads": threads, "onnx": onnx}
        deadline, wait = time.monotonic() + self.retry_s, 0.5
        while True:
            try:
                return self._measure(model, in_shape, request)
            except DeviceUnreachable as error:
                if time.monotonic() + wait > deadline:
                    raise DeviceUnreachable(f"{error} (tried for {self.retry_s:g} s)") from None
            time.sleep(wait)
            wait = min(2 * wait, 8.0)

    def _measure(self, model, in_shape, request: dict) -> float:
        client = DeviceClient(self.address, token=self.token)
        try:
            return client.latency(model, in_shape, **request)
        finally:
            client.close()


def bound(study):
    """`study.trial_settings()` with the study's latency source bound: a device server's
    client for `latency: remote://host:port`, else None (measured where the trial runs)."""
    settings = study.trial_settings()
    source = latency_source(
        study.latency, token_file=study.latency_token_file, retry_s=study.latency_retry_s
    )
    if source is None:
        return settings
    return type(settings).from_flat({**settings.to_flat(), "latency_source": source})


def latency_source(latency: str, *, token_file: str | None = None, retry_s: float = 60.0):
    """A study's `latency` as a trial's latency source: a `RemoteLatency` for
    `remote://host:port` (its token read from `token_file`), None for `local` (measured where
    the trial runs)."""
    if latency == "local":
        return None
    token = token_file and Path(token_file).read_text().strip()
    return RemoteLatency(latency.removeprefix("remote://"), token or None, retry_s=retry_s)
