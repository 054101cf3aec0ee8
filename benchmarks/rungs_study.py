"""Rung results feeding the searcher (issue 36), in wall time: the joint benchmark's setup
(`benchmarks.joint.study`: the default study's joint space of architecture, training and
compression, ASHA with grace period 2 and reduction factor 3, a deployed-latency bound from
`joint.latency_bounds`, `joint.TRIAL` epochs, 2 trials at a time on `num_cpus=2`) given the same
wall-time budget per run, for

- `bo-rungs`: the paretune study as it is (`bo`, ASHA; every epoch's report reaches `bo` as a
  rung result, stopped trials included);
- `bo-asha`: the same study with its searcher's rungs off, `bo` + ASHA as before issue 36: the
  searcher is created with `max_fidelity=None` (`cluster.study.resume.max_steps` patched to give
  None: the one place a study sets it; the scheduler's `max_t` has its own), so it reads no rung
  and learns from the trials that end, stopped ones without their metrics;
- `random-asha`: the study with searcher `random`;
- `tunebohb`: Ray Tune's `TuneBOHB` (seeded) and `HyperBandForBOHB` (reduction factor 3,
  `max_t` the study's: every epoch report, fine-tuning and quantization-aware epochs, and the
  final row) on the same trainable (`trainers.run_trial`, snapshots in Tune checkpoints so a
  trial BOHB pauses at a rung goes on from there) and the same joint space;
- `optuna-hb`: Optuna's TPE (seeded) with its `HyperbandPruner` (min resource 1, the study's
  `max_t`, reduction factor 3) directly: one Optuna study (a journal file) optimized by 2
  processes, each trial reporting its validation accuracy epoch by epoch and pruned when the
  pruner says so (`run_optuna_hb` says why not `n_jobs=2`).

    python -W ignore -m benchmarks.rungs_study [--tasks mnist1d,digits] [--seeds 10]
        [--budget 150] [--methods bo-rungs,bo-asha,random-asha,tunebohb,optuna-hb]
        [--bounds p10] [--out PATH]

The paretune studies run as `runner.run` does (priced asks included), their trials' wall time
cut at the budget by Tune's `time_budget_s` (`runner._fit` wrapped); the Tune and Optuna
baselines judge the bound before training as `joint.run_optuna` does (a config over it ends
untrained, validation accuracy 0). Every run keeps each trial's end (`finish_s`, seconds since
the run started, the clock started before the study's or tuner's setup), status, latency and
accuracies: the any-time curve is the test accuracy of the best trial by validation accuracy
among those completed within the bound, by wall time. Targets per task and bound: A, the median
over seeds of `random-asha`'s final best; B (harder), A + `HARDER` points. Per method the
median over seeds of the time each run's curve first reaches a target (a run that never does
counts as the budget, and is counted as missed), and the ratios `bo-rungs` / `bo-asha` and
`bo-rungs` / `tunebohb` of those medians (the issue's target: at most 0.5, and below 1). The
JSON keeps every run (`benchmarks/out/rungs_study.json.gz`); runs already there are skipped.
`tunebohb` needs `hpbandster` and `ConfigSpace` (not project dependencies): without them it is
left out with a line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from benchmarks import joint, records  # noqa: E402
from cluster.raytune import runner  # noqa: E402
from cluster.raytune.schedulers import max_steps  # noqa: E402
from cluster.study import resume  # noqa: E402
from spaces import Choice, Float, Int  # noqa: E402

METHODS = ("bo-rungs", "bo-asha", "random-asha", "tunebohb", "optuna-hb")
HARDER = 1.0  # target B: target A plus this many accuracy points
UNBOUNDED = 100_000  # trials a study or tuner may ask: the wall-time budget ends it


# -- the any-time curve and time to target (pure) -------------------------------------------------
def curve(trials: list[dict], bound: float) -> list[tuple[float, float]]:
    """`(finish_s, test accuracy)` of the best trial by validation accuracy among those
    completed within `bound`, at each trial's end that changes it."""
    points, best = [], None
    for trial in sorted(trials, key=lambda t: t["finish_s"]):
        latency, measured = trial.get("latency_ms"), trial.get("test_acc") is not None
        fits = trial["status"] == "completed" and measured and latency is not None
        if fits and latency <= bound and (best is None or trial["val_acc"] > best["val_acc"]):
            best = trial
            points.append((trial["finish_s"], trial["test_acc"]))
    return points


def time_to(points: list[tuple[float, float]], target: float, *, budget: float) -> float | None:
    """When the curve `points` first reaches `target` within `budget` seconds (None: never)."""
    return next((t for t, acc in points if acc >= target and t <= budget), None)


def final_best(points: list[tuple[float, float]], *, budget: float) -> float | None:
    """The curve's value at `budget` (None: nothing completed within the bound by then)."""
    kept = [acc for t, acc in points if t <= budget]
    return kept[-1] if kept else None


def targets(runs: list[dict], *, budget: float) -> dict | None:
    """Target A (the median over seeds of `random-asha`'s final best, a run with none counting
    0) and B (A + `HARDER`), of `runs` (one task and bound); None without a `random-asha` run."""
    finals = [final_best(r["curve"], budget=budget) or 0.0 for r in runs]
    finals = [f for f, r in zip(finals, runs, strict=True) if r["method"] == "random-asha"]
    if not finals:
        return None
    a = statistics.median(finals)
    return {"A": a, "B": a + HARDER}


def median_time(runs: list[dict], target: float, *, budget: float) -> tuple[float, int]:
    """The median over `runs` of the time to `target` (a miss counted as `budget`) and the
    number of misses."""
    times = [time_to(r["curve"], target, budget=budget) for r in runs]
    return statistics.median(budget if t is None else t for t in times), times.count(None)


# -- the methods ----------------------------------------------------------------------------------
def run_study(task, folder, *, seed, bound, budget, searcher="bo", rungs=True) -> list[dict]:
    """The paretune study (`joint.study`, searcher `searcher`), its trials cut at `budget`
    seconds; `rungs=False`: its searcher made without `max_fidelity`."""
    study = joint.study(task, folder, seed=seed, trials=UNBOUNDED, bound=bound, searcher=searcher)
    start = time.time()
    deadline = start + budget
    with contextlib.ExitStack() as patches:
        patches.enter_context(mock.patch.object(runner, "_fit", timed_fit(runner._fit, deadline)))
        if not rungs:  # the searcher's `max_fidelity`: None
            patches.enter_context(mock.patch.object(resume, "max_steps", lambda *a, **o: None))
        rows = joint.run_study(study)  # one its price stopped keeps its rows (`joint.STOPS`)
    return [{**row, "finish_s": row["time"].timestamp() - start, "time": None} for row in rows]


def timed_fit(fit, deadline: float):
    """`runner._fit` whose Tune fit ends at `deadline` (`time_budget_s`); none after it."""
    from ray import tune

    config = tune.TuneConfig

    def timed(study, store, **options):
        left = deadline - time.time()
        if left <= 0:
            return None  # no trial told: the runner's loop ends
        with mock.patch.object(tune, "TuneConfig", _with_budget(config, left)):
            return fit(study, store, **options)

    return timed


def _with_budget(config, seconds: float):
    return lambda **options: config(**options, time_budget_s=seconds)


def run_tunebohb(task, folder, *, seed, bound, budget) -> list[dict]:
    """`TuneBOHB` + `HyperBandForBOHB` on the joint space, `budget` seconds."""
    from ray import tune
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    study = joint.study(task, folder, seed=seed, trials=1, bound=bound)
    start = time.time()
    settings = dataclasses.replace(study.trial_settings(), snapshots=True)
    trainable = tune.with_parameters(
        tune_trainable, settings=settings, space=study.space(), data=study.check_data()
    )
    tuner = tune.Tuner(
        trainable,
        param_space=joint.tune_space(study.space()),
        tune_config=tune.TuneConfig(
            search_alg=TuneBOHB(seed=seed),
            scheduler=HyperBandForBOHB(
                time_attr="training_iteration", max_t=max_steps(study), reduction_factor=3
            ),
            metric="val_acc",
            mode="max",
            num_samples=UNBOUNDED,
            time_budget_s=budget - (time.time() - start),
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(folder), verbose=0),
    )
    trials = []
    for result in tuner.fit():
        metrics = dict(result.metrics or {})
        if "at" in metrics:  # a trial the budget ended before its first report never ran
            status = metrics.get("status", "stopped")
            trials.append({**metrics, "status": status, "finish_s": metrics["at"] - start})
    return trials


def tune_trainable(config, *, settings, space, data) -> None:
    """`trainers.run_trial` on Tune's `config`, each epoch's validation accuracy reported with
    its snapshot as the checkpoint (a paused trial goes on from it), then the final result; a
    config over the bound reports validation accuracy 0 (`joint.run_optuna`'s penalty)."""
    import torch
    from ray import tune

    from cluster.raytune.trainable import SNAPSHOT, _resumed
    from trainers import run_trial

    def report(row: dict) -> None:
        snapshot, metrics = (
            row.pop("snapshot", None),
            {"val_acc": row["val_acc"], "at": time.time()},
        )
        if snapshot is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as kept:
            torch.save(snapshot, Path(kept) / SNAPSHOT)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(kept))

    config = active(space, {k.replace("__", "."): v for k, v in config.items()})
    resumed = _resumed(tune.get_checkpoint())
    result = run_trial(config, report, settings=settings, data=data, resume=resumed)
    tune.report({**scored(result), "at": time.time(), "resumed": resumed is not None})


def active(space, config: dict) -> dict:
    """`config` as plain Python values, without the keys its values switch off in `space`."""
    plain = {k: v.item() if hasattr(v, "item") else v for k, v in config.items()}
    return {k: v for k, v in plain.items() if k in space.params and space.is_active(k, plain)}


def scored(result: dict) -> dict:
    """A trial's final scalars, its validation accuracy 0 unless it completed."""
    score = result.get("val_acc", 0.0) if result["status"] == "completed" else 0.0
    return {**joint._scalars(result), "val_acc": score}


def run_optuna_hb(task, folder, *, seed, bound, budget) -> list[dict]:
    """Optuna's TPE with its `HyperbandPruner`, `budget` seconds: one study in a journal file
    that 2 processes optimize (`optuna_worker`), a trial at a time each. Not 2 threads of one
    process (`n_jobs=2`): torch's FX tracing, which quantization uses, patches every module's
    call while it traces, and the other thread's trial then fails."""
    import multiprocessing

    import optuna
    from optuna.storages.journal import JournalFileBackend

    start = time.time()
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(folder / "optuna.log")))
    optuna.create_study(study_name="optuna-hb", storage=storage, direction="maximize")
    work = {"task": task, "folder": str(folder), "seed": seed, "bound": bound}
    work |= {"start": start, "deadline": start + budget}
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        parts = pool.starmap(optuna_worker, [(work, worker) for worker in range(2)])
    return [trial for part in parts for trial in part]


def optuna_worker(work: dict, worker: int) -> list[dict]:
    """One process of `run_optuna_hb`: trials until `work["deadline"]`, torch on one thread
    (as Ray's 1-CPU workers), TPE seeded `seed + 1000 * worker`; each trial reports its
    validation accuracy epoch by epoch and is pruned when the pruner says so (or when the
    deadline passes); a config over the bound ends untrained, validation accuracy 0."""
    import optuna
    import torch
    from optuna.storages.journal import JournalFileBackend

    from trainers import run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    start, deadline = work["start"], work["deadline"]
    study = joint.study(
        work["task"], Path(work["folder"]), seed=work["seed"], trials=1, bound=work["bound"]
    )
    settings, space, data = study.trial_settings(), study.space(), study.check_data()
    search = optuna.load_study(
        study_name="optuna-hb",
        storage=optuna.storages.JournalStorage(
            JournalFileBackend(str(Path(work["folder"]) / "optuna.log"))
        ),
        sampler=optuna.samplers.TPESampler(seed=work["seed"] + 1000 * worker),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_steps(study), reduction_factor=3
        ),
    )
    trials: list[dict] = []

    def objective(trial) -> float:
        config = suggested(trial, space)

        def report(row: dict) -> None:
            trial.report(row["val_acc"], row["step"])
            if trial.should_prune() or time.time() > deadline:
                trials.append({**config, "status": "stopped", "val_acc": row["val_acc"]})
                trials[-1]["finish_s"] = time.time() - start
                raise optuna.TrialPruned()

        result = scored(run_trial(config, report, settings=settings, data=data))
        trials.append({**config, **result, "finish_s": time.time() - start})
        return result["val_acc"]

    left = deadline - time.time()
    if left > 0:
        search.optimize(objective, n_trials=UNBOUNDED, timeout=left)
    return trials


def suggested(trial, space) -> dict:
    """An Optuna trial's config: each parameter of `space` its values switch on, suggested."""
    config: dict = {}
    for name, param in space.params.items():
        if not space.is_active(name, config):
            continue
        if isinstance(param, Choice):
            config[name] = trial.suggest_categorical(name, list(param.options))
        elif isinstance(param, Int):
            config[name] = trial.suggest_int(name, param.low, param.high, log=param.log)
        elif isinstance(param, Float):
            step = None if param.log else param.step
            config[name] = trial.suggest_float(
                name, param.low, param.high, log=param.log, step=step
            )
    return config


RUNS = {
    "bo-rungs": run_study,
    "bo-asha": lambda *args, **options: run_study(*args, **options, rungs=False),
    "random-asha": lambda *args, **options: run_study(*args, **options, searcher="random"),
    "tunebohb": run_tunebohb,
    "optuna-hb": run_optuna_hb,
}


def missing(method: str) -> str | None:
    """Why `method` cannot run here (a package it needs is absent), or None."""
    if method != "tunebohb":
        return None
    try:
        from ray.tune.search.bohb import TuneBOHB

        TuneBOHB(seed=0)
    except (ImportError, AssertionError) as error:
        return f"{type(error).__name__}: {error}"
    return None


# -- runs, the JSON and the table -----------------------------------------------------------------
KEPT = ("status", "finish_s", "val_acc", "test_acc", "latency_ms", "size_bytes", "resumed")


def one_run(task: str, method: str, *, seed: int, bound: float, budget: float) -> dict:
    """One method on one seed: its trials (what `KEPT` names, and their configs) and curve."""
    stops = len(joint.STOPS)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        trials = RUNS[method](task, Path(folder), seed=seed, bound=bound, budget=budget)
        wall = time.perf_counter() - start
    stopped = joint.STOPS[stops] if len(joint.STOPS) > stops else None  # on its refusals
    kept = [
        {k: v for k, v in t.items() if k in KEPT or k.startswith(("arch.", "train.", "compress."))}
        for t in trials
    ]
    points = curve(kept, bound)
    completed = sum(t["status"] == "completed" for t in kept)
    return {"wall_s": wall, "trials": len(kept), "completed": completed, "stopped": stopped} | {
        "curve": points,
        "final_best": final_best(points, budget=budget),
        "rows": kept,
    }


def summary(runs: list[dict], *, budget: float) -> list[dict]:
    """Per task and bound: the targets, and per method its median time to each."""
    table = []
    for task, bound in sorted({(r["task"], r["bound"]) for r in runs}):
        mine = [r for r in runs if (r["task"], r["bound"]) == (task, bound)]
        goal = targets(mine, budget=budget)
        for method in METHODS:
            done = [r for r in mine if r["method"] == method]
            if not done:
                continue
            finals = [r["final_best"] or 0.0 for r in done]
            row = {"task": task, "bound": bound, "method": method, "seeds": len(done)}
            row |= {"median_final": statistics.median(finals), "targets": goal}
            for name, target in (goal or {}).items():
                row[name] = median_time(done, target, budget=budget)
            table.append(row)
    return table


def ratios(table: list[dict]) -> list[str]:
    """`bo-rungs` / `bo-asha` and `bo-rungs` / `tunebohb` of the median times, per target."""
    lines = []
    for task, bound in sorted({(r["task"], r["bound"]) for r in table}):
        by = {r["method"]: r for r in table if (r["task"], r["bound"]) == (task, bound)}
        for other in ("bo-asha", "tunebohb"):
            if "bo-rungs" not in by or other not in by or not by["bo-rungs"]["targets"]:
                continue
            parts = [
                f"{name} {by['bo-rungs'][name][0] / max(by[other][name][0], 1e-9):.2f}"
                for name in ("A", "B")
            ]
            lines.append(f"{task} {bound}: bo-rungs / {other}: " + ", ".join(parts))
    return lines


def print_table(table: list[dict], *, budget: float) -> None:
    for task, bound in sorted({(r["task"], r["bound"]) for r in table}):
        mine = [r for r in table if (r["task"], r["bound"]) == (task, bound)]
        goal = mine[0]["targets"]
        if goal is None:
            print(f"\n{task} {bound}: no random-asha run, so no targets")
        else:
            print(f"\n{task} {bound}: target A {goal['A']:.2f}, B {goal['B']:.2f} (A + {HARDER})")
        print("| method | seeds | median final best | time to A (s) | time to B (s) |")
        print("|---|---|---|---|---|")
        for r in mine:
            cells = [_time_cell(r.get(name), r["seeds"], budget) for name in ("A", "B")]
            print(
                f"| {r['method']} | {r['seeds']} | {r['median_final']:.2f} | "
                + " | ".join(cells)
                + " |"
            )
    for line in ratios(table):
        print(line)


def _time_cell(value, seeds: int, budget: float) -> str:
    if value is None:
        return "-"
    median, missed = value
    return f"{median:.0f}" + (f" ({missed}/{seeds} missed: {budget:.0f} each)" if missed else "")


def _order(methods: list[str], seed: int) -> list[str]:
    """The methods in a seed-rotated order, so no method always runs first or last."""
    shift = seed % len(methods)
    return methods[shift:] + methods[:shift]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mnist1d,digits")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=150.0, help="wall seconds per run")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--bounds", default="p10", help="p10 and/or p25 (joint's percentiles)")
    parser.add_argument("--out", default="benchmarks/out/rungs_study.json.gz")
    args = parser.parse_args(argv)
    for name, given, allowed in (
        ("tasks", args.tasks, joint.TASKS),
        ("methods", args.methods, METHODS),
        ("bounds", args.bounds, ("p10", "p25")),
    ):
        unknown = sorted(set(given.split(",")) - set(allowed))
        if unknown:
            parser.error(f"--{name}: unknown {unknown}; allowed {sorted(allowed)}")
    if args.budget <= 0:
        parser.error(f"--budget must be positive seconds, got {args.budget}")
    methods = []
    for method in args.methods.split(","):
        why = missing(method)
        if why:
            print(f"{method} left out: {why}", flush=True)
        else:
            methods.append(method)
    out = Path(args.out)
    saved = records.read(out) or {}
    bounds, runs = saved.get("bounds", {}), saved.get("runs", [])
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    for task in args.tasks.split(","):
        bounds.setdefault(task, joint.latency_bounds(task))
        print(f"{task} bounds: {bounds[task]}", flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for bound_name in args.bounds.split(","):
                for method in _order(methods, seed):
                    key = {"task": task, "seed": seed, "bound": bound_name, "method": method}
                    key["budget"] = args.budget
                    if any(all(r[k] == v for k, v in key.items()) for r in runs):
                        continue
                    bound = bounds[task][bound_name]
                    run = one_run(task, method, seed=seed, bound=bound, budget=args.budget)
                    runs.append(key | run)
                    shown = {k: v for k, v in run.items() if k not in ("rows", "curve")}
                    print(json.dumps(key | shown), flush=True)
                    records.write(out, {"bounds": bounds, "runs": runs})
    same = [r for r in runs if r["budget"] == args.budget and r["task"] in args.tasks.split(",")]
    print_table(summary(same, budget=args.budget), budget=args.budget)


if __name__ == "__main__":
    main()
