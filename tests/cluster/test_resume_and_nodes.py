"""The driver killed with SIGKILL and resumed; a real two-node Ray cluster on loopback."""

import subprocess

from ray import cluster_utils

from cluster.study import results
from tests.cluster.drivers import final_rows, paretune, searcher_state, write_study


def test_resume_after_kill_9(killed_copy):
    folder, killed_at = killed_copy
    before = {r["trial"]: r for r in final_rows(folder).to_pylist()}
    assert 3 <= len(before) < 6

    resumed = paretune("resume", folder, "--cpus", "2", stdout=subprocess.PIPE, text=True)
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    assert "Pareto front" in output

    finals = final_rows(folder).to_pylist()
    trials = [r["trial"] for r in finals]
    assert len(trials) == len(set(trials)) == 6  # the budget, exactly, none twice
    after = {r["trial"]: r for r in finals}
    for trial, row in before.items():  # kept, and not run again
        assert after[trial]["val_acc"] == row["val_acc"]
    every = results.load(folder, every_step=True).to_pylist()
    rerun = [r for r in every if r["trial"] in before and r["time"].timestamp() > killed_at]
    assert not rerun
    state = searcher_state(folder)
    assert not state["pending"]
    assert {o["id"] for o in state["observations"]} == set(after)


def test_two_node_cluster(tmp_path):
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        config, folder = write_study(tmp_path, trials=6, parallel=2)
        driver = paretune(
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
