"""Pareto fronts and hypervolume over result rows (dicts of metrics)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _as_min(rows: Sequence[Mapping], metrics: Sequence[str], modes: Sequence[str]) -> np.ndarray:
    if len(metrics) != len(modes) or any(m not in ("min", "max") for m in modes):
        raise ValueError(f"need one mode ('min' or 'max') per metric; got {metrics} and {modes}")
    for i, row in enumerate(rows):
        missing = [m for m in metrics if m not in row]
        if missing:
            raise ValueError(f"row {i} lacks {missing}; it has {sorted(row)}")
    sign = np.array([1.0 if m == "min" else -1.0 for m in modes])
    return np.array([[float(r[m]) for m in metrics] for r in rows]).reshape(len(rows), -1) * sign


def dominating(points: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Mask of the rows of `points` (shape `(n, d)`, minimized) that dominate `point`."""
    return np.all(points <= point, axis=1) & np.any(points < point, axis=1)


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of the rows of `points` (shape `(n, d)`, minimized) that no other row dominates.

    Equal rows do not dominate each other; a row with a NaN is never dominated and dominates
    nothing. Two objectives take O(n log n), more take O(n^2 d) in vectorized blocks."""
    points = np.asarray(points, dtype=float)
    keep = np.ones(len(points), dtype=bool)
    if len(points) == 0:
        return keep
    points = points.reshape(len(points), -1)
    finite = ~np.isnan(points).any(axis=1)
    rows = points[finite]
    keep[finite] = _sweep_2d(rows) if points.shape[1] == 2 else _blocks(rows)
    return keep


def _sweep_2d(points: np.ndarray) -> np.ndarray:
    """Sort by the first objective, then the second: a row is dominated by the rows before
    its group of equal first values (their best second value is at most its own) or, within
    the group, by its first row (a strictly lower second value)."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    first, second = points[order, 0], points[order, 1]
    starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])
    group = np.cumsum(np.r_[True, first[1:] != first[:-1]]) - 1
    running = np.minimum.accumulate(second)
    before = running[np.maximum(starts - 1, 0)]  # best second value left of each group
    left = (group > 0) & (before[group] <= second)
    dominated = left | (second > second[starts][group])
    keep = np.empty(len(points), dtype=bool)
    keep[order] = ~dominated
    return keep


def _blocks(points: np.ndarray, cells: int = 1 << 22) -> np.ndarray:
    keep = np.empty(len(points), dtype=bool)
    step = max(1, cells // max(1, points.size))
    for i in range(0, len(points), step):
        block = points[i : i + step, None, :]
        weakly, strictly = points[None] <= block, points[None] < block
        keep[i : i + step] = ~(weakly.all(axis=2) & strictly.any(axis=2)).any(axis=1)
    return keep


def pareto_front(rows: Sequence[Mapping], metrics: Sequence[str], modes: Sequence[str]) -> list:
    """The rows no other row dominates on `metrics` (each minimized or maximized per `modes`)."""
    if not rows:
        return []
    mask = non_dominated(_as_min(rows, metrics, modes))
    return [row for row, kept in zip(rows, mask) if kept]


def hypervolume(
    rows: Sequence[Mapping],
    metrics: Sequence[str],
    modes: Sequence[str],
    reference: Sequence[float],
) -> float:
    """Volume dominated by `rows` and bounded by `reference` (a worst point, in metric units).

    Rows not strictly better than `reference` on every metric contribute nothing.
    """
    if len(reference) != len(metrics):
        raise ValueError(f"reference has {len(reference)} values for {len(metrics)} metrics")
    if not rows:
        return 0.0
    points = _as_min(rows, metrics, modes)
    ref = np.array(reference, dtype=float) * np.array([1.0 if m == "min" else -1.0 for m in modes])
    return hypervolume_min(points, ref)


def hypervolume_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimized `points` (shape `(n, d)`) below `ref`; slices the last axis."""
    points = np.asarray(points, dtype=float)
    points = points[np.all(points < ref, axis=1)]
    if len(points) == 0:
        return 0.0
    points = points[non_dominated(points)]
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    if points.shape[1] == 2:
        order = points[np.argsort(points[:, 0])]
        widths = np.diff(np.append(order[:, 0], ref[0]))
        return float(np.sum(widths * (ref[1] - np.minimum.accumulate(order[:, 1]))))
    order = points[np.argsort(points[:, -1])]
    cuts = np.append(order[:, -1], ref[-1])
    return float(
        sum(
            (cuts[i + 1] - cuts[i]) * hypervolume_min(order[: i + 1, :-1], ref[:-1])
            for i in range(len(order))
        )
    )
