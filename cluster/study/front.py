"""A study's Pareto front as a chart lays it out (the first objective against a cost, the
study's bound, axis limits that keep outliers on the edge): drawn by `paretune plot` and the
dashboard alike."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.study import judge, results
from cluster.study.rows import column

COSTS = ("latency_ms", "size_bytes", "macs")
# A trial compresses its model when any of these is on in its config.
SWITCHES = ("prune", "neuron_prune", "weight_prune", "quantize", "distill")
FENCE = 3.0  # points beyond this many interquartile ranges of the quartiles sit on the edge
PERCENT = ("val_acc", "test_acc")  # metrics in percent: their axes end at 100


def compressed(table) -> list[bool]:
    """Per row, whether its config switches on a compression technique."""
    names = [column(f"compress.{s}") for s in SWITCHES]
    columns = [name for name in names if name in table.schema.names]
    rows = table.select(columns).to_pylist()
    return [any(bool(v) for v in row.values()) for row in rows]


def axis_limits(values, *, percent: bool = False) -> tuple[float, float, int]:
    """`(low, high, off)`: a range holding every value within `FENCE` interquartile ranges of
    the quartiles (Tukey's far-out fence), so one diverged or failed-slow trial does not squash
    the rest, and how many values lie outside it. Values all alike get a range of 2% of their
    size around them; a `percent` range stays within 0..100."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return (0.0, 100.0, 0) if percent else (0.0, 1.0, 0)
    q1, q3 = np.percentile(values, [25, 75])
    spread = max(q3 - q1, 1e-9 * max(abs(q3), 1.0))
    inside = values[(values >= q1 - FENCE * spread) & (values <= q3 + FENCE * spread)]
    low, high = float(inside.min()), float(inside.max())
    pad = 0.05 * (high - low) if high > low else 0.01 * (abs(high) or 100.0)
    low, high = low - pad, high + pad
    if percent:
        low, high = max(low, 0.0), min(high, 100.0)
    return low, high, int(values.size - inside.size)


def front_layout(table, study, cost: str) -> dict | None:
    """What `front-<cost>.png` draws: the trained trials split by whether they compress, the
    Pareto front of the first objective against `cost` among the feasible ones (as
    `cluster.study.judge` decides), the study's bound on `cost` (None without one), and axis
    limits that keep outliers on the edge. None when no feasible trial has the cost."""
    metric, mode = study.objectives[0]
    judged = judge.rejudged(table, study.constraints)
    feasible = judge.feasible(judged, study.constraints, metric)
    if cost == metric or feasible.num_rows == 0 or feasible[cost].null_count == feasible.num_rows:
        return None
    done = judged.filter(pc.is_in(judged["status"], pa.array(judge.TRAINED)))
    points = list(zip(done[cost].to_pylist(), done[metric].to_pylist(), compressed(done)))
    points = [p for p in points if None not in p[:2]]
    front = results.pareto(feasible, [(metric, mode), (cost, "min")]).sort_by(cost)
    bound = study.constraints.get(cost)
    costs = [p[0] for p in points] + ([bound] if bound else [])
    x_low, x_high, x_off = axis_limits(costs)
    y_low, y_high, y_off = axis_limits([p[1] for p in points], percent=metric in PERCENT)
    return {
        "metric": metric,
        "compressed": [(x, y) for x, y, c in points if c],
        "uncompressed": [(x, y) for x, y, c in points if not c],
        "front": list(zip(front[cost].to_pylist(), front[metric].to_pylist())),
        "bound": bound,
        "xlim": (max(x_low, 0.0), x_high),
        "ylim": (y_low, y_high),
        "off_axis": x_off + y_off,
    }
