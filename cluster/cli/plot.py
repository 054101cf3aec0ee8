"""PNG plots of a study: the Pareto front (first objective against each cost) and the
best-so-far curve."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from cluster.study import results

COSTS = ("latency_ms", "size_bytes", "macs")


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
    metric, mode = study.objectives[0]
    done = table.filter(pc.equal(table["status"], "completed"))
    paths = []
    for cost in COSTS:
        if cost == metric or done.num_rows == 0 or done[cost].null_count == done.num_rows:
            continue
        front = results.pareto(done, [(metric, mode), (cost, "min")]).sort_by(cost)
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.scatter(
            done[cost].to_pylist(),
            done[metric].to_pylist(),
            s=14,
            alpha=0.5,
            label="completed trials",
        )
        axes.step(
            front[cost].to_pylist(),
            front[metric].to_pylist(),
            where="post",
            color="C3",
            marker="o",
            label="Pareto front",
        )
        axes.set(xlabel=cost, ylabel=metric, title=f"{study.name}: {metric} against {cost}")
        axes.legend()
        paths.append(_save(figure, folder / f"front-{cost}.png", plt))
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
    paths.append(_save(figure, folder / "best-so-far.png", plt))
    return paths


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
