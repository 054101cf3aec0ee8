"""The study service's client: `StudyClient` asks, tells and reads a study served by
`paretune serve` (`cluster.remote.service`) from a worker outside Ray."""

from __future__ import annotations

import contextlib
import threading

import grpc
import pyarrow as pa

from cluster.remote import wire

SERVICE = "paretune.Study"


class StudyError(RuntimeError):
    """A study service call that failed: `code` is the `grpc.StatusCode`, `details` the
    server's reason (`FAILED_PRECONDITION`: nothing left to ask; `NOT_FOUND`: no such study or
    pending trial; `INVALID_ARGUMENT`: a bad request; `UNAVAILABLE`: no server there, or an
    `ask` for which no config fit the bounds within a pricing budget yet: ask again)."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str | None):
        super().__init__(f"{method} failed ({code.name}): {details}")
        self.code, self.details = code, details


class StudyClient:
    """`StudyClient("host:port", "name").ask()` -> `(trial_id, config)`; `tell`, `state`,
    `results` (a `pyarrow.Table`, put together from streamed messages of `max_mb` at most each).
    A failed call raises `StudyError`; `ask` fails with `FAILED_PRECONDITION` once there is no
    trial to hand out: the budget is taken, or the searcher has no configuration left.

    An asked trial holds a lease (`lease_s`, from the server): `heartbeat(trial_id)` renews
    it, and `with client.running(trial_id): ...` heartbeats every third of the lease while the
    block runs. Past its lease without either, the server fails the trial ("lease expired") or
    hands it to another client."""

    def __init__(
        self, address: str, study: str, *, token=None, root_cert=None, timeout=30.0, max_mb=256
    ):
        self.connection = wire.channel(
            address, token=token, root_cert=root_cert, max_message=int(max_mb * (1 << 20))
        )
        self.study, self.timeout = study, timeout
        self.lease_s = None  # told by the server at the first ask

    def _call(self, method: str, header: dict | None = None) -> tuple[dict, bytes]:
        message = wire.encode({"study": self.study, **(header or {})})
        try:
            answer = wire.call(self.connection, SERVICE, method, message, timeout=self.timeout)
        except grpc.RpcError as error:
            raise StudyError(method, error.code(), error.details()) from None
        return wire.decode(answer)

    def ask(self) -> tuple[str, dict]:
        header, _ = self._call("Ask")
        self.lease_s = header.get("lease_s", self.lease_s)
        return header["trial_id"], header["config"]

    def heartbeat(self, trial_id: str) -> float:
        """Renews the trial's lease; returns its seconds from now."""
        self.lease_s = self._call("Heartbeat", {"trial_id": trial_id})[0]["lease_s"]
        return self.lease_s

    @contextlib.contextmanager
    def running(self, trial_id: str):
        """Heartbeats `trial_id` every third of its lease until the block ends (a heartbeat
        that fails is tried again at the next beat)."""
        done = threading.Event()

        def beat():
            while not done.wait((self.lease_s or self.heartbeat(trial_id)) / 3):
                with contextlib.suppress(StudyError):
                    self.heartbeat(trial_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()

    def tell(self, trial_id: str, metrics: dict | None, *, status: str | None = None) -> str:
        header, _ = self._call("Tell", {"trial_id": trial_id, "metrics": metrics, "status": status})
        return header["status"]

    def state(self) -> dict:
        return self._call("State")[0]

    def results(self, *, every_step=False, filters=(), columns=None) -> pa.Table:
        request = {"every_step": every_step, "filters": [list(f) for f in filters]}
        if columns is not None:
            request["columns"] = list(columns)
        message = wire.encode({"study": self.study, **request})
        try:
            answers = wire.stream(
                self.connection, SERVICE, "Results", message, timeout=self.timeout
            )
            tables = [pa.ipc.open_stream(wire.decode(a)[1]).read_all() for a in answers]
        except grpc.RpcError as error:
            raise StudyError("Results", error.code(), error.details()) from None
        return pa.concat_tables(tables)

    def close(self):
        self.connection[0].close()
