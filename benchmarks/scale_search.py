"""What a searcher's ask costs in a long study, and what bounding `bo`'s GPs costs in regret.

    python -m benchmarks.scale_search asks     # ask p50/p95/max at 1,000, 3,000, 10,000 obs.
    python -m benchmarks.scale_search regret   # bo bounded vs exact, Hartmann6, 1,000 obs. on

`asks`: 10 continuous dimensions, the observations (random configs on a shifted sphere) added
with `Searcher.add`, one warm-up ask+tell (a resumed study reads its history once), then
`--asks` ask+tell pairs, of which the asks are timed; one thread (BLAS and OpenMP pinned).
`--sizes` and `--searchers` adjust it. `regret`: both variants start from the same `--start`
random observations, then ask and tell `--asks` times; regret is the best value found minus
Hartmann6's optimum, median over `--seeds`; `--max-fit` is the bounded variant's `max_fit`.
Run it alone on the machine: it times.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import search  # noqa: E402
from benchmarks.searchers import SYNTHETIC  # noqa: E402
from spaces import Float, Space  # noqa: E402

DIMS = 10
SEARCHERS = ("random", "evolution", "forest", "bo")


def sphere(config: dict) -> float:
    return float(sum((config[f"x{i}"] - 0.3) ** 2 for i in range(DIMS)))


def filled(name: str, space: Space, points: np.ndarray, f, seed: int, **options):
    """A searcher told `f` at every row of `points` (unit cube) through `Searcher.add`."""
    searcher = search.create(name, space, metric="y", mode="min", seed=seed, **options)
    for u in points:
        config = space.decode(u)
        searcher.add(config, {"y": f(config)})
    return searcher


def ask_times(name: str, size: int, asks: int, seed: int) -> np.ndarray:
    """Seconds per ask after `size` observations (the tells untimed)."""
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(DIMS)})
    points = np.random.default_rng(seed).random((size, DIMS))
    searcher = filled(name, space, points, sphere, seed)
    times = []
    for step in range(asks + 1):
        start = time.perf_counter()
        trial = searcher.ask()
        if step:  # the first ask reads the history in once
            times.append(time.perf_counter() - start)
        searcher.tell(trial.id, {"y": sphere(trial.config)})
    return np.array(times)


def asks_table(args) -> str:
    rows = []
    for size in args.sizes:
        for name in args.searchers:
            t = ask_times(name, size, args.asks, args.first_seed)
            p50, p95 = np.percentile(t, [50, 95])
            rows.append([f"{size:,}", name, f"{p50:.4f}", f"{p95:.4f}", f"{t.max():.4f}"])
            print(" | ".join(rows[-1]), flush=True)
    return table(
        f"Ask seconds after N observations, {DIMS} continuous dimensions, one thread, "
        f"{args.asks} asks",
        ["observations", "searcher", "p50 (s)", "p95 (s)", "max (s)"],
        rows,
    )


def regret_run(max_fit: int, args, seed: int) -> tuple[float, float]:
    """Hartmann6 regret after `--start` random observations and `--asks` asks, and the mean
    seconds per ask."""
    problem = SYNTHETIC["hartmann6"]
    points = np.random.default_rng(seed).random((args.start, len(problem.space)))
    searcher = filled("bo", problem.space, points, problem.objective, seed, max_fit=max_fit)
    start = time.perf_counter()
    for _ in range(args.asks):
        trial = searcher.ask()
        searcher.tell(trial.id, {"y": problem.objective(trial.config)})
    seconds = (time.perf_counter() - start) / args.asks
    return searcher.best()["metrics"]["y"] - problem.optimum, seconds


def regret_table(args) -> str:
    variants = {"bo, bounded": args.max_fit, "bo, exact": args.start + args.asks + 1}
    rows = []
    for label, max_fit in variants.items():
        runs = [regret_run(max_fit, args, seed) for seed in args.seed_range]
        regrets, seconds = zip(*runs)
        rows.append(
            [
                label,
                f"{max_fit:,}",
                f"{np.median(regrets):.4f}",
                " ".join(f"{r:.4f}" for r in regrets),
                f"{np.mean(seconds):.2f}",
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    return table(
        f"Hartmann6 regret after {args.start:,} random observations and {args.asks} bo asks, "
        f"median of {len(args.seed_range)} seeds",
        ["variant", "max_fit", "median regret", "per seed", "s per ask"],
        rows,
    )


def table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["asks", "regret"])
    parser.add_argument("--sizes", default="1000,3000,10000", help="asks: observations")
    parser.add_argument("--searchers", default=",".join(SEARCHERS), help="asks: which")
    parser.add_argument("--asks", type=int, help="timed asks (asks: 40), or bo's asks (20)")
    parser.add_argument("--start", type=int, default=1000, help="regret: random observations")
    parser.add_argument(
        "--max-fit",
        type=int,
        default=search.option_defaults("bo")["max_fit"],
        help="regret: the bounded variant's max_fit (bo's default)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="regret: seeds (3)")
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.searchers = args.searchers.split(",")
    args.asks = args.asks or (40 if args.mode == "asks" else 20)
    args.seed_range = range(args.first_seed, args.first_seed + args.seeds)
    with threadpool_limits(1):
        print(asks_table(args) if args.mode == "asks" else regret_table(args))


if __name__ == "__main__":
    main()
