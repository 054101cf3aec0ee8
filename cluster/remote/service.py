"""The study service: ask/tell, state and results of a study for workers outside Ray.

`paretune serve STUDY` exposes one study. Telling through it while `paretune run` runs the same
study loses and duplicates nothing: both go through `StudyStore`, which takes an exclusive lock
on the study folder around every change to the searcher's state and reloads the state another
process saved. Results stream back as gRPC messages of a few Arrow IPC record batches each
(under `chunk_bytes`, however many rows there are), filtered and projected in the Parquet scan
on the server.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import grpc
import pyarrow as pa
import pyarrow.compute as pc

from cluster.remote import wire
from cluster.remote.service_client import SERVICE, StudyClient, StudyError
from cluster.study import results, warm
from cluster.study.resume import load_study, make_searcher
from cluster.study.rows import make_row
from cluster.study.store import StudyStore
from search.base import Exhausted

__all__ = [
    "SERVICE",
    "StudyClient",
    "StudyError",
    "StudyService",
    "serve",
]  # the client re-exported

OPERATORS = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


class StudyService:
    """Handlers over one study folder."""

    def __init__(self, folder, *, chunk_bytes: int = 1 << 20):
        self.study = load_study(folder)
        self.store = StudyStore(folder, make_searcher(self.study))
        names = self.store.searcher.objective.names
        self.writer = results.ResultWriter(folder, results.schema(self.study.space(), names))
        self.folder, self.chunk_bytes = folder, chunk_bytes

    def _named(self, header: dict) -> None:
        name = wire.field(header, "study", str)
        if name != self.study.name:
            raise LookupError(f"unknown study {name!r}; this server has {self.study.name!r}")

    def ask(self, message: bytes, context) -> bytes:
        header, _ = wire.decode(message)
        self._named(header)
        with self.store.locked() as searcher:
            taken = warm.counted(searcher, self.folder)  # warm rows are free
            if taken >= self.study.trials:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the study's budget of {self.study.trials} trials is taken",
                )
            try:
                trial = searcher.ask()
            except Exhausted as error:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the searcher has no configuration left ({error}); "
                    f"{taken} of the study's {self.study.trials} trials were asked",
                )
        return wire.encode({"trial_id": trial.id, "config": trial.config})

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
            if trial not in searcher.pending:
                raise LookupError(f"trial {trial!r} is not pending in study {self.study.name!r}")
            config = searcher.pending[trial]
            try:
                record = searcher.tell(trial, metrics, **({"status": status} if status else {}))
            except ValueError as error:  # e.g. the metrics lack an objective
                raise wire.BadMessage(str(error)) from error
            row = make_row(
                metrics or {},
                study=self.study.name,
                trial=trial,
                status=record["status"],
                config=config,
                final=True,
                node=f"service:{context.peer()}",
            )
            self.writer.add(row, flush=True)
        return wire.encode({"status": record["status"]})

    def state(self, message: bytes, context) -> bytes:
        header, _ = wire.decode(message)
        self._named(header)
        with self.store.locked() as searcher:
            summary = {
                "study": self.study.name,
                "trials": self.study.trials,
                "finished": len(searcher.observations) - warm.count(self.folder),  # budget's
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
        expression = _expression(filters, names)
        if not names:  # no results yet
            return iter([_message(pa.schema([]), [])])
        try:
            schema, batches = results.batches(
                self.folder, every_step=every, columns=columns, filter=expression
            )
        except pa.ArrowException as error:  # e.g. a text column compared with a number
            raise wire.BadMessage(f"filters {filters}: {error}") from error
        return _messages(schema, batches, self.chunk_bytes)

    def handlers(self) -> dict:
        return {
            "Ask": self.ask,
            "Tell": self.tell,
            "State": self.state,
            "Results": wire.Streaming(self.results),
        }


def _expression(filters, names: list[str]):
    """The expression keeping rows that match every `[column, operator, value]` (operators
    `==`, `!=`, `<`, `<=`, `>`, `>=`), or None; built from Arrow compute functions, so a filter
    can never run code on the server."""
    if not isinstance(filters, list):
        raise wire.BadMessage("field 'filters' must be a list of [column, operator, value]")
    expression = None
    for item in filters:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)):
            raise wire.BadMessage(f"a filter must be [column, operator, value], got {item!r}")
        column, operator, value = item
        if column not in names:
            raise wire.BadMessage(f"filter on unknown column {column!r}")
        if operator not in OPERATORS:
            raise wire.BadMessage(f"filter operator {operator!r}: allowed {list(OPERATORS)}")
        if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise wire.BadMessage(f"filter value {value!r} must be a finite number, text or bool")
        term = OPERATORS[operator](pc.field(column), pa.scalar(value))
        expression = term if expression is None else expression & term
    return expression


def _messages(schema: pa.Schema, batches: Iterable[pa.RecordBatch], limit: int):
    """The batches re-cut into messages of about `limit` bytes at most (a single row larger than
    that goes alone); at least one message, so the schema always arrives."""
    pending, size, sent = [], 0, False
    for batch in batches:
        rows = max(1, int(batch.num_rows * limit / 2 / max(batch.nbytes, 1)))
        for start in range(0, batch.num_rows, rows):
            piece = batch.slice(start, rows)
            if pending and size + piece.nbytes > limit // 2:
                yield _message(schema, pending)
                pending, size, sent = [], 0, True
            pending.append(piece)
            size += piece.nbytes
    if pending or not sent:
        yield _message(schema, pending)


def _message(schema: pa.Schema, batches: list[pa.RecordBatch]) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    rows = sum(b.num_rows for b in batches)
    return wire.encode({"rows": rows}, sink.getvalue().to_pybytes())


def serve(folder, *, host="127.0.0.1", port=0, security=None, max_mb=4, chunk_bytes=None):
    """Start the study service for `folder`; returns `(server, port)`. `Results` answers in
    messages of about `chunk_bytes` at most (default a quarter of `max_mb`)."""
    service = StudyService(folder, chunk_bytes=chunk_bytes or (max_mb << 20) // 4)
    return wire.serve(
        SERVICE,
        service.handlers(),
        host=host,
        port=port,
        security=security,
        max_message=max_mb << 20,
    )
