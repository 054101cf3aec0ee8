import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

import spaces
from benchmarks.nb201_data import Task, dead_node_siblings
from search.basic import enumerate_configs

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_skips_cleanly_without_the_tables(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.searchers", "nb201", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "", "PARETUNE_NB201": ""},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("skipped: NAS-Bench-201 tables not found")


def test_task_bound_optimum_and_regret_by_hand():
    cells = [spaces.nb201_arch_str(c) for c in islice(enumerate_configs(spaces.nb201(), 5), 4)]
    table = {
        cells[0]: (90.0, 9.0),
        cells[1]: (80.0, 1.0),
        cells[2]: (70.0, 2.0),
        cells[3]: (60.0, 3.0),
    }
    task = Task(table, quantile=0.5)  # bound: median of (1, 2, 3, 9) = 2.5
    assert task.bound == pytest.approx(2.5) and task.optimum == 80.0
    assert task.regret([task.evaluate(spaces.nb201_config(cells[2]))]) == 10.0
    assert task.regret([task.evaluate(spaces.nb201_config(cells[0]))]) == 80.0  # none feasible


def test_dead_node_siblings_vary_only_the_edges_into_node_2():
    rng = np.random.default_rng(0)
    cells = [spaces.nb201_arch_str(c) for c in enumerate_configs(spaces.nb201(), 5)]
    table = {cell: (float(rng.random()), float(rng.random())) for cell in cells}
    task = Task(table)
    siblings = dead_node_siblings(task)
    assert len(siblings) == 25 and len({arch for arch, _, _ in siblings}) == 25
    best = spaces.nb201_config(next(a for a, acc, ms in siblings if acc == task.optimum))
    for arch, acc, ms in siblings:
        config = spaces.nb201_config(arch)
        assert (acc, ms) == table[arch]
        assert {k for k in config if config[k] != best[k]} <= {"edge_2_0", "edge_2_1"}
