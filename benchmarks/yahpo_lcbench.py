"""Any-time regret on YAHPO Gym's lcbench surrogates (issue 36): `bo` with rungs against `bo` at
full fidelity, random search, Hyperband, DEHB and Ray Tune's TuneBOHB, same budget in epochs.

    PARETUNE_YAHPO_DATA=/path/to/yahpo_data python -m benchmarks.yahpo_lcbench
        [--data PATH] [--instances 3945,7593,34539] [--seeds 20] [--first-seed 0]
        [--budget 100] [--methods bo-rungs,hyperband,bo,random,dehb,bohb] [--out PATH]

Needs `yahpo-gym` (with DEHB, HpBandSter and Ray Tune for the anchors) in an environment of its
own: benchmarks/yahpo-requirements.txt. `--data` (or PARETUNE_YAHPO_DATA) is the folder holding
`lcbench/` (its `model.onnx`, `config_space.json`, `encoding.json`) from the public
slds-lmu/yahpo_data repository; without yahpo_gym or that folder it prints one line and exits 0.

Each lcbench instance (an OpenML task) is one problem: a config of the seven hyperparameters has
a learning curve, the surrogate's validation accuracy (percent) after epochs 1..52 (the
fidelity). Every method spends `--budget` full-fidelity evaluations' worth of epochs (100 x 52).
A trial trained to epoch e and then further to e' costs e' epochs in all (training continues:
the surrogate's curve is one run), except in DEHB, which starts each evaluation afresh and pays
its fidelity each time (its own design). Methods:

- `bo-rungs`: paretune `bo` (`max_fidelity=52`) asked for each bracket of a synchronous
  Hyperband (eta 3, rungs 2, 6, 17, 52 epochs) driven here: every rung result reaches the
  searcher (`report(..., fidelity=epoch)`), the top 1/eta of a rung go on, the others are told
  `stopped` at their rung, the last rung is told as completed.
- `hyperband`: the same brackets with paretune `random` (Hyperband itself).
- `bo`, `random`: paretune searchers at full fidelity only (52 epochs each).
- `dehb`: DEHB's ask/tell (min fidelity 52/27, max 52, eta 3; fidelities rounded to epochs).
- `bohb`: TuneBOHB + HyperBandForBOHB (max_t 52, reduction 3) in a Ray Tune `Tuner` on one CPU, a
  function trainable that reports the curve epoch by epoch (checkpointing its epoch, so a paused
  trial resumes), stopped when the epochs reported reach the budget.

Any-time regret: the instance's best known validation accuracy (the best over every epoch of
`--reference` random configs' curves and of everything any method evaluated) minus the best
accuracy a method has in hand after spending a share of the budget, in percentage points:
"held" counts a result at any epoch (a model trained that far exists), "full" only results at
52 epochs. Prints Markdown tables of the medians over seeds at 25/50/100% of the budget and
writes every run's trace as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")  # one core: BLAS threads only contend (10x slower)

import numpy as np  # noqa: E402

from benchmarks import records  # noqa: E402

EPOCHS = 52
ETA = 3
RUNGS = tuple(round(EPOCHS / ETA**k) for k in (3, 2, 1, 0))  # 2, 6, 17, 52
METRIC = "val_accuracy"
SHARES = (0.25, 0.5, 1.0)
METHODS = ("bo-rungs", "hyperband", "bo", "random", "dehb", "bohb")
INSTANCES = ("3945", "7593", "34539")
ROOT = Path(__file__).resolve().parent.parent


# -- the surrogate -----------------------------------------------------------------------------
def data_folder(option: str | None) -> Path | None:
    """The folder that holds `lcbench/` (given it, or `lcbench/` itself), else None."""
    path = option or os.environ.get("PARETUNE_YAHPO_DATA")
    if not path:
        return None
    path = Path(path).expanduser()
    path = path.parent if path.name == "lcbench" else path
    return path if (path / "lcbench" / "model.onnx").is_file() else None


class Surrogate:
    """One lcbench instance: the learning curve of a config, cached."""

    def __init__(self, instance: str):
        from yahpo_gym import benchmark_set

        self.bench = benchmark_set.BenchmarkSet(
            "lcbench", instance=instance, check=False, multithread=False
        )
        self.instance = instance
        self._curves: dict[tuple, np.ndarray] = {}

    def config_space(self, *, seed: int):
        """The instance's ConfigSpace without the fidelity and the task id (a constant)."""
        import ConfigSpace as CS

        full = self.bench.get_opt_space(drop_fidelity_params=True)
        cs = CS.ConfigurationSpace(seed=seed)
        cs.add_hyperparameters(
            [h for h in full.get_hyperparameters() if not isinstance(h, CS.Constant)]
        )
        return cs

    def curve(self, config: dict) -> np.ndarray:
        """Validation accuracy after each epoch 1..52, `(52,)`."""
        key = tuple(sorted(config.items()))
        if key not in self._curves:
            rows = [
                {**config, "OpenML_task_id": self.instance, "epoch": e}
                for e in range(1, EPOCHS + 1)
            ]
            out = self.bench.objective_function(rows, multithread=False)
            self._curves[key] = np.array([r[METRIC] for r in out], dtype=float)
        return self._curves[key]

    def accuracy(self, config: dict, epoch: int) -> float:
        return float(self.curve(config)[epoch - 1])


def paretune_space(cs):
    """The paretune `Space` of an lcbench ConfigSpace (integers and floats, some log)."""
    from spaces import Float, Int, Space

    params = {}
    for h in cs.get_hyperparameters():
        kind = Int if type(h).__name__ == "UniformIntegerHyperparameter" else Float
        params[h.name] = kind(h.lower, h.upper, log=h.log)
    return Space(params)


# -- the ledger ----------------------------------------------------------------------------------
class Run:
    """The epochs a method spent and what it found: `trace` rows `[spent, accuracy, epoch]`."""

    def __init__(self, surrogate: Surrogate, *, budget: int):
        self.surrogate, self.budget = surrogate, budget
        self.spent, self.trace = 0, []

    def left(self) -> bool:
        return self.spent < self.budget

    def train(self, config: dict, epoch: int, *, start: int = 0) -> float:
        """The accuracy of `config` after `epoch` epochs, trained on from `start`."""
        accuracy = self.surrogate.accuracy(config, epoch)
        self.spent += epoch - start
        self.trace.append([self.spent, accuracy, epoch])
        return accuracy


# -- the methods -----------------------------------------------------------------------------------
def brackets():
    """Hyperband's brackets, most aggressive first: `(configs, first rung index)`."""
    top = len(RUNGS) - 1
    for s in range(top, -1, -1):
        yield math.ceil((top + 1) / (s + 1) * ETA**s), top - s


def hyperband(searcher, run: Run) -> None:
    """Synchronous Hyperband over `RUNGS` with `searcher` proposing each bracket's configs."""
    while run.left():
        for count, first in brackets():
            trials = [searcher.ask() for _ in range(count)]
            trained = dict.fromkeys((t.id for t in trials), 0)
            for epoch in RUNGS[first:]:
                scores = {}
                for t in trials:
                    if not run.left():
                        return
                    scores[t.id] = run.train(t.config, epoch, start=trained[t.id])
                    trained[t.id] = epoch
                if epoch == EPOCHS:
                    for t in trials:
                        searcher.tell(t.id, {METRIC: scores[t.id]})
                    break
                for t in trials:
                    searcher.report(t.id, {METRIC: scores[t.id]}, fidelity=epoch)
                ranked = sorted(trials, key=lambda t: -scores[t.id])
                keep = max(1, len(trials) // ETA)
                for t in ranked[keep:]:
                    searcher.tell(t.id, {METRIC: scores[t.id]}, status="stopped", fidelity=epoch)
                trials = ranked[:keep]


def full_fidelity(searcher, run: Run) -> None:
    while run.left():
        t = searcher.ask()
        searcher.tell(t.id, {METRIC: run.train(t.config, EPOCHS)})


def paretune(name: str, run: Run, *, seed: int) -> None:
    import search

    space = paretune_space(run.surrogate.config_space(seed=seed))
    rungs = name in ("bo-rungs", "hyperband")
    searcher = search.create(
        "bo" if name.startswith("bo") else "random",
        space,
        metric=METRIC,
        mode="max",
        seed=seed,
        max_fidelity=EPOCHS if rungs else None,
    )
    (hyperband if rungs else full_fidelity)(searcher, run)


def dehb(run: Run, *, seed: int) -> None:
    from dehb import DEHB
    from loguru import logger

    logger.remove()  # DEHB logs every step to stderr
    cs = run.surrogate.config_space(seed=seed)
    with tempfile.TemporaryDirectory(prefix="dehb-") as folder:
        optimizer = DEHB(
            cs=cs,
            dimensions=len(cs.get_hyperparameters()),
            min_fidelity=EPOCHS / ETA ** (len(RUNGS) - 1),
            max_fidelity=EPOCHS,
            eta=ETA,
            n_workers=1,
            seed=seed,
            output_path=folder,
            save_freq=None,
        )
        while run.left():
            job = optimizer.ask()
            config = job["config"].get_dictionary()  # a Configuration (configspace=True)
            epoch = min(EPOCHS, max(1, round(job["fidelity"])))
            accuracy = run.train(config, epoch)
            optimizer.tell(job, {"fitness": -accuracy, "cost": epoch})


_SURROGATES: dict[str, Surrogate] = {}


def worker_curve(instance: str, config: dict) -> np.ndarray:
    """A curve in a Ray worker, from one surrogate per instance and process (actors are reused)."""
    if instance not in _SURROGATES:
        _SURROGATES[instance] = Surrogate(instance)
    return _SURROGATES[instance].curve(config)


def _curve_trainable(config: dict) -> None:
    """Ray Tune's trial: the surrogate's curve, one report (and checkpoint) per epoch."""
    from ray import tune

    from benchmarks import yahpo_lcbench  # by name: its cache outlives a trial

    config = dict(config)
    curve = yahpo_lcbench.worker_curve(config.pop("instance"), config)
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        start = json.loads((Path(checkpoint.to_directory()) / "epoch.json").read_text())
    for epoch in range(start + 1, EPOCHS + 1):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "epoch.json").write_text(json.dumps(epoch))
            tune.report(
                {METRIC: float(curve[epoch - 1]), "epoch": epoch},
                checkpoint=tune.Checkpoint.from_directory(folder),
            )


def budget_stopper(budget: int):
    """A Tune stopper that counts each reported epoch as one spent, into a ledger of its own
    (the `Tuner` pickles its stopper: the surrogate's session cannot be), and stops all trials
    at `budget` epochs."""
    from ray import tune

    class Budget(tune.Stopper):
        def __init__(self):
            self.ledger = Run(None, budget=budget)

        def __call__(self, trial_id, result):
            self.ledger.spent += 1
            self.ledger.trace.append([self.ledger.spent, result[METRIC], result["epoch"]])
            return False

        def stop_all(self):
            return not self.ledger.left()

    return Budget()


def bohb(run: Run, *, seed: int) -> None:
    import ConfigSpace as CS
    from ray import tune
    from ray.tune.schedulers import HyperBandForBOHB
    from ray.tune.search.bohb import TuneBOHB

    budget = budget_stopper(run.budget)
    cs = run.surrogate.config_space(seed=seed)
    cs.add_hyperparameter(CS.Constant("instance", run.surrogate.instance))
    with tempfile.TemporaryDirectory(prefix="bohb-") as folder:
        tuner = tune.Tuner(
            tune.with_resources(_curve_trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=TuneBOHB(space=cs, metric=METRIC, mode="max", seed=seed),
                scheduler=HyperBandForBOHB(
                    time_attr="training_iteration",
                    metric=METRIC,
                    mode="max",
                    max_t=EPOCHS,
                    reduction_factor=ETA,
                ),
                num_samples=-1,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                storage_path=folder,
                stop=budget,
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        tuner.fit()
    run.spent, run.trace = budget.ledger.spent, budget.ledger.trace


def run_method(method: str, surrogate: Surrogate, *, seed: int, budget: int) -> dict:
    run = Run(surrogate, budget=budget)
    started = time.perf_counter()
    if method == "dehb":
        dehb(run, seed=seed)
    elif method == "bohb":
        bohb(run, seed=seed)
    else:
        paretune(method, run, seed=seed)
    seconds = time.perf_counter() - started
    return {"instance": surrogate.instance, "method": method, "seed": seed, "seconds": seconds,
            "trace": run.trace}  # fmt: skip


# -- the figure --------------------------------------------------------------------------------
def sampled_best(surrogate: Surrogate, *, count: int) -> float:
    """The best accuracy over every epoch of `count` random configs' curves."""
    cs = surrogate.config_space(seed=12345)
    configs = cs.sample_configuration(count) if count > 1 else [cs.sample_configuration()]
    return max(float(surrogate.curve(c.get_dictionary()).max()) for c in configs)


def regret(trace: list, *, best: float, spent: float, full: bool) -> float:
    """`best` minus the best accuracy found within `spent` epochs (NaN: none yet)."""
    found = [a for s, a, e in trace if s <= spent and (e == EPOCHS or not full)]
    return best - max(found) if found else math.nan


def table(rows: list[dict], best: dict, *, budget: int, full: bool) -> str:
    head = " | ".join(f"{int(100 * s)}%" for s in SHARES)
    lines = [f"| instance | method | {head} | seconds/run |", "|---" * (len(SHARES) + 3) + "|"]
    for instance in dict.fromkeys(r["instance"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["instance"] == instance and r["method"] == method]
            if not mine:
                continue
            cells = []
            for share in SHARES:
                values = [
                    regret(r["trace"], best=best[instance], spent=share * budget, full=full)
                    for r in mine
                ]
                cells.append(f"{statistics.median(values):.3f}")
            seconds = statistics.median(r["seconds"] for r in mine)
            lines.append(f"| {instance} | {method} | {' | '.join(cells)} | {seconds:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder holding lcbench/")
    parser.add_argument("--instances", default=",".join(INSTANCES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=100, help="full-fidelity evaluations")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--reference", type=int, default=1000, help="random configs")
    parser.add_argument("--out", default="benchmarks/out/yahpo_lcbench.json.gz")
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; allowed: {list(METHODS)}")
    folder = data_folder(args.data)
    try:
        from yahpo_gym import local_config
    except ImportError:
        print("yahpo_lcbench: skipped, yahpo_gym is not installed (yahpo-requirements.txt)")
        return
    if folder is None:
        print("yahpo_lcbench: skipped, no lcbench/model.onnx under --data or PARETUNE_YAHPO_DATA")
        return
    local_config.init_config()
    local_config.set_data_path(str(folder))
    if "bohb" in methods:
        start_ray()
    budget = args.budget * EPOCHS
    surrogates = {i: Surrogate(i) for i in args.instances.split(",")}
    sampled = {i: sampled_best(s, count=args.reference) for i, s in surrogates.items()}
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for instance, surrogate in surrogates.items():
            for method in methods:
                rows.append(run_method(method, surrogate, seed=seed, budget=budget))
                print(f"{instance} seed {seed} {method}: {rows[-1]['seconds']:.1f}s", flush=True)
        report(rows, sampled, args=args, seeds=seed + 1 - args.first_seed)  # a cut run keeps it


def report(rows: list[dict], sampled: dict, *, args, seeds: int) -> None:
    """Print the tables and write the JSON of the runs so far."""
    best = {i: max([b] + [a for r in rows if r["instance"] == i for _, a, _ in r["trace"]])
            for i, b in sampled.items()}  # fmt: skip
    budget = args.budget * EPOCHS
    for full in (False, True):
        kind = "full (52-epoch results only)" if full else "held (a result at any epoch)"
        print(f"\nRegret in accuracy points, {kind}, median over {seeds} seeds, "
              f"share of {budget} epochs:\n")  # fmt: skip
        print(table(rows, best, budget=budget, full=full), flush=True)
    body = {"args": vars(args), "seeds": seeds, "sampled": sampled, "best": best, "rows": rows}
    records.write(args.out, body)


def start_ray() -> None:
    """One CPU, local; the workers import this module (for the trainable's surrogate cache)."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
    )
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, address="local")


if __name__ == "__main__":
    sys.exit(main())
