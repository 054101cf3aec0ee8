"""Per-trial cost of a study's dataset received by reference (Ray's object store, as
`cluster.raytune.runner` passes it) against the trial loading it from disk itself.

    python -m benchmarks.data_ref [--repeats 5] [--out benchmarks/out/data_ref.json]

Two datasets, each written as an `.npz` (the `numpy` dataset): MNIST-1D (4,000 signals of
1 x 40) and CIFAR-10-sized random images (50,000 x 3 x 32 x 32 uint8, float32 once loaded).
In one Ray worker, each repeat times `ray.get` of the driver's loaded `Dataset` and
`load_dataset("numpy", path)`; prints the median of each and their ratio, measured in the
same run (on a shared machine both move with its load: compare the ratio, not the seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from trainers.data import _mnist1d_arrays, load_dataset


def _arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "mnist1d":
        x, y, _, _ = _mnist1d_arrays(42)
        return x[:, None].astype(np.float32), y
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50_000, 3, 32, 32), dtype=np.uint8)
    return x, rng.integers(0, 10, size=50_000)


@ray.remote(num_cpus=1)
def _trial(boxed: list, path: str, repeats: int) -> dict:
    """In a worker, as a trial: the dataset by reference, then from disk, `repeats` times."""
    times = {"reference_s": [], "disk_s": []}
    for _ in range(repeats):
        started = time.perf_counter()
        data = ray.get(boxed[0])
        times["reference_s"].append(time.perf_counter() - started)
        del data
        started = time.perf_counter()
        data = load_dataset("numpy", path)
        times["disk_s"].append(time.perf_counter() - started)
        del data
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/out/data_ref.json")
    args = parser.parse_args()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in ("mnist1d", "cifar10-sized"):
            path = Path(folder) / f"{name}.npz"
            x, y = _arrays(name)
            np.savez(path, x=x, y=y)
            data = load_dataset("numpy", path)  # what the driver loads and puts, once
            ref = ray.put(data)
            times = ray.get(_trial.remote([ref], str(path), args.repeats))
            size = sum(getattr(data, f"x_{s}").nbytes for s in ("train", "val", "test"))
            ratio = times["reference_s"] / times["disk_s"]
            rows.append({"dataset": name, "x_bytes": size, **times, "ratio": ratio})
            del data, ref
    print("| dataset | x (MB, float32) | by reference (s) | from disk (s) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['x_bytes'] / 1e6:.1f} | {r['reference_s']:.4f} "
            f"| {r['disk_s']:.4f} | {r['ratio']:.3f} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
