"""What paretune adds on top of Ray Tune: trivial trials through `cluster.raytune` (our searcher
behind the Tune adapter, a Parquet row per report, the searcher's state saved after every tell)
against a bare `Tuner` with `reuse_actors=True`, same Ray instance, same concurrency.

    python -m benchmarks.overhead [--trials 200] [--repeats 3]
    python -m benchmarks.overhead --own      # a user's trainable (`own_trivial(config, report)`)
                                             # named by a study, against the same function in
                                             # a bare Tuner

Prints the wall times and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def trivial(config, settings=None):
    from ray import tune

    width = config.get("arch.width", config.get("width", 1))
    tune.report({"val_acc": float(width), "status": "completed", "final": True})


def own_trivial(config, report):
    """A user's trainable, as a study names it (`benchmarks.overhead:own_trivial`)."""
    report(val_acc=float(config["width"]))


def own_in_tune(config):
    """`own_trivial` in a bare Tuner: its report is Tune's."""
    from ray import tune

    own_trivial(config, lambda **metrics: tune.report(metrics))


def bare(trials: int, folder: Path, *, own: bool = False) -> float:
    from ray import tune

    start = time.perf_counter()
    tune.Tuner(
        own_in_tune if own else trivial,
        param_space={"width": tune.choice([32, 64, 128, 256])},
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(folder), verbose=0),
    ).fit()
    return time.perf_counter() - start


def ours(trials: int, folder: Path, *, own: bool = False) -> float:
    from cluster.raytune import runner
    from cluster.study.config import Study

    common = {"dir": str(folder / "study"), "searcher": "random", "scheduler": "fifo"}
    common |= {"trials": trials, "parallel": 2}
    if own:
        study = Study.from_dict(
            {
                "name": "overhead-own",
                "trainable": "benchmarks.overhead:own_trivial",
                "trainable_path": str(Path(__file__).resolve().parents[1]),
                "space": {"width": [32, 64, 128, 256]},
                **common,
            }
        )
    else:
        study = Study(name="overhead", arch="mlp", train=False, compress=False, **common)
    start = time.perf_counter()
    table = runner.run(study, function=None if own else trivial)
    elapsed = time.perf_counter() - start
    assert table.num_rows == trials
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--own", action="store_true", help="a user's trainable via a study")
    args = parser.parse_args(argv)
    own = {"own": args.own}
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as folder:  # warm up: workers started, modules imported
        bare(20, Path(folder) / "bare", **own)
        ours(20, Path(folder) / "ours", **own)
    ratios = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            first, second = (bare, ours) if repeat % 2 == 0 else (ours, bare)
            times = {
                f.__name__: f(args.trials, Path(folder) / f.__name__, **own)
                for f in (first, second)
            }
        ratios.append(times["ours"] / times["bare"])
        print(
            f"repeat {repeat}: bare Tune {times['bare']:.1f} s, paretune {times['ours']:.1f} s, "
            f"ratio {ratios[-1]:.2f}",
            flush=True,
        )
    print(f"median ratio over {args.repeats} repeats: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
