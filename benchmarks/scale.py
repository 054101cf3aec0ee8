"""A long study end to end: thousands of trivial trials through `paretune`'s runner on a local
Ray (2 CPUs), against the same trials in a bare `Tuner` with `reuse_actors=True`, same Ray.

    python -W ignore -m benchmarks.scale [--trials 10000] [--searchers random,evolution,forest,bo]

Per searcher: wall time per trial in the first and the last block of `--block` trials (from
the finish times the trials report), the bytes of searcher state written per trial (journal
and snapshots), the driver's peak memory, the time to resume the finished study (open its
state and results, nothing left to run), and `results.load` of two columns of it (time,
Arrow memory). The trivial trainable is a study's own (`trainable:`), a 10-D sphere. Run it
alone on the machine: it times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

DIMS = 10
ROOT = Path(__file__).resolve().parents[1]


def sphere(config) -> float:
    return float(sum((config[f"x{i}"] - 0.3) ** 2 for i in range(DIMS)))


def trivial(config, report):
    """The study's trainable: one report, with the moment it finished."""
    report(y=sphere(config), done_at=time.time())


def bare_trivial(config):
    from ray import tune

    tune.report({"y": sphere(config), "done_at": time.time()})


def block_seconds(finish_times: list[float], block: int) -> tuple[float, float]:
    """Seconds per trial over the first and the last `block` finishes."""
    times = sorted(finish_times)
    first = (times[block - 1] - times[0]) / (block - 1)
    last = (times[-1] - times[-block]) / (block - 1)
    return first, last


def study_of(searcher: str, trials: int, folder: Path):
    from cluster.study.config import Study

    return Study.from_dict(
        {
            "name": f"scale-{searcher}",
            "dir": str(folder),
            "trainable": "benchmarks.scale:trivial",
            "trainable_path": str(ROOT),
            "space": {f"x{i}": {"low": 0.0, "high": 1.0} for i in range(DIMS)},
            "objectives": {"y": "min"},
            "searcher": searcher,
            "scheduler": "fifo",
            "trials": trials,
            "parallel": 2,
        }
    )


def state_bytes(folder: Path) -> int:
    """Bytes of searcher state the study wrote: its journal (appended, never rewritten) plus
    every snapshot, counted by the store where it keeps that count."""
    from cluster.study import store

    counted = getattr(store, "bytes_written", None)
    return counted(folder) if counted else (folder / store.STATE_FILE).stat().st_size


def ours(searcher: str, trials: int, block: int, folder: Path) -> dict:
    from cluster.raytune import runner

    study = study_of(searcher, trials, folder)
    start = time.perf_counter()
    table = runner.run(study)
    wall = time.perf_counter() - start
    assert table.num_rows == trials, table.num_rows
    first, last = block_seconds(table["done_at"].to_pylist(), block)
    start = time.perf_counter()
    runner.run(study, resume=True)
    resume_s = time.perf_counter() - start
    loaded = _load_two_columns(folder)
    return {
        "wall_s": wall,
        "first_ms": 1000 * first,
        "last_ms": 1000 * last,
        "state_bytes_per_trial": state_bytes(folder) / trials,
        "resume_s": resume_s,
        "load_two_columns_s": loaded["seconds"],
        "load_arrow_peak_mb": loaded["arrow_peak_bytes"] / 2**20,
        "load_python_peak_mb": loaded["python_peak_bytes"] / 2**20,
        "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _load_two_columns(folder: Path) -> dict:
    """`results.load` of two columns of the study, in a fresh process (a clean Arrow peak)."""
    code = (
        "import json, sys; from benchmarks.results_load import time_load; "
        "print(json.dumps(time_load(sys.argv[1], ('trial', 'y'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def bare(trials: int, block: int, folder: Path) -> dict:
    from ray import tune

    space = {f"x{i}": tune.uniform(0.0, 1.0) for i in range(DIMS)}
    start = time.perf_counter()
    grid = tune.Tuner(
        bare_trivial,
        param_space=space,
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(folder), verbose=0),
    ).fit()
    wall = time.perf_counter() - start
    first, last = block_seconds([r.metrics["done_at"] for r in grid], block)
    return {"wall_s": wall, "first_ms": 1000 * first, "last_ms": 1000 * last}


def one(name: str, trials: int, block: int) -> dict:
    """One searcher's run (or bare Tune's, `bare-tune`) in this process, after a warm-up."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as scratch:
        ours("random", 50, 10, Path(scratch) / "warm-up")  # workers started, modules imported
        folder = Path(scratch) / name
        row = (
            bare(trials, block, folder)
            if name == "bare-tune"
            else ours(name, trials, block, folder)
        )
    row["last_over_first"] = row["last_ms"] / row["first_ms"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--block", type=int, default=1_000)
    parser.add_argument("--searchers", default="random,evolution,forest,bo")
    parser.add_argument("--bare", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a run in a process of its own
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "scale.json")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.trials, args.block)))
        return
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else {}
    names = args.searchers.split(",") + (["bare-tune"] if args.bare else [])
    for name in names:  # each in a fresh process: its own driver peak memory, its own Ray
        command = [sys.executable, "-W", "ignore", "-m", "benchmarks.scale", "--one", name]
        command += ["--trials", str(args.trials), "--block", str(args.block)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps({k: round(v, 4) for k, v in rows[name].items()}), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"trials": args.trials, "rows": rows}, indent=1))
    ratios = {name: row["last_over_first"] for name, row in rows.items()}
    print("last/first block:", json.dumps({k: round(v, 2) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
