"""Priced asks in studies (issue 33): the joint benchmark's setup (`benchmarks.joint`: the default
study's space, `bo` with ASHA, a deployed-latency bound at the 10th percentile of 100 sampled
architectures) run with the study's price (each config's costs measured on the driver with the
trial's own cost function before it is proposed, `cluster.study.price`) and without it (the
runner as before: configs over the bound are trials, rejected before training), for every
paretune method of that benchmark (`joint`, `sequential`, `arch`).

    python -W ignore -m benchmarks.priced_study [--tasks mnist1d,digits] [--seeds 3]
        [--trials 40] [--methods joint,sequential,arch] [--arms priced,unpriced]
        [--bounds p10] [--out PATH]

Per run: `trials` (the budget's rows: trained, or rejected before training), `trained`, and of
the trained trials that reached their final measurement (`measured`: not stopped by the
scheduler at a rung, where no latency is measured) the share within the bound (target: at least
90% for every method, priced), the configs refused on
price (rows, not trials), the pricing calls, pricing seconds per trial (median, p95: the ask's
pricing, `price_s` of its row) next to its training seconds (median, p95), the best test
accuracy among the trials within the bound (by validation accuracy) and the wall time. A study
whose price stops it (nothing fits, or too many refusals a trial) is kept with the trials it
trained and the message. The JSON keeps every run, so a stopped run continues.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from benchmarks import joint
from cluster.raytune import runner

METHODS = ("joint", "sequential", "arch")
ARMS = ("priced", "unpriced")


def one_run(task: str, method: str, arm: str, *, seed: int, trials: int, bound: float) -> dict:
    """One method, priced or not, on one seed: its figures (`figures`) and the stop, if any."""
    stops = len(joint.STOPS)  # a study its price stops keeps its rows (`joint.run_study`)
    price = runner.study_price if arm == "priced" else (lambda *args, **options: None)
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(runner, "study_price", price),  # unpriced: the runner as before
    ):
        start = time.perf_counter()
        rows = joint.RUNS[method](task, Path(folder), seed=seed, trials=trials, bound=bound)
        wall = time.perf_counter() - start
    stopped = joint.STOPS[stops] if len(joint.STOPS) > stops else None
    return {"wall_s": wall, **figures(rows, bound), "stopped": stopped}


def figures(rows: list[dict], bound: float) -> dict:
    """A run's trials within the bound, refusals and pricing against training time."""
    refused = [r for r in rows if r.get("refused")]
    trials = [r for r in rows if not r.get("refused")]
    trained = [r for r in trials if r.get("val_acc") is not None]
    measured = [r for r in trained if r.get("latency_ms") is not None]  # not stopped at a rung
    within = [r for r in measured if r["latency_ms"] <= bound]
    best = joint.best_feasible(trials, bound)
    return {
        "trials": len(trials),
        "trained": len(trained),
        "measured": len(measured),
        "within_bound": len(within),
        "within_share": len(within) / len(measured) if measured else 0.0,
        "refused": len(refused),
        "price_calls": sum(r.get("price_calls") or 0 for r in trials),
        "price_s": spread([r.get("price_s") or 0.0 for r in trials]),
        "train_s": spread([r["train_seconds"] for r in trained if r.get("train_seconds")]),
        "best_test_acc": best["test_acc"] if best else None,
    }


def spread(values: list[float]) -> dict:
    """Median and 95th percentile (nearest rank) of `values`; None for none."""
    if not values:
        return {"median": None, "p95": None}
    ranked = sorted(values)
    return {"median": statistics.median(ranked), "p95": ranked[round(0.95 * (len(ranked) - 1))]}


def print_table(runs: list[dict]) -> None:
    print(
        "| task | bound | method | arm | trained / trials | measured within bound | share "
        "| refused | pricing s/trial (median, p95) | training s/trial (median, p95) "
        "| best test acc | wall s | stopped |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["task"], r["bound"], r["method"], r["arm"]) for r in runs})
    for key in keys:
        task, bound, method, arm = key
        mine = [r for r in runs if (r["task"], r["bound"], r["method"], r["arm"]) == key]
        within = sum(r["within_bound"] for r in mine)
        total = sum(r["measured"] for r in mine)
        share = within / total if total else 0.0
        trained = f"{sum(r['trained'] for r in mine)}/{sum(r['trials'] for r in mine)}"
        accs = [r["best_test_acc"] for r in mine if r["best_test_acc"] is not None]
        acc = f"{statistics.median(accs):.2f}" if accs else "none"
        print(
            f"| {task} | {bound} | {method} | {arm} | {trained} | {within}/{total} | {share:.0%} | "
            f"{sum(r['refused'] for r in mine)} | {_pair(mine, 'price_s')} | "
            f"{_pair(mine, 'train_s')} | {acc} | "
            f"{statistics.median(r['wall_s'] for r in mine):.0f} | "
            f"{sum(r['stopped'] is not None for r in mine)}/{len(mine)} |"
        )


def _pair(runs: list[dict], key: str) -> str:
    """The medians over seeds of each run's median and p95."""
    medians = [r[key]["median"] for r in runs if r[key]["median"] is not None]
    p95s = [r[key]["p95"] for r in runs if r[key]["p95"] is not None]
    if not medians:
        return "-"
    return f"{statistics.median(medians):.3f}, {statistics.median(p95s):.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="mnist1d,digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--bounds", default="p10", help="p10 and/or p25 (joint's percentiles)")
    parser.add_argument("--out", default="benchmarks/out/priced_study.json")
    args = parser.parse_args(argv)
    for name, given, allowed in (
        ("tasks", args.tasks, joint.TASKS),
        ("methods", args.methods, METHODS),
        ("arms", args.arms, ARMS),
        ("bounds", args.bounds, ("p10", "p25")),
    ):
        unknown = sorted(set(given.split(",")) - set(allowed))
        if unknown:
            parser.error(f"--{name}: unknown {unknown}; allowed {sorted(allowed)}")
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.exists() else {}
    bounds, runs = saved.get("bounds", {}), saved.get("runs", [])
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    for task in args.tasks.split(","):
        bounds.setdefault(task, joint.latency_bounds(task))
        print(f"{task} bounds: {bounds[task]}", flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for bound_name in args.bounds.split(","):
                for method in args.methods.split(","):
                    for arm in args.arms.split(","):
                        key = {"task": task, "seed": seed, "bound": bound_name}
                        key |= {"method": method, "arm": arm}
                        if any(all(r[k] == v for k, v in key.items()) for r in runs):
                            continue
                        run = one_run(
                            task,
                            method,
                            arm,
                            seed=seed,
                            trials=args.trials,
                            bound=bounds[task][bound_name],
                        )
                        runs.append(key | run)
                        print(json.dumps(key | run), flush=True)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_text(json.dumps({"bounds": bounds, "runs": runs}, indent=1))
    print_table(runs)


if __name__ == "__main__":
    main()
