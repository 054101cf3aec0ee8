"""The study service: ask/tell, state and results of a study for workers outside Ray.

`paretune serve STUDY` exposes one study. Telling through it while `paretune run` runs the same
study loses and duplicates nothing: both go through `StudyStore`, which takes an exclusive lock
on the study folder around every change to the searcher's state and reloads the state another
process saved. Results stream back as gRPC messages of a few Arrow IPC record batches each
(under `chunk_bytes`, however many rows there are), filtered and projected in the Parquet scan
on the server.

Every trial handed out by `Ask` holds a lease of `lease_s`: a `Heartbeat` or its `Tell` renews
or ends it. A trial whose lease ran out is failed (with the error "lease expired") or, with
`on_expiry="requeue"`, handed to the next `Ask` under the same id, so a dead client never holds
the budget. Leases are kept by this process, checked at every call: a restarted server leases
again only the pending trials a client heartbeats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pyarrow as pa

from cluster.remote import tables, wire
from cluster.remote.device_client import bound
from cluster.remote.leases import EXPIRIES, Leases
from cluster.remote.service_client import SERVICE, StudyClient, StudyError
from cluster.study import results, warm
from cluster.study.errors import ConfigError
from cluster.study.price import AskLater, ask_within_refusals, refusal_rows, stopped, study_price
from cluster.study.resume import load_study, make_searcher
from cluster.study.rows import make_row
from cluster.study.store import StudyStore
from search import Exhausted, NothingFits

__all__ = [
    "SERVICE",
    "StudyClient",
    "StudyError",
    "StudyService",
    "serve",
]  # the client re-exported


class StudyService:
    """Handlers over one study folder."""

    def __init__(
        self, folder, *, chunk_bytes=1 << 20, lease_s=300.0, on_expiry="fail", clock=time.monotonic
    ):
        if on_expiry not in EXPIRIES:
            raise ValueError(f"on_expiry must be one of {list(EXPIRIES)}, got {on_expiry!r}")
        self.leases, self.on_expiry = Leases(lease_s, clock=clock), on_expiry
        self.requeued: list[str] = []  # expired trials for the next asks (on_expiry="requeue")
        self.lapsed: set[str] = set()  # trials failed by their lease
        self.study = load_study(folder)
        price = study_price(self.study, settings=bound(self.study))  # priced here, on the driver
        self.store = StudyStore(folder, make_searcher(self.study, price=price))
        names = self.store.searcher.objective.names
        self.writer = results.ResultWriter(folder, results.schema(self.study.space(), names))
        self.folder, self.chunk_bytes = folder, chunk_bytes

    def _named(self, header: dict) -> None:
        name = wire.field(header, "study", str)
        if name != self.study.name:
            raise LookupError(f"unknown study {name!r}; this server has {self.study.name!r}")

    def _sweep(self, searcher) -> None:
        """Fail or requeue the pending trials whose lease ran out (under the store's lock)."""
        for trial in self.leases.expired():
            if trial not in searcher.pending:
                continue  # told meanwhile, through another process
            if self.on_expiry == "requeue":
                self.requeued.append(trial)
                continue
            config = searcher.pending[trial]
            error = f"lease expired: no heartbeat or tell for {self.leases.lease_s:g} s"
            record = searcher.tell(trial, None)
            self._write(trial, config, record["status"], {"error": error}, node="service:lease")
            self.lapsed.add(trial)

    def _write(self, trial: str, config: dict, status: str, values: dict, *, node: str) -> None:
        row = make_row(
            values, study=self.study.name, trial=trial, status=status, config=config, final=True
        )
        self.writer.add({**row, "node": node}, flush=True)

    def _answer(self, trial: str, config: dict) -> bytes:
        lease_s = self.leases.grant(trial)
        return wire.encode({"trial_id": trial, "config": config, "lease_s": lease_s})

    def ask(self, message: bytes, context) -> bytes:
        header, _ = wire.decode(message)
        self._named(header)
        with self.store.locked() as searcher:
            self._sweep(searcher)
            while self.requeued:  # a dead client's trial, asked again under its id
                trial = self.requeued.pop(0)
                if trial in searcher.pending:
                    return self._answer(trial, searcher.pending[trial])
            taken = warm.counted(searcher, self.folder)  # warm rows are free
            if taken >= self.study.trials:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the study's budget of {self.study.trials} trials is taken",
                )
            code = grpc.StatusCode.FAILED_PRECONDITION
            try:  # its refusals are kept: an abort comes after the block
                trial = ask_within_refusals(
                    searcher, asked=taken, study=self.study, refused=self._refused
                )
            except AskLater as error:
                code, why = grpc.StatusCode.UNAVAILABLE, f"nothing fit yet, ask again: {error}"
            except NothingFits as error:
                why = str(stopped(error, study=self.study))
            except ConfigError as error:  # too many refusals a trial
                why = str(error)
            except Exhausted as error:
                why = (
                    f"the searcher has no configuration left ({error}); "
                    f"{taken} of the study's {self.study.trials} trials were asked"
                )
            else:
                return self._answer(trial.id, trial.config)
        context.abort(code, why)

    def _refused(self, refused) -> None:
        """An ask's refusals on price, as rows (before the searcher's state holds them)."""
        rows = refusal_rows(refused, study=self.study, node="service")
        for row in rows:
            self.writer.add(row)
        if rows:
            self.writer.flush()  # one part for the ask's refusals

    def heartbeat(self, message: bytes, context) -> bytes:
        header, _ = wire.decode(message)
        self._named(header)
        trial = wire.field(header, "trial_id", str)
        with self.store.locked() as searcher:
            self._sweep(searcher)
            self._pending(searcher, trial)
            if trial in self.requeued:  # its client was late, not dead: it keeps the trial
                self.requeued.remove(trial)
            return wire.encode({"trial_id": trial, "lease_s": self.leases.grant(trial)})

    def _pending(self, searcher, trial: str) -> None:
        if trial not in searcher.pending:
            why = (
                f" (its lease of {self.leases.lease_s:g} s expired)" if trial in self.lapsed else ""
            )
            raise LookupError(f"trial {trial!r} is not pending in study {self.study.name!r}{why}")

    def tell(self, message: bytes, context) -> bytes:
        header, _ = wire.decode(message)
        self._named(header)
        trial = wire.field(header, "trial_id", str)
        metrics = header.get("metrics")
        if metrics is not None and not isinstance(metrics, dict):
            raise wire.BadMessage("field 'metrics' must be an object of numbers, or null")
        for key, value in (metrics or {}).items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise wire.BadMessage(f"metric {key!r} must be a number, got {value!r}")
        status = header.get("status")
        if status not in (None, "stopped", "infeasible"):
            raise wire.BadMessage(f"status must be null, 'stopped' or 'infeasible', got {status!r}")
        with self.store.locked() as searcher:
            self._sweep(searcher)
            self._pending(searcher, trial)
            config = searcher.pending[trial]
            try:
                record = searcher.tell(trial, metrics, **({"status": status} if status else {}))
            except ValueError as error:  # e.g. the metrics lack an objective
                raise wire.BadMessage(str(error)) from error
            self.leases.release(trial)
            values = {**(metrics or {}), results.PRICE: record.get("price")}  # its raw price
            self._write(trial, config, record["status"], values, node=f"service:{context.peer()}")
        return wire.encode({"status": record["status"]})

    def state(self, message: bytes, context) -> bytes:
        header, _ = wire.decode(message)
        self._named(header)
        with self.store.locked() as searcher:
            self._sweep(searcher)
            summary = {
                "study": self.study.name,
                "trials": self.study.trials,
                "lease_s": self.leases.lease_s,
                "finished": searcher.trained() - warm.count(self.folder),  # budget's
                "pending": sorted(searcher.pending),
                "objectives": [list(o) for o in self.study.objectives],
                "front": [
                    {"trial_id": o["id"], "config": o["config"], "metrics": o["metrics"]}
                    for o in searcher.front()
                ],
            }
        return wire.encode(summary)

    def results(self, message: bytes, context) -> Iterator[bytes]:
        header, _ = wire.decode(message)
        self._named(header)
        every = wire.field(header, "every_step", bool, default=False)
        names = results.column_names(self.folder)
        columns = header.get("columns")
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise wire.BadMessage("field 'columns' must be a list of column names")
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise wire.BadMessage(f"unknown columns {unknown}")
        filters = header.get("filters") or []
        expression = tables.expression(filters, names)
        if not names:  # no results yet
            return iter([tables.message(pa.schema([]), [])])
        try:
            schema, batches = results.batches(
                self.folder, every_step=every, columns=columns, filter=expression
            )
        except pa.ArrowException as error:  # e.g. a text column compared with a number
            raise wire.BadMessage(f"filters {filters}: {error}") from error
        return tables.messages(schema, batches, self.chunk_bytes)

    def handlers(self) -> dict:
        return {
            "Ask": self.ask,
            "Tell": self.tell,
            "Heartbeat": self.heartbeat,
            "State": self.state,
            "Results": wire.Streaming(self.results),
        }


def serve(folder, *, host="127.0.0.1", port=0, security=None, max_mb=4, chunk_bytes=None, **leases):
    """Start the study service for `folder`; returns `(server, port)`. `Results` answers in
    messages of about `chunk_bytes` at most (default a quarter of `max_mb`); `leases` are
    `StudyService`'s `lease_s` and `on_expiry`."""
    chunk_bytes = chunk_bytes or (max_mb << 20) // 4
    service = StudyService(folder, chunk_bytes=chunk_bytes, **leases)
    return wire.serve(
        SERVICE,
        service.handlers(),
        host=host,
        port=port,
        security=security,
        max_message=max_mb << 20,
    )
