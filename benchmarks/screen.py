"""A price's screen on NAS-Bench-201 (issue 33): `bo` told the table's latency as its price,
exactly (`search.Price(fn)`) against screened (`search.Price(fn, screen=20)`: past 20 exact
prices a model fit on them answers for the cells clearly over or under the bound).

    python -W ignore -m benchmarks.screen                        # 3 cells, 5 seeds, 100 evals
    python -W ignore -m benchmarks.screen --seeds 2 --evals 50 --cells 10

Cells as `benchmarks.matrix` defines them (`--cells`: their numbers). Per cell and price: the
exact pricing calls and the answers the screen gave per run (median over seeds), median regret
at 25, 50 and the full budget (as `matrix` reads it), and the proposals whose true latency
breaks the bound (a screened acceptance the model got wrong), summed over seeds.
"""

from __future__ import annotations

import argparse
import functools
import time
from multiprocessing import Pool

import numpy as np

import search
from benchmarks import nb201_data
from benchmarks.matrix import CELLS, task
from benchmarks.searchers import _table

DEFAULT_CELLS = "0,4,10"  # pixel3 p10, gold_6226 p25, fpga p10
SCREEN = 20  # exact prices before the screen answers
PRICES = {"exact": None, f"screen={SCREEN}": SCREEN}


def one_run(job, *, data: str, evals: int) -> tuple:
    """`(cell, price, seed, regrets at each budget, exact calls, screened, over the bound)`."""
    cell, label, seed = job
    problem = task(data, cell)
    price = search.Price(
        lambda config: {"latency_ms": problem.evaluate(config)["latency_ms"]},
        screen=PRICES[label],
    )
    searcher = search.create(
        "bo",
        problem.space,
        metric="val_acc",
        mode="max",
        seed=seed,
        constraints={"latency_ms": problem.bound},
        price=price,
    )
    results = []
    try:
        while len(results) < evals:
            trial = searcher.ask()
            metrics = problem.evaluate(trial.config)
            searcher.tell(trial.id, metrics)
            results.append(metrics)
    except search.NothingFits:
        pass
    over = sum(r["latency_ms"] > problem.bound for r in results)
    regrets = [problem.regret(results[:b]) for b in budgets(evals)]
    return cell, label, seed, regrets, price.stats["calls"], price.stats["screened"], over


def budgets(evals: int) -> list[int]:
    return sorted({min(25, evals), min(50, evals), evals})


def table(runs: list[tuple], cells, seeds: int, evals: int) -> str:
    rows = []
    for cell in cells:
        for label in PRICES:
            mine = [r for r in runs if r[0] == cell and r[1] == label]
            regret = np.median([r[3] for r in mine], axis=0)
            rows.append(
                [cell.label, label]
                + [f"{np.median([r[k] for r in mine]):.0f}" for k in (4, 5)]
                + [f"{v:.3f}" for v in regret]
                + [str(sum(r[6] for r in mine))]
            )
    header = ["cell", "price", "exact calls", "screened"]
    header += [f"regret @{b}" for b in budgets(evals)] + ["over the bound"]
    title = f"bo priced exactly and screened, {seeds} seeds, {evals} evaluations (medians)"
    return _table(title, header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evals", type=int, default=100)
    parser.add_argument(
        "--cells", default=DEFAULT_CELLS, help="cell numbers (0-11), comma-separated"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", help="the NB201 folder (default: PARETUNE_NB201 or ../shared)")
    args = parser.parse_args()
    data = str(nb201_data.require(args.data))
    cells = [CELLS[int(i)] for i in args.cells.split(",")]
    jobs = [(c, label, s) for c in cells for label in PRICES for s in range(args.seeds)]
    start = time.time()
    with Pool(args.workers) as pool:
        runs = pool.map(functools.partial(one_run, data=data, evals=args.evals), jobs)
    print(table(runs, cells, args.seeds, args.evals))
    print(f"\n({time.time() - start:.0f} s wall on this machine)")


if __name__ == "__main__":
    main()
