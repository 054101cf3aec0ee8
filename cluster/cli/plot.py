"""PNG plots of a study: the Pareto front (first objective against each cost) and the
best-so-far curve."""

from __future__ import annotations

from pathlib import Path

from cluster.study import judge, results
from cluster.study.front import COSTS, front_layout

__all__ = ["COSTS", "front_layout", "plot_study"]


def plot_study(study_dir, study, *, out=None) -> list[Path]:
    """Write `front-<cost>.png` for every cost column with values and `best-so-far.png`; a
    study with no feasible trial (`cluster.study.judge`) gets the curve alone, saying so, and
    the same line on stdout. ValueError for a folder it cannot write, suggesting `--out`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ValueError("plots need matplotlib: pip install 'paretune[plot]'") from error
    table = judge.rejudged(results.load(study_dir), study.constraints)
    folder = Path(out or Path(study_dir) / "plots")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for cost in COSTS:
            layout = front_layout(table, study, cost)
            if layout is not None:
                figure = _draw_front(plt, layout, cost, title=study.name)
                paths.append(_save(figure, folder / f"front-{cost}.png", plt))
        paths.append(_save(_draw_best(plt, table, study), folder / "best-so-far.png", plt))
    except OSError as error:
        hint = "" if out else ": give --out DIR to write them elsewhere"
        raise ValueError(f"cannot write the plots to {str(folder)!r} ({error}){hint}") from error
    return paths


def _empty_note(table, study) -> str | None:
    """What a study with no feasible trial says in place of its curve (None when it has one)."""
    metric = study.objectives[0][0]
    if judge.feasible(table, study.constraints, metric).num_rows:
        return None
    bounds = f" within {dict(study.constraints)}" if study.constraints else ""
    return f"no feasible trial yet: none completed with {metric}{bounds}"


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
    from matplotlib.ticker import MaxNLocator

    metric, mode = study.objectives[0]
    figure, axes = plt.subplots(figsize=(6, 4))
    ordered = table.sort_by("time")
    feasible = set(judge.feasible(table, study.constraints, metric)["trial"].to_pylist())
    best, curve = None, []
    for trial, value in zip(ordered["trial"].to_pylist(), ordered[metric].to_pylist()):
        if trial in feasible:
            better = best is None or (value > best if mode == "max" else value < best)
            best = value if better else best
        curve.append(best)
    axes.plot(range(1, len(curve) + 1), curve, drawstyle="steps-post")
    axes.set_xlim(0.5, len(curve) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole trials
    note = _empty_note(table, study)
    if note:
        print(f"{study.name}: {note}")
        axes.text(0.5, 0.5, note, transform=axes.transAxes, ha="center", va="center", wrap=True)
    axes.set(xlabel="trials finished", ylabel=f"best feasible {metric}", title=study.name)
    return figure


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
