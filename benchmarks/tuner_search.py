"""`ParetuneSearch("bo")` in a user's own Ray Tune `Tuner` against the ask/tell `bo`, on the
synthetic problems of `benchmarks.searchers` (Branin, Hartmann6, constrained Gardner), same
seeds, same budgets.

    python -m benchmarks.tuner_search [--seeds 10] [--parallel 1] [--budget N]

With `--parallel 1` (the default) Tune runs one trial at a time and the searcher sees exactly
the ask/tell sequence, so the regrets should be equal seed by seed; with `--parallel 2` the
Tuner runs two trials at once and is compared with ask/tell holding two pending trials.
Prints a Markdown table of median regrets and how many seeds gave identical results.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from benchmarks.searchers import SYNTHETIC, run_ours  # noqa: E402


def _evaluate(problem: str, config: dict) -> dict:
    _, f, _, _, constraint = SYNTHETIC[problem]
    g, _ = constraint or (lambda c: 0.0, 0.0)
    return {"y": f(config), "c": g(config)}


def _trial(config, problem):
    from ray import tune

    tune.report(_evaluate(problem, config))


def in_tuner(problem: str, seed: int, budget: int, parallel: int, folder: str) -> list[dict]:
    """The results of `ParetuneSearch("bo")` driving a plain Tuner over the problem."""
    from ray import tune

    from cluster.raytune import ParetuneSearch

    space, _, _, _, constraint = SYNTHETIC[problem]
    constraints = {"c": constraint[1]} if constraint else None
    search_alg = ParetuneSearch(
        "bo", space, metric="y", mode="min", seed=seed, constraints=constraints
    )
    grid = tune.Tuner(
        tune.with_parameters(_trial, problem=problem),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            num_samples=budget,
            max_concurrent_trials=parallel,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=folder, verbose=0),
    ).fit()
    return [{"y": r.metrics["y"], "c": r.metrics["c"]} for r in grid]


def ask_tell(problem: str, seed: int, budget: int, parallel: int) -> list[dict]:
    space, _, _, _, constraint = SYNTHETIC[problem]
    constraints = {"c": constraint[1]} if constraint else None
    return run_ours(
        "bo",
        space,
        lambda c: _evaluate(problem, c),
        budget,
        seed,
        metric="y",
        mode="min",
        constraints=constraints,
        pending=parallel,
    )


def regret(problem: str, results: list[dict]) -> float:
    _, _, optimum, _, constraint = SYNTHETIC[problem]
    bound = constraint[1] if constraint else math.inf
    feasible = [r["y"] for r in results if r["c"] <= bound]
    return min(feasible) - optimum if feasible else math.inf


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--budget", type=int, help="trials per run (default: the problem's)")
    parser.add_argument("--problems", nargs="+", default=list(SYNTHETIC))
    args = parser.parse_args(argv)
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
    )
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    start = time.time()
    lines = [
        f'### `ParetuneSearch("bo")` in a Tuner vs ask/tell `bo`: median regret, '
        f"{args.seeds} seeds, {args.parallel} at a time",
        "",
        "| problem | ask/tell bo | ParetuneSearch in a Tuner | seeds with equal regret |",
        "|---|---|---|---|",
    ]
    for problem in args.problems:
        budget = args.budget or SYNTHETIC[problem].budget
        ours, tuned = [], []
        for seed in range(args.seeds):
            ours.append(regret(problem, ask_tell(problem, seed, budget, args.parallel)))
            with tempfile.TemporaryDirectory() as folder:
                results = in_tuner(problem, seed, budget, args.parallel, folder)
            tuned.append(regret(problem, results))
            print(f"{problem} seed {seed}: ask/tell {ours[-1]:.4g}, Tuner {tuned[-1]:.4g}")
        equal = sum(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(ours, tuned))
        lines.append(
            f"| {problem} | {statistics.median(ours):.4g} | {statistics.median(tuned):.4g} "
            f"| {equal}/{args.seeds} |"
        )
    print("\n".join(lines))
    print(f"\n({time.time() - start:.0f} s wall on this machine)")


if __name__ == "__main__":
    main()
