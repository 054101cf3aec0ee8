"""Search quality over a matrix of constrained NAS-Bench-201 tasks (issue 20).

    python -W ignore -m benchmarks.matrix              # 12 cells, 10 seeds, ~1 h on 2 cores
    python -W ignore -m benchmarks.matrix parallel     # 4 cells: 4 pending against sequential

A cell maximizes one dataset's validation accuracy with one device's latency at most a
percentile of all 15,625 cells. The 12 cells cover the three datasets, six devices (a phone, a
Raspberry Pi, a Xeon, a GPU at batch 1, eyeriss, an FPGA) and bounds at the 10th, 25th and
50th percentile. Every searcher runs 100 evaluations per seed; regret (accuracy points below
the cell's feasible optimum) is read at 25, 50 and 100. Ratios divide median regrets with
`EPS` added to both, so a cell both searchers solve reads 1.0. `--out` keeps every regret
(JSON), `--only`, `--seeds`, `--cells` narrow the run.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from multiprocessing import Pool
from pathlib import Path
from typing import NamedTuple

import numpy as np

from benchmarks import nb201_data
from benchmarks.searchers import GP_PRIOR_HELP, _table, run, set_gp_prior

BUDGETS = (25, 50, 100)
EPS = 0.01  # accuracy points added to both regrets of a ratio
SEARCHERS = ["bo", "forest", "evolution", "rl", "random", "optuna-gp", "optuna-tpe"]
PARALLEL_SEARCHERS = ["bo", "evolution"]
ROOT = Path(__file__).resolve().parents[1]


class Cell(NamedTuple):
    dataset: str
    device: str
    quantile: float

    @property
    def label(self) -> str:
        return f"{self.dataset.split('-')[0]} {self.device} p{round(self.quantile * 100)}"


DATASETS = ("cifar10-val", "cifar100-val", "imagenet16-val")
DEVICES = ("pixel3", "raspi4", "gold_6226", "titan_rtx_1", "eyeriss", "fpga")
QUANTILES = (0.1, 0.25, 0.5)
# two cells per device; the first nine cover every dataset at every percentile
CELLS = [Cell(DATASETS[k % 3], DEVICES[k // 2], QUANTILES[k // 3 % 3]) for k in range(12)]
PARALLEL_CELLS = [CELLS[k] for k in (0, 4, 8, 10)]


@functools.cache
def task(data: str, cell: Cell) -> nb201_data.Task:
    table = nb201_data.load(Path(data), accuracy=cell.dataset, device=cell.device)
    return nb201_data.Task(table, quantile=cell.quantile)


def regrets(job, data: str) -> tuple:
    """`(cell, kind, pending, seed, [regret at each of BUDGETS])`."""
    cell, kind, pending, seed = job
    problem = task(data, cell)
    extra = {} if kind.startswith("optuna") else {"pending": pending}
    results = run(
        kind,
        problem.space,
        problem.evaluate,
        max(BUDGETS),
        seed,
        metric="val_acc",
        mode="max",
        constraints={"latency_ms": problem.bound},
        **extra,
    )
    return cell, kind, pending, seed, [problem.regret(results[:b]) for b in BUDGETS]


def collect(jobs, data, pool) -> dict:
    """`{(cell, kind, pending): array seeds x budgets}`, printing each group as it completes."""
    out: dict = {}
    expected: dict = {}
    for cell, kind, pending, _ in jobs:
        expected[cell, kind, pending] = expected.get((cell, kind, pending), 0) + 1
    for cell, kind, pending, _, values in pool.imap_unordered(
        functools.partial(regrets, data=data), jobs
    ):
        out.setdefault((cell, kind, pending), []).append(values)
        if len(out[cell, kind, pending]) == expected[cell, kind, pending]:
            median = np.median(out[cell, kind, pending], axis=0)
            print(f"  {cell.label} {kind} x{pending}: median {np.round(median, 3)}", flush=True)
    return {key: np.array(values) for key, values in out.items()}


def ratio(a: np.ndarray, b: np.ndarray) -> float:
    return float((a + EPS) / (b + EPS))


def geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def regret_tables(found: dict, cells, kinds, seeds: int) -> list[str]:
    """Median regret per cell at each budget, and each searcher's ratio to Optuna's GP."""
    tables = []
    for b, budget in enumerate(BUDGETS):
        rows = [
            [cell.label] + [f"{np.median(found[cell, k, 1][:, b]):.3f}" for k in kinds]
            for cell in cells
        ]
        tables.append(
            _table(f"Median regret at {budget} evaluations, {seeds} seeds", ["cell"] + kinds, rows)
        )
    if "optuna-gp" in kinds:
        tables.append(ratio_table(found, cells, kinds, "optuna-gp", "Optuna GP"))
    if "random" in kinds:
        tables.append(ratio_table(found, cells, kinds, "random", "random"))
    return tables


def ratio_table(found: dict, cells, kinds, against: str, name: str) -> str:
    """Per searcher and budget: the geometric mean of its median-regret ratio to `against`
    over the cells, and the worst cell."""
    rows = []
    for kind in (k for k in kinds if k != against):
        row = [kind]
        for b in range(len(BUDGETS)):
            ratios = [
                ratio(np.median(found[c, kind, 1][:, b]), np.median(found[c, against, 1][:, b]))
                for c in cells
            ]
            worst = int(np.argmax(ratios))
            row += [f"{geomean(ratios):.2f}", f"{ratios[worst]:.2f} ({cells[worst].label})"]
        rows.append(row)
    header = ["searcher"]
    for budget in BUDGETS:
        header += [f"geo. mean @{budget}", f"worst cell @{budget}"]
    return _table(f"Median regret / {name}'s, over {len(cells)} cells", header, rows)


def parallel_table(found: dict, cells, kinds, seeds: int) -> str:
    rows = []
    for kind in kinds:
        mean_ratios = [
            ratio(found[c, kind, 4][:, -1].mean(), found[c, kind, 1][:, -1].mean()) for c in cells
        ]
        median_ratios = [
            ratio(np.median(found[c, kind, 4][:, -1]), np.median(found[c, kind, 1][:, -1]))
            for c in cells
        ]
        rows.append(
            [kind]
            + [f"{m:.2f} / {r:.2f}" for m, r in zip(mean_ratios, median_ratios)]
            + [f"{geomean(mean_ratios):.2f}", f"{geomean(median_ratios):.2f}"]
        )
    return _table(
        f"Regret at 100 evaluations with 4 pending / sequential (mean / median), {seeds} seeds",
        ["searcher"] + [c.label for c in cells] + ["geo. mean (mean)", "geo. mean (median)"],
        rows,
    )


def _load(path: Path) -> dict:
    """The runs a `--out` file holds, keyed as `collect` keys them."""
    saved = json.loads(path.read_text())
    if list(saved["budgets"]) != list(BUDGETS):
        raise SystemExit(f"{path}: budgets {saved['budgets']}, this run reads {list(BUDGETS)}")
    return {
        (Cell(*run["cell"]), run["searcher"], run["pending"]): np.array(run["regrets"])
        for run in saved["runs"]
    }


def _save(found: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"cell": list(cell), "searcher": kind, "pending": pending, "regrets": values.tolist()}
        for (cell, kind, pending), values in found.items()
    ]
    path.write_text(json.dumps({"budgets": BUDGETS, "eps": EPS, "runs": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", nargs="?", choices=["regret", "parallel"], default="regret")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", help="these searchers (bo:n_initial=5 takes options)")
    parser.add_argument("--cells", help="cell numbers, comma-separated (0-11)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", help="the NB201 folder (default: PARETUNE_NB201 or ../shared)")
    parser.add_argument("--gp-prior", help=GP_PRIOR_HELP)
    parser.add_argument("--out", type=Path, help="every regret as JSON (benchmarks/out/...)")
    parser.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=[],
        help="earlier --out files: runs kept, not rerun",
    )
    args = parser.parse_args()
    data = str(nb201_data.require(args.data))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    parallel = args.mode == "parallel"
    all_cells = PARALLEL_CELLS if parallel else CELLS
    cells = [all_cells[int(i)] for i in args.cells.split(",")] if args.cells else all_cells
    kinds = args.only or (PARALLEL_SEARCHERS if parallel else SEARCHERS)
    pendings = (1, 4) if parallel else (1,)
    reused = {}
    for path in args.reuse:
        reused |= {key: v for key, v in _load(path).items() if len(v) == args.seeds}
    jobs = [
        (c, k, p, s)
        for c in cells
        for k in kinds
        for p in pendings
        if (c, k, p) not in reused
        for s in seeds
    ]
    start = time.time()
    with Pool(args.workers, initializer=set_gp_prior, initargs=(args.gp_prior,)) as pool:
        found = reused | collect(jobs, data, pool)
    tables = (
        [parallel_table(found, cells, kinds, args.seeds)]
        if parallel
        else regret_tables(found, cells, kinds, args.seeds)
    )
    print("\n\n".join(tables))
    print(f"\n({args.mode}: {time.time() - start:.0f} s wall on this machine)")
    out = args.out or ROOT / "benchmarks" / "out" / f"matrix-{args.mode}.json"
    _save(found, out)


if __name__ == "__main__":
    main()
