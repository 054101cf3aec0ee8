"""PNG plots of a study: the Pareto front (first objective against each cost) and the
best-so-far curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from cluster.study import results

COSTS = ("latency_ms", "size_bytes", "macs")
# A trial compresses its model when any of these is on in its config.
SWITCHES = ("prune", "neuron_prune", "weight_prune", "quantize", "distill")
FENCE = 3.0  # points beyond this many interquartile ranges of the quartiles sit on the edge


def compressed(table) -> list[bool]:
    """Per row, whether its config switches on a compression technique."""
    columns = [
        f"config.compress.{s}" for s in SWITCHES if f"config.compress.{s}" in table.schema.names
    ]
    rows = table.select(columns).to_pylist()
    return [any(bool(v) for v in row.values()) for row in rows]


def axis_limits(values) -> tuple[float, float, int]:
    """`(low, high, off)`: a range holding every value within `FENCE` interquartile ranges of
    the quartiles (Tukey's far-out fence), so one diverged or failed-slow trial does not squash
    the rest, and how many values lie outside it."""
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return 0.0, 1.0, 0
    q1, q3 = np.percentile(values, [25, 75])
    spread = max(q3 - q1, 1e-9 * max(abs(q3), 1.0))
    inside = values[(values >= q1 - FENCE * spread) & (values <= q3 + FENCE * spread)]
    low, high = float(inside.min()), float(inside.max())
    pad = 0.05 * (high - low or abs(high) or 1.0)
    return low - pad, high + pad, int(values.size - inside.size)


def front_layout(table, study, cost: str) -> dict | None:
    """What `front-<cost>.png` draws: completed trials split by whether they compress, the
    Pareto front of the first objective against `cost`, the study's bound on `cost` (None
    without one), and axis limits that keep outliers on the edge. None when no completed
    trial has the cost."""
    metric, mode = study.objectives[0]
    done = table.filter(pc.equal(table["status"], "completed"))
    if cost == metric or done.num_rows == 0 or done[cost].null_count == done.num_rows:
        return None
    points = list(zip(done[cost].to_pylist(), done[metric].to_pylist(), compressed(done)))
    front = results.pareto(done, [(metric, mode), (cost, "min")]).sort_by(cost)
    bound = study.constraints.get(cost)
    costs = [p[0] for p in points] + ([bound] if bound else [])
    x_low, x_high, x_off = axis_limits(costs)
    y_low, y_high, y_off = axis_limits([p[1] for p in points])
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


def plot_study(study_dir, study, *, out=None) -> list[Path]:
    """Write `front-<cost>.png` for every cost column with values and `best-so-far.png`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ValueError("plots need matplotlib: pip install 'paretune[plot]'") from error
    table = results.load(study_dir)
    folder = Path(out or Path(study_dir) / "plots")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cost in COSTS:
        layout = front_layout(table, study, cost)
        if layout is not None:
            figure = _draw_front(plt, layout, cost, title=study.name)
            paths.append(_save(figure, folder / f"front-{cost}.png", plt))
    paths.append(_save(_draw_best(plt, table, study), folder / "best-so-far.png", plt))
    return paths


def _draw_front(plt, layout: dict, cost: str, *, title: str):
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, marker, colour in (("uncompressed", "o", "C0"), ("compressed", "^", "C2")):
        if layout[key]:
            xs, ys = zip(*_clipped(layout[key], layout["xlim"], layout["ylim"]))
            axes.scatter(xs, ys, s=16, alpha=0.6, marker=marker, color=colour, label=key)
    xs, ys = zip(*layout["front"])
    axes.step(xs, ys, where="post", color="C3", marker="o", label="Pareto front")
    if layout["bound"]:
        axes.axvline(layout["bound"], color="k", linestyle="--", label=f"bound {layout['bound']:g}")
    if layout["off_axis"]:
        axes.plot([], [], " ", label=f"{layout['off_axis']} beyond the fence, on the edge")
    metric = layout["metric"]
    axes.set(xlim=layout["xlim"], ylim=layout["ylim"], xlabel=cost, ylabel=metric)
    axes.set_title(f"{title}: {metric} against {cost}")
    axes.legend(fontsize=8)
    return figure


def _clipped(points, xlim, ylim):
    return [(min(max(x, xlim[0]), xlim[1]), min(max(y, ylim[0]), ylim[1])) for x, y in points]


def _draw_best(plt, table, study):
    metric, mode = study.objectives[0]
    figure, axes = plt.subplots(figsize=(6, 4))
    ordered = table.sort_by("time")
    best, curve = None, []
    for status, value in zip(ordered["status"].to_pylist(), ordered[metric].to_pylist()):
        if status == "completed" and value is not None:
            better = best is None or (value > best if mode == "max" else value < best)
            best = value if better else best
        curve.append(best)
    axes.plot(range(1, len(curve) + 1), curve, drawstyle="steps-post")
    axes.set(xlabel="trials finished", ylabel=f"best feasible {metric}", title=study.name)
    return figure


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
