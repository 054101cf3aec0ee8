"""Joint search against the pipelines it replaces (issue 16): under a deployed-latency bound, the
same searcher (`bo`), scheduler (ASHA) and trial budget searching architecture + training +
compression together (`joint`), architecture + training for half the budget and then
compression of the best of them for the other half (`sequential`), architecture + training
alone (`arch`), and what a Ray Tune user would run instead: Tune's `OptunaSearch` (TPE) with
ASHA on architecture + training (`optuna`). Two controls: `optuna-time`, Ray Tune + Optuna given
as much wall time as `joint` took on that seed and bound (as many trials as fit), and
`arch-long`, architecture + training with every trial trained as long as the longest
compressed trial (training, fine-tuning and quantization-aware epochs).

    python -W ignore -m benchmarks.joint [--task mnist1d|digits] [--seeds 3] [--trials 40]
        [--methods joint,sequential,arch,optuna,optuna-time,arch-long] [--out PATH]

The space is the default study's (`cluster.study.defaults`). The bounds are the 25th and 10th
percentiles of the deployed (ONNX Runtime, batch 64, one thread) fp32 latency of 100
architectures drawn from the space, measured first and kept in the output JSON, which also lets
a run be continued. A method's figure per seed is the test accuracy of its best trial by
validation accuracy among those that completed within the bound (as a user would pick), and the
hypervolume of (test accuracy, deployed latency) over those trials, from the reference (10%
accuracy, the bound), divided by the box (90 points x the bound). Trials whose latency, measured
before training, breaks the bound end untrained for every method, `optuna` included (its
trainable reports 0 accuracy for them, the penalty a Tune user would write). Accuracies are
the deployed model's (issue 34: scored on the ONNX Runtime graph that is timed); the table shows
the best trial's PyTorch test accuracy beside it, and the share of trained trials whose final
measured latency is within the bound.
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

from benchmarks import records  # noqa: E402
from cluster.raytune import runner  # noqa: E402
from cluster.study import results  # noqa: E402
from cluster.study.config import Study  # noqa: E402
from cluster.study.defaults import ARCH, COMPRESS, TRAIN  # noqa: E402  (the default study's space)
from cluster.study.errors import ConfigError  # noqa: E402
from search.pareto import hypervolume  # noqa: E402
from spaces import Choice, Float, Int, Space  # noqa: E402

METHODS = ("joint", "sequential", "arch", "optuna", "optuna-time", "arch-long")
ROTATED = 4  # the first four run in a seed-rotated order; `optuna-time` needs `joint`'s wall time
TRIAL = {"epochs": 6, "finetune_epochs": 2, "qat_epochs": 2, "latency_repeats": 20}
TASKS = {"mnist1d": "mnist1d", "digits": "digits"}


def study(task: str, folder: Path, *, seed: int, trials: int, bound: float, **changes) -> Study:
    base = Study(
        name=changes.pop("name", "joint"),
        dir=str(folder),
        dataset=task,
        arch="chain",
        arch_options=ARCH,
        train=TRAIN,
        compress=COMPRESS,
        searcher="bo",
        seed=seed,
        objectives=(("val_acc", "max"),),
        constraints={"latency_ms": bound},
        scheduler="asha",
        scheduler_options={"grace_period": 2, "reduction_factor": 3},
        trials=trials,
        parallel=2,
        trial=TRIAL,
    )
    return Study.from_dict({**base.to_dict(), **changes})


STOPS: list[str] = []  # the messages of the studies their price stopped, in order


def run_study(study: Study) -> list[dict]:
    """`runner.run(study)`'s rows (`rows_of`); a study its price stopped (nothing fits, or too
    many refusals a trial) keeps the rows it wrote, and its message goes to `STOPS`."""
    try:
        table = runner.run(study)
    except ConfigError as error:
        if "stopped" not in str(error):
            raise
        STOPS.append(str(error))
        table = results.load(study.dir)
    return rows_of(table)


def rows_of(table) -> list[dict]:
    """Each trial's final row, its config keys as the searcher names them (`arch.s0_width`)."""
    rows = [row for row in table.to_pylist() if row.get("status")]
    return [{k.removeprefix("config."): v for k, v in row.items()} for row in rows]


def best_feasible(rows: list[dict], bound: float) -> dict | None:
    kept = [r for r in rows if r["status"] == "completed" and r["latency_ms"] <= bound]
    return max(kept, key=lambda r: r["val_acc"], default=None)


def run_joint(task, folder, *, seed, trials, bound) -> list[dict]:
    return run_study(study(task, folder, seed=seed, trials=trials, bound=bound))


def run_arch(task, folder, *, seed, trials, bound) -> list[dict]:
    plain = study(task, folder, seed=seed, trials=trials, bound=bound, compress=False)
    return run_study(plain)


def run_arch_long(task, folder, *, seed, trials, bound) -> list[dict]:
    """`arch` with every trial trained as long as the longest compressed one (training,
    fine-tuning after pruning, quantization-aware epochs): the control for extra epochs."""
    epochs = TRIAL["epochs"] + TRIAL["finetune_epochs"] + TRIAL["qat_epochs"]
    options = {"compress": False, "trial": {**TRIAL, "epochs": epochs}}
    return run_study(study(task, folder, seed=seed, trials=trials, bound=bound, **options))


def run_sequential(task, folder, *, seed, trials, bound) -> list[dict]:
    first = run_arch(task, folder / "arch", seed=seed, trials=trials // 2, bound=bound)
    timed = [r for r in first if r.get("latency_ms") is not None]
    best = best_feasible(first, bound) or min(timed, key=lambda r: r["latency_ms"])
    fixed = {k: v for k, v in best.items() if k.startswith(("arch.", "train.")) and v is not None}
    # the second study prices on from the first's calibration (`calibrate_from`)
    options = {"trials": trials - trials // 2, "bound": bound, "fixed": fixed}
    options["calibrate_from"] = [str(folder / "arch")]
    second = study(task, folder / "compress", seed=seed, **options)
    return first + run_study(second)


def tune_space(space: Space) -> dict:
    from ray import tune

    converted = {}
    for name, param in space.params.items():
        key = name.replace(".", "__")
        if isinstance(param, Choice):
            converted[key] = tune.choice(list(param.options))
        elif isinstance(param, Int):
            converted[key] = tune.randint(param.low, param.high + 1)
        elif isinstance(param, Float):
            kind = tune.loguniform if param.log else tune.uniform
            converted[key] = kind(param.low, param.high)
    return converted


def run_optuna(task, folder, *, seed, trials, bound, seconds=None) -> list[dict]:
    """Ray Tune's own: `OptunaSearch` (TPE, seeded) and ASHA on architecture + training, each
    trial `trainers.run_trial` with its epoch reports sent to Tune; with `seconds`, as many
    trials as fit in that wall time (Tune's `time_budget_s`) instead of `trials`."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    plain = study(task, folder, seed=seed, trials=trials, bound=bound, compress=False)
    settings = plain.trial_settings()

    def trainable(config):
        from trainers import run_trial

        config = {k.replace("__", "."): v for k, v in config.items()}
        result = run_trial(
            config, lambda row: tune.report({"val_acc": row["val_acc"]}), settings=settings
        )
        score = result.get("val_acc", 0.0) if result["status"] == "completed" else 0.0
        tune.report({**_scalars(result), "val_acc": score, "status": result["status"]})

    sampler = optuna.samplers.TPESampler(seed=seed)
    tuner = tune.Tuner(
        trainable,
        param_space=tune_space(plain.space()),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(sampler=sampler),
            scheduler=ASHAScheduler(grace_period=2, reduction_factor=3, max_t=TRIAL["epochs"] + 1),
            metric="val_acc",
            mode="max",
            num_samples=trials if seconds is None else 100 * trials,
            time_budget_s=seconds,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(folder), verbose=0),
    )
    rows = []
    for result in tuner.fit():
        metrics = dict(result.metrics or {})
        config = {k.replace("__", "."): v for k, v in (result.config or {}).items()}
        status = metrics.get("status", "stopped")
        if metrics:  # a trial the time budget ended before its first report never ran
            rows.append({**config, **metrics, "status": status})
    return rows


def _scalars(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool)}


RUNS = {
    "joint": run_joint,
    "sequential": run_sequential,
    "arch": run_arch,
    "optuna": run_optuna,
    "optuna-time": run_optuna,
    "arch-long": run_arch_long,
}


def latency_bounds(task: str, *, samples: int = 100, seed: int = 0) -> dict:
    """The 25th and 10th percentiles of the deployed fp32 latency of `samples` architectures
    drawn from the space (untrained: the weights do not change the time)."""
    from trainers.cost import deployed_latency
    from trainers.data import load_dataset
    from trainers.models import build_model

    data = load_dataset(task)
    space = study(task, Path("unused"), seed=seed, trials=1, bound=1.0, compress=False).space()
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(samples):
        arch = space.subconfig(space.sample(rng), "arch.")
        model = build_model("chain", arch, in_shape=data.in_shape, num_classes=data.num_classes)
        times.append(deployed_latency(model, data.in_shape, repeats=12))
    return {"p25": float(np.percentile(times, 25)), "p10": float(np.percentile(times, 10))}


def seed_figures(rows: list[dict], bound: float) -> dict:
    best = best_feasible(rows, bound)
    kept = [r for r in rows if r["status"] == "completed" and r["latency_ms"] <= bound]
    volume = hypervolume(kept, ["test_acc", "latency_ms"], ["max", "min"], [10.0, bound])
    measured = [r for r in rows if _measured(r)]
    return {
        "best_test_acc": best["test_acc"] if best else None,
        "best_torch_test_acc": best.get("torch_test_acc") if best else None,
        "best_latency_ms": best["latency_ms"] if best else None,
        "measured": len(measured),
        "measured_within": sum(r["latency_ms"] <= bound for r in measured),
        "best_compressed": bool(best and _compressed(best)),
        "hypervolume": volume / (90.0 * bound),
        "trials": sum(not r.get("refused") for r in rows),  # refused on price: not trials
        "refused": sum(bool(r.get("refused")) for r in rows),
        "feasible": len(kept),
    }


def _measured(row: dict) -> bool:
    """A trial trained and measured at its end (not refused on price, not rejected before
    training, not stopped at a rung)."""
    trained = row.get("test_acc") is not None and not row.get("refused")
    return trained and row.get("latency_ms") is not None


def _kept(row: dict) -> dict:
    """What the JSON keeps of a trial: its config and the figures above."""
    names = ("status", "val_acc", "test_acc", "latency_ms", "size_bytes", "train_seconds")
    names += ("torch_test_acc", "refused", "price_s", "price", "start_latency_ms")
    return {
        k: v for k, v in row.items() if k in names or k.startswith(("arch.", "train.", "compress."))
    }


def _compressed(row: dict) -> bool:
    return bool(row.get("compress.quantize") or row.get("compress.prune"))


def summary(runs: list[dict]) -> list[dict]:
    table = []
    for bound_name in sorted({r["bound"] for r in runs}, reverse=True):
        for method in METHODS:
            mine = [r for r in runs if r["bound"] == bound_name and r["method"] == method]
            if not mine:
                continue
            accs = [r["best_test_acc"] if r["best_test_acc"] is not None else 0.0 for r in mine]
            table.append(
                {
                    "bound": bound_name,
                    "method": method,
                    "median_acc": statistics.median(accs),
                    "per_seed": accs,
                    "median_hv": statistics.median(r["hypervolume"] for r in mine),
                    "median_wall_s": statistics.median(r["wall_s"] for r in mine),
                    "compressed_best": sum(r["best_compressed"] for r in mine),
                    "median_trials": statistics.median(r["trials"] for r in mine),
                    "within": _within(mine),
                    "torch_acc": _median_of(mine, "best_torch_test_acc"),
                    "stopped": sum(r.get("stopped") is not None for r in mine),
                    "seeds": len(mine),
                    "refused": statistics.median(r.get("refused", 0) for r in mine),
                    "price_s": _spread(mine, "price_s"),
                    "train_s": _spread(mine, "train_seconds"),
                }
            )
    return table


def _within(runs: list[dict]) -> str:
    """Trained trials measured within the bound, over the runs (older runs: not kept)."""
    if any("measured" not in r for r in runs):
        return "-"
    within, measured = (sum(r[k] for r in runs) for k in ("measured_within", "measured"))
    return f"{within}/{measured} ({within / measured:.0%})" if measured else "0/0"


def _median_of(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def _spread(runs: list[dict], name: str) -> str:
    """`median, p95` of `name` over the trained trials of `runs` (their kept rows)."""
    values = [
        row[name]
        for run in runs
        for row in run.get("rows", ())
        if not row.get("refused") and isinstance(row.get(name), int | float)
    ]
    if not values:
        return "-"
    return f"{np.median(values):.2f}, {np.quantile(values, 0.95):.2f}"


def print_table(task: str, bounds: dict, table: list[dict]) -> None:
    print(f"\n{task}: bounds {json.dumps({k: round(v, 3) for k, v in bounds.items()})} ms")
    print(
        "| bound | method | median test acc | per seed | median HV | median wall s | trials "
        "| best is compressed | measured within bound | best's PyTorch test acc | stopped "
        "| refused (median) | pricing s / trial (median, p95) | training s / trial |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        seeds = " ".join(f"{a:.1f}" for a in r["per_seed"])
        print(
            f"| {r['bound']} | {r['method']} | {r['median_acc']:.2f} | {seeds} | "
            f"{r['median_hv']:.4f} | {r['median_wall_s']:.0f} | {r['median_trials']:.0f} | "
            f"{r['compressed_best']}/{r['seeds']} | {r['within']} | {r['torch_acc']} | "
            f"{r['stopped']}/{r['seeds']} | {r['refused']:.0f} | {r['price_s']} | {r['train_s']} |"
        )


def _same(run: dict, seed: int, bound: str, method: str) -> bool:
    return (run["seed"], run["bound"], run["method"]) == (seed, bound, method)


def _order(methods: list[str], seed: int) -> list[str]:
    """The methods in a seed-rotated order, so no method always runs first (on a fresh
    machine) or last; `optuna-time` after the others."""
    rotated = [m for m in METHODS[:ROTATED] if m in methods]
    shift = seed % len(rotated) if rotated else 0
    return rotated[shift:] + rotated[:shift] + [m for m in methods if m not in rotated]


def one_run(task, seed, bound_name, method, bounds, runs, args) -> dict:
    """One method on one seed under one bound: its figures and its trials."""
    bound = bounds[bound_name]
    options = {"seed": seed, "trials": args.trials, "bound": bound}
    if method == "optuna-time":
        joint = [r for r in runs if _same(r, seed, bound_name, "joint")]
        if not joint:
            raise SystemExit(f"optuna-time on seed {seed}, {bound_name}: run joint first")
        options["seconds"] = joint[0]["wall_s"]
    stops = len(STOPS)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        rows = RUNS[method](task, Path(folder), **options)
        wall = time.perf_counter() - start
    run = {"seed": seed, "bound": bound_name, "method": method, "wall_s": wall}
    run["stopped"] = STOPS[stops] if len(STOPS) > stops else None
    run |= seed_figures(rows, bound)
    print(json.dumps(run), flush=True)
    return run | {"rows": [_kept(row) for row in rows]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="mnist1d")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--bounds", default="p25,p10")
    parser.add_argument(
        "--out",
        help="JSON of every run, gzipped if .gz (default benchmarks/out/joint-TASK.json.gz)",
    )
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; allowed {list(METHODS)}")
    out = Path(args.out or f"benchmarks/out/joint-{args.task}.json.gz")
    saved = records.read(out) or {}
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    bounds = saved.get("bounds") or latency_bounds(args.task)
    runs = saved.get("runs", [])
    print(f"bounds: {bounds}", flush=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for bound_name in args.bounds.split(","):
            for method in _order(methods, seed):
                if not any(_same(r, seed, bound_name, method) for r in runs):
                    runs.append(one_run(args.task, seed, bound_name, method, bounds, runs, args))
                    records.write(out, {"bounds": bounds, "runs": runs})
    print_table(args.task, bounds, summary(runs))


if __name__ == "__main__":
    main()
