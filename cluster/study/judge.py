"""Which trials are feasible, decided in one place for every reader: the row the recorder
writes, resume and warm start, the end-of-run front, `paretune results`, plot and the
dashboard. A trial is feasible when its row says `completed` and its measured costs keep every
bound of the study; a `completed` row over a bound (written by code from before trials were
judged after training, or by a trainable that does not judge) is `infeasible`."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from search.objective import Objective

# The final statuses whose metrics are those of a trained model.
TRAINED = ("completed", "infeasible")


def violations(row: Mapping, constraints: Mapping[str, float]) -> dict[str, float]:
    """Each bound of `constraints` that `row`'s measured values break, by its relative excess
    (`search.Objective.violations`, the searcher's own judgement, so a bound on any metric a
    trainable reports counts); a value not measured (None, absent) breaks no bound."""
    measured = {k: row[k] for k in constraints if isinstance(row.get(k), int | float)}
    return Objective.build("-", "max", constraints).violations(measured)


def status_of(row: Mapping, constraints: Mapping[str, float]) -> str | None:
    """`row`'s status as every reader takes it: `infeasible` for a `completed` row over a bound,
    else the status the row says."""
    status = row.get("status")
    if status == "completed" and violations(row, constraints):
        return "infeasible"
    return status


def rejudged(table: pa.Table, constraints: Mapping[str, float]) -> pa.Table:
    """`table` (result rows) with each `status` as `status_of` gives it, and the `violations`
    of a row turned `infeasible` written in."""
    bounded = [c for c in constraints if c in table.column_names]
    if not bounded or "status" not in table.column_names or table.num_rows == 0:
        return table
    rows = table.select(["status", *bounded]).to_pylist()
    over = [violations(r, constraints) if r["status"] == "completed" else {} for r in rows]
    statuses = ["infeasible" if o else r["status"] for r, o in zip(rows, over)]
    table = _replaced(table, "status", pa.array(statuses, pa.string()))
    if "violations" in table.column_names:
        old = table["violations"].to_pylist()
        texts = [json.dumps(o) if o else text for o, text in zip(over, old)]
        table = _replaced(table, "violations", pa.array(texts, pa.string()))
    return table


def feasible(table: pa.Table, constraints: Mapping[str, float], metric: str) -> pa.Table:
    """The rows of `table` that `status_of` calls `completed`, with `metric` measured."""
    if metric not in table.column_names:
        return table.slice(0, 0)
    table = rejudged(table, constraints)
    mask = pc.and_(pc.equal(table["status"], "completed"), pc.is_valid(table[metric]))
    return table.filter(pc.fill_null(mask, False))


def _replaced(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = table.column_names.index(name)
    return table.set_column(index, table.schema.field(name).with_type(values.type), values)
