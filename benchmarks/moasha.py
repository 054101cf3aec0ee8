"""Multi-objective successive halving (`moasha`, issue 36) against ASHA on objective 1, on real
training: two objectives (validation accuracy, deployed latency), equal wall time, same configs.

    python -W ignore -m benchmarks.moasha [--task digits|mnist1d] [--seeds 5] [--budget 240]
        [--configs 200] [--epochs 9] [--parallel 2] [--methods moasha,asha] [--out PATH]

Per seed, `--configs` configurations are drawn once from the default study's architecture and
training space (`cluster.study.defaults`, no compression) and both methods run them in that
order in a plain Ray Tune `Tuner`, `--parallel` at a time, until `--budget` seconds of wall time
(`TuneConfig(time_budget_s=...)`). Each trial first prices its deployed latency
(`trainers.estimate_cost`, as a priced study does before training) and reports it with every
epoch's validation accuracy, then its final row (test accuracy, the latency of the trained
model). Both schedulers have the same rungs (`grace_period` 1, `reduction_factor` 3, `max_t`
the epochs and the final row): `moasha` ranks on (val_acc max, latency_ms min), ASHA on val_acc.
The figure is the hypervolume of (test accuracy, deployed latency) over the trials that
completed within the budget, from the reference (10% accuracy, 1.1 x the slowest completed
model of either method on that seed), divided by the box (90 points x the reference latency).
Prints a Markdown table (per seed and the median) and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

from cluster.study.config import Study  # noqa: E402
from cluster.study.defaults import ARCH, TRAIN  # noqa: E402
from search.pareto import hypervolume  # noqa: E402

METHODS = ("moasha", "asha")
OBJECTIVES = {"val_acc": "max", "latency_ms": "min"}


def study(task: str, *, seed: int, epochs: int, folder: str) -> Study:
    return Study(
        dir=folder,
        dataset=task,
        arch="chain",
        arch_options=ARCH,
        train=TRAIN,
        seed=seed,
        objectives=tuple(OBJECTIVES.items()),
        trial={"epochs": epochs, "latency_repeats": 10},
    )


def _trial(config, *, configs, settings, data):
    from ray import tune

    from trainers import run_trial
    from trainers.estimate import estimate_cost

    chosen = configs[config["index"]]
    shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    priced = {"latency_ms": estimate_cost(chosen, settings, **shape)["latency_ms"]}

    def report(row):
        tune.report({"val_acc": row["val_acc"], **priced, "final": False})

    result = run_trial(chosen, report, settings=settings, data=data)
    final = {k: result.get(k) for k in ("val_acc", "test_acc", "latency_ms")}
    tune.report({**final, "final": True, "status": result.get("status")})


def scheduler(method: str, *, max_t: int):
    from ray.tune.schedulers import ASHAScheduler

    from cluster.raytune.moasha import MOASHA

    rungs = {"grace_period": 1, "reduction_factor": 3, "max_t": max_t}
    if method == "moasha":
        return MOASHA(objectives=OBJECTIVES, **rungs)
    return ASHAScheduler(time_attr="training_iteration", **rungs)


def run_method(method, *, task, seed, budget, count, epochs, parallel) -> dict:
    """One method's completed trials within `budget` seconds and how many trials started."""
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="moasha-") as folder:
        base = study(task, seed=seed, epochs=epochs, folder=folder)
        space, settings = base.space(), base.trial_settings()
        rng = np.random.default_rng(seed)
        configs = [space.sample(rng) for _ in range(count)]
        trainable = tune.with_parameters(
            _trial, configs=configs, settings=settings, data=base.check_data()
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"index": tune.grid_search(list(range(count)))},
            tune_config=tune.TuneConfig(
                scheduler=scheduler(method, max_t=epochs + 1),
                metric="val_acc",
                mode="max",
                max_concurrent_trials=parallel,
                reuse_actors=True,
                time_budget_s=budget,
            ),
            run_config=tune.RunConfig(storage_path=folder, verbose=0),
        )
        started = time.perf_counter()
        grid = tuner.fit()
        seconds = time.perf_counter() - started
    finals = [r.metrics for r in grid if r.metrics and r.metrics.get("final")]
    done = [m for m in finals if m.get("status") == "completed"]
    return {
        "method": method,
        "seed": seed,
        "started": len(grid),
        "completed": len(done),
        "points": [(m["test_acc"], m["latency_ms"]) for m in done],
        "seconds": seconds,
    }


def score(rows: list[dict]) -> None:
    """Each row's normalized hypervolume, from its seed's reference (shared by the methods)."""
    slowest = max((lat for r in rows for _, lat in r["points"]), default=1.0)
    reference = [10.0, 1.1 * slowest]
    for row in rows:
        points = [{"test_acc": a, "latency_ms": lat} for a, lat in row["points"]]
        volume = hypervolume(points, ["test_acc", "latency_ms"], ["max", "min"], reference)
        row["hypervolume"] = volume / (90.0 * reference[1])


def table(rows: list[dict], methods) -> str:
    lines = ["| seed | " + " | ".join(f"{m} HV (completed/started)" for m in methods) + " |"]
    lines.append("|---" * (len(methods) + 1) + "|")
    by = {(r["seed"], r["method"]): r for r in rows}
    for seed in sorted({r["seed"] for r in rows}):
        cells = [by.get((seed, m)) for m in methods]
        text = [
            f"{c['hypervolume']:.4f} ({c['completed']}/{c['started']})" if c else "-" for c in cells
        ]
        lines.append(f"| {seed} | " + " | ".join(text) + " |")
    medians = [
        statistics.median(r["hypervolume"] for r in rows if r["method"] == m) for m in methods
    ]
    lines.append("| median | " + " | ".join(f"{v:.4f}" for v in medians) + " |")
    if len(methods) == 2 and medians[1] > 0:
        lines.append(
            f"\n{methods[0]} / {methods[1]} median hypervolume: {medians[0] / medians[1]:.3f}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", choices=("digits", "mnist1d"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=240.0, help="wall seconds per method")
    parser.add_argument("--configs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="benchmarks/out/moasha.json")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {sorted(unknown)}; allowed: {list(METHODS)}")

    import ray

    ray.init(num_cpus=args.parallel, include_dashboard=False, log_to_driver=False)
    rows = []
    for seed in range(args.seeds):
        order = methods[seed % len(methods) :] + methods[: seed % len(methods)]  # alternate
        mine = []
        for method in order:
            options = {"task": args.task, "seed": seed, "budget": args.budget}
            options |= {"count": args.configs, "epochs": args.epochs, "parallel": args.parallel}
            mine.append(run_method(method, **options))
        score(mine)
        rows += mine
        print(table(rows, methods), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
