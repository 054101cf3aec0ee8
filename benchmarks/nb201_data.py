"""The NAS-Bench-201 tables in ../shared/benchdata/nb201 (path from --data or PARETUNE_NB201)."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

import spaces

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "benchdata" / "nb201"


def data_dir(option: str | None = None) -> Path | None:
    path = Path(option or os.environ.get("PARETUNE_NB201") or DEFAULT)
    return path if (path / "nb201_12epoch_acc.csv").exists() else None


def require(option: str | None = None) -> Path:
    """The data folder, or a clean exit (status 0) saying why the benchmark is skipped."""
    path = data_dir(option)
    if path is None:
        print("skipped: NAS-Bench-201 tables not found (set PARETUNE_NB201 or pass --data)")
        sys.exit(0)
    return path


def load(path: Path, *, accuracy: str = "cifar10-val", device: str = "pixel3") -> dict:
    """`{arch_str: (accuracy, latency_ms)}` for all 15,625 cells."""
    with open(path / "nb201_12epoch_acc.csv") as f:
        acc = {row["arch_str"]: float(row[accuracy]) for row in csv.DictReader(f)}
    with open(path / "nb201_latency_ms_help.csv") as f:
        lat = {row["arch_str"]: float(row[device]) for row in csv.DictReader(f)}
    return {arch: (acc[arch], lat[arch]) for arch in acc}


class Task:
    """Maximize accuracy with latency at most its `quantile` over all cells."""

    def __init__(self, table: dict, *, quantile: float = 0.25):
        self.table = table
        latencies = np.array([v[1] for v in table.values()])
        self.bound = float(np.quantile(latencies, quantile))
        self.optimum = max(a for a, ms in table.values() if ms <= self.bound)
        self.space = spaces.nb201()

    def evaluate(self, config: dict) -> dict:
        acc, ms = self.table[spaces.nb201_arch_str(config)]
        return {"val_acc": acc, "latency_ms": ms}

    def regret(self, results: list[dict]) -> float:
        feasible = [r["val_acc"] for r in results if r["latency_ms"] <= self.bound]
        return self.optimum - max(feasible) if feasible else self.optimum


def dead_node_siblings(task: Task) -> list[tuple[str, float, float]]:
    """The feasible optimum and the 24 cells that differ from it only on the two edges into
    node 2, as `(arch, acc, ms)`. In the pixel3 task node 2 of the optimum is dead (its edge
    to node 3 is `none`), so all 25 compute the same function."""
    best = max(
        (a for a, (_, ms) in task.table.items() if ms <= task.bound),
        key=lambda a: task.table[a][0],
    )
    config = spaces.nb201_config(best)
    out = []
    for into_from_0 in spaces.NB201_OPS:
        for into_from_1 in spaces.NB201_OPS:
            sibling = dict(config, edge_2_0=into_from_0, edge_2_1=into_from_1)
            arch = spaces.nb201_arch_str(sibling)
            out.append((arch, *task.table[arch]))
    return out


if __name__ == "__main__":
    task = Task(load(require(sys.argv[1] if len(sys.argv) > 1 else None)))
    print(f"pixel3 bound {task.bound:.2f} ms, feasible optimum {task.optimum}")
    for arch, acc, ms in dead_node_siblings(task):
        print(f"{acc:7.3f} {ms:6.2f} ms {'feasible' if ms <= task.bound else ''}  {arch}")
