"""What the dashboard's JSON answers hold, built from a `StudyFeed`: small and aggregated (a
page of the trial grid, a sample of the points behind a front), so a 10,000-trial study
paints as fast as a small one."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from cluster.study import judge, results
from cluster.study.front import COSTS, front_layout
from cluster.study.resume import INTERRUPTED
from cluster.study.rows import config_columns, config_of, resolve, short_name
from trainers.settings import METRICS

STATUSES = ("running", "completed", "failed", "stopped", "infeasible", INTERRUPTED)
CURVES = ("val_acc", "train_loss", "test_acc")
POINTS = 2000  # trials drawn behind a front at most (the front itself is always whole)
MAX_PAGE = 500
OPERATORS = {
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
    "=": pc.equal,
    "==": pc.equal,
    "!=": pc.not_equal,
}


class NotFound(LookupError):
    """A study, trial or address that does not exist."""


CONDITION = re.compile(r"^\s*([\w.]+)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*$")


def summary(feed) -> dict:
    """The study's name, objectives, bounds, trials by status and its best feasible trial."""
    study, table = feed.study, feed.tables.latest
    counts = {}
    if table is not None:
        tally = pc.value_counts(pc.fill_null(table["status"], "unknown"))
        counts = {item["values"]: item["counts"] for item in tally.to_pylist()}
    return {
        "name": study.name,
        "dir": str(feed.folder),
        "objectives": [list(pair) for pair in study.objectives],
        "constraints": dict(study.constraints),
        "trials": 0 if table is None else table.num_rows,
        "counts": counts,
        "best": None if table is None else best_trial(table, study),
        "version": feed.version,
    }


def feasible(table: pa.Table, study) -> pa.Table:
    """The rows `judge.feasible` keeps under the study's bounds, with its first objective."""
    return judge.feasible(table, study.constraints, study.objectives[0][0])


def best_trial(table: pa.Table, study) -> dict | None:
    metric, mode = study.objectives[0]
    kept = feasible(table, study)
    if kept.num_rows == 0:
        return None
    order = "descending" if mode == "max" else "ascending"
    row = kept.sort_by([(metric, order)]).slice(0, 1).to_pylist()[0]
    return {"trial": row["trial"], "metric": metric, "value": row[metric]}


def trials_page(feed, *, sort="trial", desc=False, status=None, where=None, offset=0, limit=50):
    """One page of the trial grid (one row per trial) after the status and `where` filters
    (`val_acc > 90 and config.arch.layers = 2`), sorted by any column."""
    table = feed.tables.latest
    if table is None:
        return {"columns": [], "rows": [], "total": 0, "offset": 0}
    columns = shown_columns(table, feed.study)
    if status:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {list(STATUSES)}, got {status!r}")
        table = table.filter(pc.equal(table["status"], status))
    if where:
        table = table.filter(pc.fill_null(condition(table, where), False))
    sort = resolve(sort, table.column_names, what="sort")
    table = results.sort_rows(table, sort, descending=desc)
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit must be 1..{MAX_PAGE} and offset >= 0, got {limit}, {offset}")
    page = table.slice(offset, limit).select(columns).to_pylist()
    rows = [[row[c] for c in columns] for row in page]
    names = [short_name(c, table.column_names) for c in columns]  # as `paretune results` prints
    return {"columns": columns, "names": names, "rows": rows, "total": table.num_rows} | {
        "offset": offset
    }


def shown_columns(table: pa.Table, study) -> list[str]:
    """Trial, status, the objectives, the metrics any trial has, step, time and the config."""
    first = ["trial", "status", *(m for m, _ in study.objectives)]
    metrics = [m for m in (*METRICS, "step", "elapsed_s") if m not in first]
    config = config_columns(table.column_names)
    present = [c for c in metrics + config if c in table.column_names]
    return first + [c for c in present if table[c].null_count < table.num_rows]


def condition(table: pa.Table, where: str) -> pa.ChunkedArray:
    """`COLUMN OP VALUE [and ...]` as a mask; OP one of < <= > >= = != ; COLUMN any name
    `cluster.study.rows.resolve` takes (`s0_width`, `arch.s0_width`, `config.arch.s0_width`)."""
    mask = None
    for part in re.split(r"\s+and\s+", where.strip(), flags=re.IGNORECASE):
        match = CONDITION.match(part)
        if not match:
            raise ValueError(
                f"filter {part!r}: write COLUMN OP VALUE with OP one of {list(OPERATORS)}, "
                "e.g. 'val_acc > 90' or 'config.compress.quantize = true'"
            )
        name, operator, text = match.groups()
        column = resolve(name, table.column_names, what="filter")
        value = _typed(text, table.schema.field(column).type, column)
        try:
            test = OPERATORS[operator](table[column], value)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
            kind = table.schema.field(column).type
            raise ValueError(f"filter {part!r}: {column} holds {kind}, not {text!r}") from None
        mask = test if mask is None else pc.and_(mask, test)
    return mask


def _typed(text: str, kind: pa.DataType, column: str):
    text = text.strip("'\"")
    if pa.types.is_boolean(kind):
        if text.lower() not in ("true", "false"):
            raise ValueError(f"filter: {column} is true or false, got {text!r}")
        return text.lower() == "true"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"filter: {column} is a number, got {text!r}") from None
    return text


def front(feed, cost: str | None = None) -> dict:
    """The first objective against `cost` (default: the first bounded cost, else the first
    with values) as `cluster.study.front.front_layout` lays it out, with at most `POINTS`
    trials drawn behind the front."""
    table, study = feed.tables.latest, feed.study
    costs = [] if table is None else _costs(table, study.objectives[0][0])
    if cost is not None and cost not in costs:
        raise ValueError(f"cost must be one with values: {costs}, got {cost!r}")
    if cost is None:
        bounded = [c for c in costs if c in study.constraints]
        cost = (bounded or costs or [None])[0]
    if cost is None:
        return {"cost": None, "costs": []}
    layout = dict(front_layout(table, study, cost))
    total = len(layout["compressed"]) + len(layout["uncompressed"])
    for key in ("compressed", "uncompressed"):
        layout[key] = _sample(layout[key], POINTS * len(layout[key]) // max(total, 1))
    return {**layout, "cost": cost, "costs": costs, "trials": total}


def _costs(table: pa.Table, metric: str) -> list[str]:
    """The costs `front_layout` draws: a completed trial has a value."""
    done = table.filter(pc.equal(table["status"], "completed"))
    present = [c for c in COSTS if c in table.column_names and c != metric]
    return [c for c in present if done.num_rows and done[c].null_count < done.num_rows]


def _sample(points: list, most: int) -> list:
    """At most `most` of `points`, evenly spaced, to 6 significant digits (what a chart shows)."""
    stride = max(len(points) / max(most, 1), 1.0)
    kept = [points[int(i * stride)] for i in range(min(len(points), most))]
    return [(float(f"{x:.6g}"), float(f"{y:.6g}")) for x, y in kept]


def best_so_far(feed) -> dict:
    """The best feasible value of the first objective against seconds since the study's first
    report: one point where it improved, and one at the latest report."""
    tables, study = feed.tables, feed.study
    table = tables.latest
    metric, mode = study.objectives[0]
    if table is None or table.num_rows == 0:
        return {"metric": metric, "points": []}
    start = pc.min(tables.steps["time"]).as_py()
    kept = feasible(table, study).sort_by("time")
    points, best = [], None
    for trial, value, when in zip(*(kept[c].to_pylist() for c in ("trial", metric, "time"))):
        if best is None or (value > best if mode == "max" else value < best):
            best = value
            points.append([(when - start).total_seconds(), value, trial])
    end = (pc.max(table["time"]).as_py() - start).total_seconds()
    if points and end > points[-1][0]:
        points.append([end, best, None])
    return {"metric": metric, "mode": mode, "points": points, "finished": kept.num_rows}


def trial_detail(feed, trial: str) -> dict:
    """A trial's learning curve (its reports before the final one), its final metrics, config,
    compression records (long number lists shortened), bound violations and error."""
    tables = feed.tables
    if tables.steps is None:
        raise NotFound(f"no trial {trial!r}: the study has no results yet")
    rows = tables.steps.filter(pc.equal(tables.steps["trial"], trial))
    if rows.num_rows == 0:
        raise NotFound(f"no trial {trial!r} in {feed.study.name}")
    latest = tables.latest.filter(pc.equal(tables.latest["trial"], trial)).to_pylist()[0]
    reports = rows.filter(pc.invert(pc.fill_null(rows["final"], False))).sort_by("step")
    curves = {
        m: reports[m].to_pylist()
        for m in CURVES
        if m in reports.column_names and reports[m].null_count < reports.num_rows
    }
    return {
        "trial": trial,
        "status": latest["status"],
        "config": config_of(latest),
        "metrics": {m: latest[m] for m in METRICS if latest.get(m) is not None},
        "curve": {"step": reports["step"].to_pylist(), "phase": reports["phase"].to_pylist()}
        | {"metrics": curves},
        "records": _brief(_parsed(latest.get("records"), [])),
        "violations": _parsed(latest.get("violations"), {}),
        "error": latest.get("error"),
    }


def _parsed(text, empty):
    if not text:
        return empty
    try:
        return json.loads(text)
    except ValueError:
        return text


def _brief(value, depth: int = 0):
    """JSON with lists over 8 items cut to their first 8 and a count, nesting cut at 4."""
    if isinstance(value, dict):
        if depth >= 4:
            return f"{{{len(value)} keys}}"
        return {k: _brief(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        head = [_brief(v, depth + 1) for v in value[:8]]
        return head + [f"... {len(value) - 8} more"] if len(value) > 8 else head
    return value
