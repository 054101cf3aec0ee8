"""Study results over the wire: row filters built from Arrow compute functions (never code)
and Arrow record batches cut into messages of a bounded size."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from cluster.remote import wire

OPERATORS = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


def expression(filters, names: list[str]):
    """The expression keeping rows that match every `[column, operator, value]` (operators
    `==`, `!=`, `<`, `<=`, `>`, `>=`), or None; built from Arrow compute functions, so a filter
    can never run code on the server."""
    if not isinstance(filters, list):
        raise wire.BadMessage("field 'filters' must be a list of [column, operator, value]")
    kept = None
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
        kept = term if kept is None else kept & term
    return kept


def messages(schema: pa.Schema, batches: Iterable[pa.RecordBatch], limit: int):
    """The batches re-cut into messages of about `limit` bytes at most (a single row larger than
    that goes alone); at least one message, so the schema always arrives."""
    pending, size, sent = [], 0, False
    for batch in batches:
        rows = max(1, int(batch.num_rows * limit / 2 / max(batch.nbytes, 1)))
        for start in range(0, batch.num_rows, rows):
            piece = batch.slice(start, rows)
            if pending and size + piece.nbytes > limit // 2:
                yield message(schema, pending)
                pending, size, sent = [], 0, True
            pending.append(piece)
            size += piece.nbytes
    if pending or not sent:
        yield message(schema, pending)


def message(schema: pa.Schema, batches: list[pa.RecordBatch]) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    rows = sum(b.num_rows for b in batches)
    return wire.encode({"rows": rows}, sink.getvalue().to_pybytes())
