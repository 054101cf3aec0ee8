"""Study results as Parquet part files (one row per report, never rewritten; compacted as they
pile up, see `cluster.study.parts`) read as Arrow."""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cluster.study import parts, storage
from cluster.study.parts import compact as compact
from cluster.study.rows import column, flat
from search.pareto import pareto_front
from spaces import Choice, Float, Int, Space
from spaces.util import write_atomic
from trainers.settings import METRICS

CORE = [
    ("study", pa.string()),
    ("trial", pa.string()),
    ("status", pa.string()),
    ("final", pa.bool_()),
    ("step", pa.int64()),
    ("phase", pa.string()),
    ("epoch", pa.int64()),
    ("time", pa.timestamp("ms", tz="UTC")),
    ("elapsed_s", pa.float64()),
    ("node", pa.string()),
]
# the searcher's pricing (`cluster.study.price`): a row of a config refused on its price
# (`refused`, never trained, no budget used), a trial's ask's pricing calls and seconds, and
# the raw price (before calibration, JSON) of a refused config or of a trial's final row
REFUSED, PRICE = "refused", "price"
PRICING = [
    (REFUSED, pa.bool_()),
    ("price_calls", pa.int64()),
    ("price_s", pa.float64()),
    (PRICE, pa.string()),
]
TAIL = [("records", pa.string()), ("violations", pa.string()), ("error", pa.string())]


def _param_type(param) -> pa.DataType:
    if isinstance(param, Float):
        return pa.float64()
    if isinstance(param, Int):
        return pa.int64()
    options = param.options if isinstance(param, Choice) else ()
    if options and all(isinstance(o, bool) for o in options):
        return pa.bool_()
    if options and all(isinstance(o, int) and not isinstance(o, bool) for o in options):
        return pa.int64()
    if options and all(isinstance(o, int | float) and not isinstance(o, bool) for o in options):
        return pa.float64()
    return pa.string()


def schema(space: Space, metrics: Iterable[str] = ()) -> pa.Schema:
    """Core columns, `config.<key>` typed from the space, one float64 column per metric."""
    config = [(column(k), _param_type(p)) for k, p in space.params.items()]
    names = list(dict.fromkeys([*METRICS, *metrics]))
    return pa.schema(CORE + config + [(m, pa.float64()) for m in names] + PRICING + TAIL)


def _cell(value, kind: pa.DataType):
    if value is None:
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else json.dumps(value, default=str)
    if pa.types.is_floating(kind):
        number = float(value)
        return number if math.isfinite(number) else None
    if pa.types.is_integer(kind):
        return int(value)
    return value


class ResultWriter:
    """Appends rows to `STUDY/results/part-*.parquet`: `add(row)` buffers, `flush()` writes the
    buffer as a new part file (atomically), and `add` flushes on its own every `interval` s.
    With `compact` (the default), a flush that finds `parts.PILE` small parts compacts them."""

    def __init__(
        self,
        study_dir: str | Path,
        schema: pa.Schema,
        *,
        interval: float = 2.0,
        compact: bool = True,
    ):
        self.folder = parts.folder_of(study_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema, self.interval, self.compact = schema, interval, compact
        self.rows: list[dict] = []
        self.last_flush = time.monotonic()

    def add(self, row: Mapping, *, flush: bool = False) -> None:
        cells = {**row, **flat(row.get("config") or {})}
        self.rows.append({f.name: _cell(cells.get(f.name), f.type) for f in self.schema})
        if flush or time.monotonic() - self.last_flush > self.interval:
            self.flush()

    def flush(self) -> None:
        self.last_flush = time.monotonic()
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="snappy" if len(self.rows) > 256 else "none")
        write_atomic(self.folder / parts.part_name(), sink.getvalue().to_pybytes())
        self.rows = []
        storage.changed(self.folder)  # a study on a URI: mirrored soon
        if self.compact:
            try:  # only an optimization: a part another process's compaction just removed,
                parts.compact_if_piled(self.folder.parent)  # or a full disk, waits for the next
            except OSError as error:
                warnings.warn(f"results not compacted this time: {error}", stacklevel=2)


def load(
    study_dir: str | Path,
    *,
    every_step: bool = False,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,
) -> pa.Table:
    """The study's rows: by default one per trial (its final row, or its last row when it never
    finished); `every_step=True` gives every report. `columns` (names) and `filter` (a
    `pyarrow.compute` expression, e.g. `pc.field("status") == "completed"`) are pushed down to
    the Parquet scan; without `every_step` the filter applies to each trial's one row, once
    picked (a trial whose earlier report matched but whose final row does not is left out)."""
    with parts.reading(study_dir) as files:
        dataset = _dataset(study_dir, files, columns)
        if every_step:
            return dataset.to_table(columns=columns, filter=filter)
        wanted = list(columns or dataset.schema.names)
        projection = {name: pc.field(name) for name in [*wanted, "trial", "final"]}
        if filter is not None:
            projection["_match"] = filter
        table = last_rows(dataset.to_table(columns=projection))
    if filter is not None:
        table = table.filter(table["_match"])
    return table.select(wanted)


def batches(
    study_dir: str | Path,
    *,
    every_step: bool = False,
    columns: Sequence[str] | None = None,
    filter: pc.Expression | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """What `load` gives, as its schema and record batches; with `every_step` read lazily, and
    the study's files kept (compaction deletes none) until the batches are exhausted or closed.
    Bad columns or filters raise here, not while iterating."""
    if not every_step:
        table = load(study_dir, columns=columns, filter=filter)
        return table.schema, iter(table.to_batches())
    held = contextlib.ExitStack()
    try:
        files = held.enter_context(parts.reading(study_dir))
        scanner = _dataset(study_dir, files, columns).scanner(columns=columns, filter=filter)
    except BaseException:
        held.close()
        raise

    def stream():
        with held:
            yield from scanner.to_batches()

    return scanner.projected_schema, stream()


def column_names(study_dir: str | Path) -> list[str]:
    """The columns of the study's rows (none before its first part is written)."""
    with parts.reading(study_dir) as files:
        return parts.open_dataset(files).schema.names if files else []


def _dataset(study_dir, files: list[Path], columns) -> ds.Dataset:
    if not files:
        folder = parts.folder_of(study_dir)
        raise ValueError(f"no results under {str(folder)!r}: is this a study folder?")
    dataset = parts.open_dataset(files)
    unknown = [c for c in columns or () if c not in dataset.schema.names]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; columns: {dataset.schema.names}")
    return dataset


def last_rows(table: pa.Table) -> pa.Table:
    """Per trial, its final row when it has one, else its latest, in trial order."""
    ranked = table.append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    final = pc.fill_null(ranked["final"], False)
    ranked = ranked.append_column("_final", pc.cast(final, pa.int64()))
    order = ranked.sort_by([("trial", "ascending"), ("_final", "ascending"), ("_row", "ascending")])
    trials = order["trial"].to_pylist()
    keep = [i for i in range(len(trials)) if i + 1 == len(trials) or trials[i + 1] != trials[i]]
    chosen = order.take(pa.array(keep, pa.int64())).drop_columns(["_row", "_final"])
    return sort_rows(chosen, "trial")


def sort_rows(table: pa.Table, column: str, *, descending: bool = False) -> pa.Table:
    """`table` sorted by `column`; trial ids in number order (`2` before `10`)."""
    order = "descending" if descending else "ascending"
    if column != "trial":
        return table.sort_by([(column, order)])
    keys = [trial_key(t) for t in table["trial"].to_pylist()]
    ranked = sorted(range(len(keys)), key=keys.__getitem__, reverse=descending)
    return table.take(pa.array(ranked, pa.int64()))


def trial_key(trial: str | None) -> tuple:
    """Sorts trial ids as numbers, other ids after them as text."""
    trial = trial or ""
    return (0, int(trial), "") if trial.isdigit() else (1, 0, trial)


def pareto(table: pa.Table, objectives: Mapping[str, str] | Sequence[tuple[str, str]]) -> pa.Table:
    """The rows no other row dominates over `objectives` (`{metric: "max" | "min"}`), among the
    completed final rows."""
    pairs = list(objectives.items() if isinstance(objectives, Mapping) else objectives)
    for metric, mode in pairs:
        if metric not in table.column_names:
            raise ValueError(f"no column {metric!r}; columns: {table.column_names}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode of {metric!r} must be 'max' or 'min', got {mode!r}")
    mask = pc.equal(table["status"], "completed")
    for metric, _ in pairs:
        mask = pc.and_(mask, pc.is_valid(table[metric]))
    candidates = table.filter(mask)
    rows = candidates.select([m for m, _ in pairs]).to_pylist()
    for i, row in enumerate(rows):
        row["_index"] = i
    front = pareto_front(rows, [m for m, _ in pairs], [mode for _, mode in pairs])
    keep = sorted(r["_index"] for r in front)
    return candidates.take(pa.array(keep, pa.int64()))
