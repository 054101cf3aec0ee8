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

A `-priced` searcher (`bo-priced`, `evolution-priced`, `rl-priced`) is told the table's latency
as its price (`search.Price`) and never proposes a cell over the bound while one that fits turns
up: pricing calls are not evaluations, their number is reported; their regret is also divided
by the same searcher's unpriced regret.
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

import search
from benchmarks import nb201_data
from benchmarks.searchers import GP_PRIOR_HELP, _table, run, set_gp_prior, variant

BUDGETS = (25, 50, 100)
EPS = 0.01  # accuracy points added to both regrets of a ratio
SEARCHERS = [
    "bo",
    "bo-priced",
    "forest",
    "evolution",
    "evolution-priced",
    "rl",
    "rl-priced",
    "random",
    "optuna-gp",
    "optuna-tpe",
]
PRICED = "-priced"  # a searcher told the table's latency before it proposes (issue 33)
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
    """`(cell, kind, pending, seed, [regret at each of BUDGETS], (pricing calls, evaluations))`;
    a run that ended early (nothing priced to fit) reads its last regret at later budgets."""
    cell, kind, pending, seed = job
    problem = task(data, cell)
    if PRICED in kind:
        results, calls = run_priced(kind, problem, seed, pending=pending)
        regret = [problem.regret(results[:b]) for b in BUDGETS]
        return cell, kind, pending, seed, regret, (calls, len(results))
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
    return cell, kind, pending, seed, [problem.regret(results[:b]) for b in BUDGETS], None


def run_priced(kind: str, problem, seed: int, *, pending: int) -> tuple[list[dict], int]:
    """`kind` less `-priced` (`bo-priced:price_extra=4` takes options) with the table's
    latency as its price: `(results in evaluation order, pricing calls)`. Pricing calls are
    not evaluations; a run whose ask finds nothing that fits ends early."""
    name, options = variant(kind.replace(PRICED, "", 1))
    price = search.Price(lambda config: {"latency_ms": problem.evaluate(config)["latency_ms"]})
    searcher = search.create(
        name,
        problem.space,
        metric="val_acc",
        mode="max",
        seed=seed,
        constraints={"latency_ms": problem.bound},
        price=price,
        **options,
    )
    results, queue = [], []
    try:
        while len(results) < max(BUDGETS):
            while len(queue) < pending and len(results) + len(queue) < max(BUDGETS):
                queue.append(searcher.ask())
            trial = queue.pop(0)
            metrics = problem.evaluate(trial.config)
            searcher.tell(trial.id, metrics)
            results.append(metrics)
    except search.NothingFits:
        pass
    return results, price.stats["calls"]


def collect(jobs, data, pool) -> dict:
    """`{(cell, kind, pending): array seeds x budgets}`, printing each group as it completes,
    and `{(cell, kind, pending): [(pricing calls, evaluations) per seed]}` of the priced ones."""
    out: dict = {}
    calls: dict = {}
    expected: dict = {}
    for cell, kind, pending, _ in jobs:
        expected[cell, kind, pending] = expected.get((cell, kind, pending), 0) + 1
    for cell, kind, pending, _, values, priced in pool.imap_unordered(
        functools.partial(regrets, data=data), jobs
    ):
        out.setdefault((cell, kind, pending), []).append(values)
        calls.setdefault((cell, kind, pending), []).append(priced)
        if len(out[cell, kind, pending]) == expected[cell, kind, pending]:
            median = np.median(out[cell, kind, pending], axis=0)
            print(f"  {cell.label} {kind} x{pending}: median {np.round(median, 3)}", flush=True)
    found = {key: np.array(values) for key, values in out.items()}
    return found, {key: values for key, values in calls.items() if PRICED in key[1]}


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
    for against, name in (("optuna-gp", "Optuna GP"), ("random", "random")):
        if against in kinds:
            pairs = [(kind, against) for kind in kinds if kind != against]
            tables.append(ratio_table(found, cells, pairs, f"Median regret / {name}'s"))
    plain = {kind: kind.replace(PRICED, "", 1) for kind in kinds if PRICED in kind}
    pairs = [(kind, against) for kind, against in plain.items() if against in kinds]
    if pairs:
        tables.append(ratio_table(found, cells, pairs, "Median regret priced / unpriced"))
    return tables


def calls_table(calls: dict, cells, kinds) -> str:
    """Median (max) pricing calls per run of 100 evaluations, per priced searcher and cell,
    and how many runs ended before 100 evaluations (their fewest)."""
    kinds = [k for k in kinds if PRICED in k]

    def cell_text(runs: list) -> str:
        spent = [c for c, _ in runs]
        short = [n for _, n in runs if n is not None and n < max(BUDGETS)]
        text = f"{np.median(spent):.0f} ({max(spent)})"
        return text + (f"; {len(short)} ended early (at {min(short)})" if short else "")

    rows = [
        [cell.label]
        + [cell_text(calls[cell, k, 1]) if (cell, k, 1) in calls else "-" for k in kinds]
        for cell in cells
    ]
    return _table(
        f"Pricing calls per run of {max(BUDGETS)} evaluations, median (max) over seeds; runs "
        "that ended early (an ask found nothing priced to fit within its budget)",
        ["cell"] + kinds,
        rows,
    )


def ratio_table(found: dict, cells, pairs: list[tuple[str, str]], title: str) -> str:
    """Per (searcher, against) pair and budget: the geometric mean over the cells of the
    searcher's median-regret ratio to `against`'s, and the worst cell."""
    rows = []
    for kind, against in pairs:
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
    return _table(f"{title}, over {len(cells)} cells", header, rows)


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
    found, calls = {}, {}
    for row in saved["runs"]:
        key = (Cell(*row["cell"]), row["searcher"], row["pending"])
        found[key] = np.array(row["regrets"])
        if "pricing_calls" in row:  # evaluations: None in files from before they were kept
            evaluations = row.get("evaluations", [None] * len(row["pricing_calls"]))
            calls[key] = list(zip(row["pricing_calls"], evaluations))
    return found, calls


def missing_jobs(cells, kinds, pendings, seeds: range, reused: dict) -> list[tuple]:
    """The `(cell, kind, pending, seed)` runs still to do: a group of k reused runs holds the
    first k of `seeds`, so an earlier `--out` grows to more seeds."""
    return [
        (c, k, p, s)
        for c in cells
        for k in kinds
        for p in pendings
        for s in seeds[len(reused.get((c, k, p), ())) :]
    ]


def _joined(first: np.ndarray | None, then: np.ndarray | None) -> np.ndarray:
    """Two groups' runs (seeds x budgets), either missing."""
    return np.concatenate([v for v in (first, then) if v is not None])


def _save(found: dict, calls: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"cell": list(cell), "searcher": kind, "pending": pending, "regrets": values.tolist()}
        | (_calls_row(calls[cell, kind, pending]) if (cell, kind, pending) in calls else {})
        for (cell, kind, pending), values in found.items()
    ]
    path.write_text(json.dumps({"budgets": BUDGETS, "eps": EPS, "runs": rows}))


def _calls_row(runs: list) -> dict:
    return {"pricing_calls": [c for c, _ in runs], "evaluations": [n for _, n in runs]}


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
        help="earlier --out files: their runs kept (and saved), only missing seeds run",
    )
    args = parser.parse_args()
    data = str(nb201_data.require(args.data))
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    parallel = args.mode == "parallel"
    all_cells = PARALLEL_CELLS if parallel else CELLS
    cells = [all_cells[int(i)] for i in args.cells.split(",")] if args.cells else all_cells
    kinds = args.only or (PARALLEL_SEARCHERS if parallel else SEARCHERS)
    pendings = (1, 4) if parallel else (1,)
    reused, reused_calls = {}, {}
    for path in args.reuse:  # a later file's group replaces an earlier's, calls included
        found, calls = _load(path)
        reused |= found
        reused_calls = {k: v for k, v in reused_calls.items() if k not in found} | calls
    jobs = missing_jobs(cells, kinds, pendings, seeds, reused)
    start = time.time()
    with Pool(args.workers, initializer=set_gp_prior, initargs=(args.gp_prior,)) as pool:
        found, calls = collect(jobs, data, pool)
    found = {key: _joined(reused.get(key), found.get(key)) for key in reused.keys() | found.keys()}
    calls = {key: reused_calls.get(key, []) + calls.get(key, []) for key in reused_calls | calls}
    shown = {key: values[: args.seeds] for key, values in found.items()}  # saved: all
    tables = (
        [parallel_table(shown, cells, kinds, args.seeds)]
        if parallel
        else regret_tables(shown, cells, kinds, args.seeds)
    )
    if calls:
        tables.append(calls_table({k: v[: args.seeds] for k, v in calls.items()}, cells, kinds))
    print("\n\n".join(tables))
    print(f"\n({args.mode}: {time.time() - start:.0f} s wall on this machine)")
    out = args.out or ROOT / "benchmarks" / "out" / f"matrix-{args.mode}.json"
    _save(found, calls, out)


if __name__ == "__main__":
    main()
