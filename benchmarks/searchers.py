"""Our searchers against Optuna's and random search, same budgets, same run.

    python -m benchmarks.searchers synthetic   # Branin, Hartmann6, constrained Gardner; 100 seeds
    python -m benchmarks.searchers nb201       # NB201, pixel3 latency <= its 25th pct, 20 seeds
    python -m benchmarks.searchers nb201-mo    # NB201, accuracy vs pixel3 latency, hypervolume
    python -m benchmarks.searchers parallel    # bo/evolution with 4 pending vs sequential
    python -m benchmarks.searchers speed       # bo's ask at 200 observations in 10 dims

Each prints a Markdown table; `--seeds`, `--first-seed`, `--workers` and `--data` (NB201
folder, or the PARETUNE_NB201 variable) adjust it; `--only` (synthetic, nb201, parallel) takes
searchers with options (`bo:feasibility_weight=0.5`). Without the NB201 tables the nb201 modes
skip cleanly.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from functools import partial
from multiprocessing import Pool
from typing import NamedTuple

import numpy as np
import optuna
from scipy.stats import mannwhitneyu, spearmanr

import search
from benchmarks import nb201_data
from search import gp
from search.pareto import hypervolume
from spaces import Float, Space, nb201_config

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- problems ---------------------------------------------------------------------------------
def branin(c: dict) -> float:
    x1, x2 = c["x1"], c["x2"]
    b, cc, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + cc * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


HARTMANN_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
HARTMANN_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
# a run that ends at or above this regret ended in the local basin at -3.2032 (regret 0.119)
HARTMANN_TRAPPED = 0.1


def hartmann6(c: dict) -> float:
    x = np.array([c[f"x{i}"] for i in range(6)])
    return float(-HARTMANN_ALPHA @ np.exp(-np.sum(HARTMANN_A * (x - HARTMANN_P) ** 2, axis=1)))


def gardner(c: dict) -> float:
    """Gardner et al. (2014), problem 1; feasible where `gardner_constraint(c) <= 0.5`."""
    return math.cos(2 * c["x"]) * math.cos(c["y"]) + math.sin(c["x"])


def gardner_constraint(c: dict) -> float:
    return math.cos(c["x"]) * math.cos(c["y"]) - math.sin(c["x"]) * math.sin(c["y"])


class Problem(NamedTuple):
    space: Space
    objective: Callable[[dict], float]
    optimum: float
    budget: int
    constraint: tuple[Callable[[dict], float], float] | None = None  # function, its bound


SYNTHETIC = {
    "branin": Problem(
        Space({"x1": Float(-5.0, 10.0), "x2": Float(0.0, 15.0)}), branin, 0.397887, 40
    ),
    "hartmann6": Problem(
        Space({f"x{i}": Float(0.0, 1.0) for i in range(6)}), hartmann6, -3.32237, 60
    ),
    # the optimum -2 is at (3 pi / 2, 0), where the constraint is 0
    "gardner": Problem(
        Space({"x": Float(0.0, 6.0), "y": Float(0.0, 6.0)}),
        gardner,
        -2.0,
        40,
        (gardner_constraint, 0.5),
    ),
}
# variants of our searchers, by the name the tables give them
VARIANTS = {"bo-cei": ("bo", {"feasibility_weight": 1.0})}  # classic constrained EI


def variant(kind: str) -> tuple[str, dict]:
    """A searcher and its options from a table name: a variant, or `name:key=value,...`
    (`bo:feasibility_weight=0.5,acquisition=ucb`)."""
    if kind in VARIANTS:
        return VARIANTS[kind]
    name, _, given = kind.partition(":")
    pairs = [item.partition("=") for item in given.split(",") if item]
    return name, {key: _literal(value) for key, _, value in pairs}


def _literal(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_gp_prior(text: str | None) -> None:
    """`--gp-prior noise=-4,noise_std=2`: move the centre (`KEY`) or spread (`KEY_std`) of the
    log-normal priors of `search.gp`, in this process (a pool's initializer)."""
    for item in (text or "").split(","):
        if item:
            key, _, value = item.partition("=")
            table, key = (gp.PRIOR_STD, key[:-4]) if key.endswith("_std") else (gp.PRIOR_MEAN, key)
            if key not in table:
                raise ValueError(f"--gp-prior: {key!r} is not a prior; allowed {sorted(table)}")
            table[key] = float(value)


GP_PRIOR_HELP = "move search.gp's priors: noise=-4,noise_std=2 (experiments)"


# -- runners: each returns the list of results in evaluation order -------------------------------
def run_ours(
    name, space, evaluate, budget, seed, *, metric, mode, constraints=None, pending=1, **options
):
    searcher = search.create(
        name, space, metric=metric, mode=mode, seed=seed, constraints=constraints, **options
    )
    results, queue = [], []
    while len(results) < budget:
        while len(queue) < pending and len(results) + len(queue) < budget:
            queue.append(searcher.ask())
        trial = queue.pop(0)
        metrics = evaluate(trial.config)
        searcher.tell(trial.id, metrics)
        results.append(metrics)
    return results


def optuna_sampler(kind: str, seed: int, constrained: bool):
    cons = (lambda t: [t.user_attrs["violation"]]) if constrained else None
    if kind == "optuna-gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=cons)
    if kind == "optuna-tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cons)
    if kind == "optuna-nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cons)
    raise ValueError(kind)


def run_optuna(kind, space, evaluate, budget, seed, *, metric, mode, constraints=None):
    metrics = [metric] if isinstance(metric, str) else list(metric)
    modes = [mode] * len(metrics) if isinstance(mode, str) else list(mode)
    results = []

    def objective(trial):
        config = {}
        for name, param in space.params.items():
            if isinstance(param, Float):
                config[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
            else:
                config[name] = trial.suggest_categorical(name, list(param.options))
        values = evaluate(config)
        results.append(values)
        excess = [values[c] - bound for c, bound in (constraints or {}).items()]
        trial.set_user_attr("violation", max(excess) if excess else 0.0)
        out = [values[m] for m in metrics]
        return out[0] if len(out) == 1 else out

    study = optuna.create_study(
        sampler=optuna_sampler(kind, seed, bool(constraints)),
        directions=["maximize" if m == "max" else "minimize" for m in modes],
    )
    study.optimize(objective, n_trials=budget)
    return results


def run(kind, *args, **kwargs):
    if kind.startswith("optuna-"):
        return run_optuna(kind, *args, **kwargs)
    name, options = variant(kind)
    return run_ours(name, *args, **kwargs, **options)


def _table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- modes -------------------------------------------------------------------------------------
def _synthetic_regret(job):
    problem, kind, seed = job
    space, f, optimum, budget, constraint = SYNTHETIC[problem]
    g, bound = constraint or (lambda c: 0.0, 0.0)

    def evaluate(c):
        return {"y": f(c), "c": g(c)}

    constraints = {"c": bound} if constraint else None
    results = run(
        kind, space, evaluate, budget, seed, metric="y", mode="min", constraints=constraints
    )
    feasible = [r["y"] for r in results if r["c"] <= bound]
    return problem, kind, min(feasible) - optimum if feasible else math.inf


def synthetic(args, pool) -> str:
    kinds = args.only or ["bo", "optuna-gp", "optuna-tpe", "random", "bo-cei"]
    jobs = [
        (p, k, s)
        for p, problem in SYNTHETIC.items()
        for k in kinds
        if problem.constraint or k != "bo-cei"  # bo-cei differs from bo on constraints only
        for s in args.seed_range
    ]
    regrets: dict = {}
    for problem, kind, regret in pool.imap_unordered(_synthetic_regret, jobs):
        regrets.setdefault((problem, kind), []).append(regret)
    tested = {"bo", "optuna-gp"} <= set(kinds)

    def cells(p, statistic):
        return [f"{statistic(regrets[p, k]):.4g}" if (p, k) in regrets else "-" for k in kinds]

    rows = [
        [p]
        + cells(p, np.median)
        + (
            [f"{mannwhitneyu(regrets[p, 'bo'], regrets[p, 'optuna-gp']).pvalue:.2f}"]
            if tested
            else []
        )
        for p in SYNTHETIC
    ]
    header = ["problem"] + kinds + ["p, bo vs optuna-gp (Mann-Whitney)"] * tested
    trapped = ["hartmann6, share of seeds in the -3.20 basin"] + cells(
        "hartmann6", lambda r: np.mean(np.array(r) >= HARTMANN_TRAPPED)
    )
    means = [[p] + cells(p, np.mean) for p in SYNTHETIC] + [trapped]
    return "\n\n".join(
        [
            _table(f"Median regret, {args.seeds} seeds", header, rows),
            _table(f"Mean regret, {args.seeds} seeds", ["problem"] + kinds, means),
        ]
    )


def _nb201_regret(job, data, pending=1):
    kind, seed = job
    task = nb201_data.Task(nb201_data.load(data))
    extra = {} if kind.startswith("optuna") else {"pending": pending}
    results = run(
        kind,
        task.space,
        task.evaluate,
        100,
        seed,
        metric="val_acc",
        mode="max",
        constraints={"latency_ms": task.bound},
        **extra,
    )
    return kind, task.regret(results)


def nb201(args, pool) -> str:
    data = nb201_data.require(args.data)
    kinds = args.only or ["bo", "evolution", "rl", "random", "optuna-gp", "optuna-tpe", "bo-cei"]
    jobs = [(k, s) for k in kinds for s in args.seed_range]
    regrets: dict = {}
    for kind, regret in pool.imap_unordered(partial(_nb201_regret, data=data), jobs):
        regrets.setdefault(kind, []).append(regret)
        if len(regrets[kind]) == args.seeds:  # progress, in case a long run is cut short
            print(f"{kind}: median regret {np.median(regrets[kind]):.3f}", flush=True)
    rows = [
        [
            k,
            f"{np.median(regrets[k]):.3f}",
            f"{np.mean(regrets[k]):.3f}",
            f"{np.mean(np.array(regrets[k]) == 0):.0%}",
            f"{np.mean(np.array(regrets[k]) <= 1.0):.0%}",
        ]
        for k in kinds
    ]
    return _table(
        f"NB201 cifar10-val, pixel3 latency <= 25th percentile, 100 evals, {args.seed_label}",
        ["searcher", "median regret", "mean regret", "found the optimum", "regret <= 1"],
        rows,
    )


def _nb201_hv(job, data):
    kind, seed = job
    task = nb201_data.Task(nb201_data.load(data))
    results = run(
        kind,
        task.space,
        task.evaluate,
        100,
        seed,
        metric=["val_acc", "latency_ms"],
        mode=["max", "min"],
    )
    accs = [a for a, _ in task.table.values()]
    lats = [ms for _, ms in task.table.values()]
    ref = [min(accs), max(lats)]
    volume = hypervolume(results, ["val_acc", "latency_ms"], ["max", "min"], ref)
    return kind, volume / ((max(accs) - ref[0]) * (ref[1] - min(lats)))


def nb201_mo(args, pool) -> str:
    data = nb201_data.require(args.data)
    kinds = ["bo", "evolution", "rl", "random", "optuna-nsga2", "optuna-tpe"]
    jobs = [(k, s) for k in kinds for s in args.seed_range]
    volumes: dict = {}
    for kind, volume in pool.imap_unordered(partial(_nb201_hv, data=data), jobs):
        volumes.setdefault(kind, []).append(volume)
    rows = [[k, f"{np.median(volumes[k]):.4f}", f"{np.mean(volumes[k]):.4f}"] for k in kinds]
    return _table(
        f"NB201 accuracy vs pixel3 latency, hypervolume (normalized) after 100 evals, "
        f"{args.seeds} seeds",
        ["searcher", "median HV", "mean HV"],
        rows,
    )


def parallel(args, pool) -> str:
    data = nb201_data.require(args.data)
    rows = []
    for kind in args.only or ["bo", "evolution"]:
        regrets = []
        for pending in (1, 4):
            jobs = [(kind, s) for s in args.seed_range]
            out = pool.map(partial(_nb201_regret, data=data, pending=pending), jobs)
            regrets.append(np.array([r for _, r in out]))
        medians = [float(np.median(r)) for r in regrets]
        ratio = medians[1] / medians[0] if medians[0] > 0 else float("inf")
        rows.append(
            [kind, f"{medians[0]:.3f}", f"{medians[1]:.3f}", f"{ratio:.2f}"]
            + [f"{r.mean():.3f}" for r in regrets]
            + [f"{np.mean(r <= 1.0):.0%}" for r in regrets]
        )
    return _table(
        f"NB201 constrained, 100 evals, {args.seed_label}: 4 pending at every ask",
        ["searcher", "sequential", "4 pending", "ratio"]
        + ["mean, sequential", "mean, 4 pending", "regret <= 1, sequential", "4 pending"],
        rows,
    )


ASKS = 5


def sphere(c: dict) -> float:
    return float(sum((c[f"x{i}"] - 0.3) ** 2 for i in range(10)))


def _ask_time(job):
    kind, seed = job
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(10)})
    rng = np.random.default_rng(seed)
    xs = rng.random((200, 10))
    ys = np.sum((xs - 0.3) ** 2, axis=1)
    if kind == "bo":
        searcher = search.create("bo", space, metric="y", mode="min", seed=seed)
        for x, y in zip(xs, ys):
            searcher.add({f"x{i}": float(v) for i, v in enumerate(x)}, {"y": float(y)})
        start = time.perf_counter()
        for _ in range(ASKS):
            trial = searcher.ask()
            searcher.tell(trial.id, {"y": sphere(trial.config)})
        return kind, (time.perf_counter() - start) / ASKS
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=seed))
    dists = {f"x{i}": optuna.distributions.FloatDistribution(0.0, 1.0) for i in range(10)}
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={f"x{i}": float(v) for i, v in enumerate(x)},
                distributions=dists,
                value=float(y),
            )
            for x, y in zip(xs, ys)
        ]
    )
    start = time.perf_counter()
    for _ in range(ASKS):
        trial = study.ask(dists)
        study.tell(trial, sphere(trial.params))
    return kind, (time.perf_counter() - start) / ASKS


def speed(args, pool) -> str:
    jobs = [(k, s) for s in args.seed_range for k in ("bo", "optuna-gp")]
    times: dict = {}
    for kind, seconds in map(_ask_time, jobs):  # one at a time: timings stay clean
        times.setdefault(kind, []).append(seconds)
    bo, gp = np.median(times["bo"]), np.median(times["optuna-gp"])
    return _table(
        f"Mean ask+tell over {ASKS} steps after 200 observations, 10 dimensions, "
        f"median of {args.seeds} seeds",
        ["bo (s)", "Optuna GPSampler (s)", "ratio bo / Optuna"],
        [[f"{bo:.3f}", f"{gp:.3f}", f"{bo / gp:.2f}"]],
    )


def _surrogate_fit(job, data):
    target, seed = job
    task = nb201_data.Task(nb201_data.load(data))
    archs = list(task.table)
    feats = gp.features(task.space, [nb201_config(a) for a in archs])
    acc = np.array([task.table[a][0] for a in archs])
    lat = np.array([task.table[a][1] for a in archs])
    y = {"accuracy": acc, "latency": lat, "log latency": np.log(lat)}[target]
    train = np.zeros(len(archs), dtype=bool)
    train[np.random.default_rng(seed).choice(len(archs), 100, replace=False)] = True
    mean = (
        gp.GP(gp.categorical_mask(task.space)).fit(feats[train], y[train]).predict(feats[~train])[0]
    )
    r2 = 1 - np.var(mean - y[~train]) / np.var(y[~train])
    feasible = (lat <= task.bound)[~train]
    return target, r2, spearmanr(mean[feasible], y[~train][feasible]).statistic


def surrogate(args, pool) -> str:
    data = nb201_data.require(args.data)
    targets = ["latency", "log latency", "accuracy"]
    jobs = [(t, s) for t in targets for s in args.seed_range]
    out: dict = {}
    for target, r2, rho in pool.map(partial(_surrogate_fit, data=data), jobs):
        out.setdefault(target, []).append((r2, rho))
    rows = [
        [t, f"{np.median([r for r, _ in out[t]]):.2f}", f"{np.median([p for _, p in out[t]]):.2f}"]
        for t in targets
    ]
    return _table(
        f"bo's GP fitted on 100 random NB201 cells, scored on the other 15,525 "
        f"(pixel3 latency), median of {args.seeds} seeds",
        ["target", "R^2", "Spearman among feasible cells"],
        rows,
    )


MODES = {
    "synthetic": synthetic,
    "nb201": nb201,
    "nb201-mo": nb201_mo,
    "parallel": parallel,
    "speed": speed,
    "surrogate": surrogate,
}
DEFAULT_SEEDS = {
    "synthetic": 100,
    "nb201": 20,
    "nb201-mo": 10,
    "parallel": 20,
    "speed": 5,
    "surrogate": 5,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds start here (0)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--only",
        nargs="+",
        help="synthetic, nb201, parallel: run only these searchers (bo:fantasy=mean)",
    )
    parser.add_argument("--data", help="the NB201 folder (default: PARETUNE_NB201 or ../shared)")
    parser.add_argument("--gp-prior", help=GP_PRIOR_HELP)
    args = parser.parse_args()
    args.seeds = args.seeds or DEFAULT_SEEDS[args.mode]
    args.seed_range = range(args.first_seed, args.first_seed + args.seeds)
    args.seed_label = f"seeds {args.first_seed}-{args.seed_range[-1]}"
    start = time.time()
    with Pool(args.workers, initializer=set_gp_prior, initargs=(args.gp_prior,)) as pool:
        print(MODES[args.mode](args, pool))
    print(f"\n({args.mode}: {time.time() - start:.0f} s wall on this machine)")


if __name__ == "__main__":
    main()
