"""The driver killed with SIGKILL and resumed; a real two-node Ray cluster on loopback."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.compute as pc
import yaml
from ray import cluster_utils

from cluster.study import results

STUDY = {
    "arch": "mlp",
    "arch_options": {"layers": [1, 2], "widths": [16, 32]},
    "train": {"lr": [1e-3, 3e-2]},
    "compress": False,
    "searcher": "evolution",
    "searcher_options": {"population": 4, "sample_size": 2},
    "scheduler": "fifo",
    "parallel": 2,
    "trial": {"epochs": 3, "latency_repeats": 4},
}


def _paretune(*args, **popen):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    command = [sys.executable, "-m", "cluster.cli", *map(str, args)]
    return subprocess.Popen(command, env=env, start_new_session=True, **popen)


def _finals(folder):
    try:
        table = results.load(folder, every_step=True)
    except ValueError:
        return None
    return table.filter(pc.fill_null(table["final"], False))


def _write(tmp_path, **changes):
    config = {**STUDY, "dir": str(tmp_path / "study"), **changes}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "study.yaml", tmp_path / "study"


def test_resume_after_kill_9(tmp_path):
    config, folder = _write(tmp_path, trials=10)
    driver = _paretune("run", config, "--cpus", "2", stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        finals = _finals(folder)
        if finals is not None and finals.num_rows >= 3:
            break
        assert driver.poll() is None and time.monotonic() < deadline, "the study never got going"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed_at = time.time()
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)  # Ray processes the driver started
    before = {r["trial"]: r for r in _finals(folder).to_pylist()}
    assert 3 <= len(before) < 10

    resumed = _paretune("resume", folder, "--cpus", "2", stdout=subprocess.PIPE, text=True)
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    assert "Pareto front" in output

    finals = _finals(folder).to_pylist()
    trials = [r["trial"] for r in finals]
    assert len(trials) == len(set(trials)) == 10  # the budget, exactly, none twice
    after = {r["trial"]: r for r in finals}
    for trial, row in before.items():  # kept, and not run again
        assert after[trial]["val_acc"] == row["val_acc"]
    every = results.load(folder, every_step=True).to_pylist()
    rerun = [r for r in every if r["trial"] in before and r["time"].timestamp() > killed_at]
    assert not rerun
    state = json.loads((folder / "searcher.json").read_text())
    assert not state["pending"]
    assert {o["id"] for o in state["observations"]} == set(after)


def test_two_node_cluster(tmp_path):
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        config, folder = _write(tmp_path, trials=6, parallel=2)
        driver = _paretune(
            "run",
            config,
            "--address",
            cluster.address,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0, output
        table = results.load(folder)
        assert table.num_rows == 6
        assert len(set(table["node"].to_pylist())) == 2  # trials ran on both raylets
        assert cluster.address.startswith("127.0.0.1:")
    finally:
        cluster.shutdown()
