"""A study on a Ray cluster prices its configs on a worker node (the pricer's actor), not on the
driver; a pricer lost mid-study leaves the rest unpriced, each measured by its own trial."""

import subprocess
import sys
import time

import pytest
from ray import cluster_utils

from cluster.study import results
from search import Unpriced
from tests.cluster.drivers import final_rows, paretune, searcher_state, stop, write_study

# on 8x8 digits an MLP of width 16 runs in about 0.01 ms a batch, one of width 512 and 2-3
# layers in 0.1-0.3 ms: the bound refuses the wide ones by a wide margin (tests/cluster/
# test_priced.py)
TIGHT = {
    "arch_options": {"layers": [1, 3], "widths": [16, 512]},
    "searcher": "random",
    "searcher_options": {},
    "constraints": {"latency_ms": 0.05},
    "trial": {"epochs": 1, "latency_repeats": 4},
}
# every model fits: each config is priced, none refused; 3 x 65 models, so a trial's model is
# seldom one priced before (cached); one trial at a time, each trains for a second or two
LOOSE = {
    "arch_options": {"layers": [1, 3], "widths": list(range(8, 73))},
    "searcher": "random",
    "searcher_options": {},
    "constraints": {"latency_ms": 100.0},
    "parallel": 1,
    "trial": {"epochs": 40, "latency_repeats": 4},
}
KILLER = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print("ready", flush=True)
sys.stdin.readline()
named = [a for a in ray.util.list_named_actors(all_namespaces=True)
         if a["name"].startswith("pricer-")]
for actor in named:
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
print(len(named), flush=True)
"""


@pytest.fixture(scope="module")
def two_nodes():
    """A loopback cluster: the head (the driver's node, with a CPU trials use too) and a
    worker node with one CPU; yields it and the worker's node id."""
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster, worker.node_id
    finally:
        cluster.shutdown()


def _run(config, address: str, **popen) -> subprocess.Popen:
    command = ("run", config, "--address", address)
    return paretune(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _reported(folder) -> bool:
    try:
        return results.load(folder, every_step=True).num_rows > 0
    except ValueError:  # no row yet
        return False


def _prices(folder) -> list[dict | None]:
    """The price each trained trial was asked with (None: unpriced), in the order asked."""
    told = [o for o in searcher_state(folder)["observations"] if not o.get("priced")]
    return [o.get("price") for o in sorted(told, key=lambda o: int(o["id"]))]


def test_a_study_on_a_cluster_prices_on_the_worker_node(two_nodes, tmp_path):
    cluster, worker = two_nodes
    config, folder = write_study(tmp_path, trials=4, **TIGHT)
    driver = _run(config, cluster.address)
    output, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, output
    table = results.load(folder)
    refused = table.filter(table["refused"].fill_null(False))
    trained = table.filter(table["refused"].is_null())
    assert trained.num_rows == 4 and refused.num_rows >= 1
    assert set(refused["node"].to_pylist()) == {worker}  # priced on the worker, not the driver
    assert set(trained["status"].to_pylist()) == {"completed"}
    assert sum(trained["price_calls"].to_pylist()) >= 1
    assert all(price and price["latency_ms"] > 0 for price in _prices(folder))  # each priced
    assert "pricing on Ray" not in output


def test_a_pricer_lost_mid_study_leaves_the_rest_to_their_trials(two_nodes, tmp_path):
    cluster, _ = two_nodes
    config, folder = write_study(tmp_path, trials=4, **LOOSE)
    command = [sys.executable, "-c", KILLER, cluster.address]
    killer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert killer.stdout.readline().strip() == "ready"
    driver = _run(config, cluster.address)
    try:
        deadline = time.monotonic() + 300
        while not _reported(folder):  # the first trial, priced, is training
            assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()
            time.sleep(0.1)
        killed, _ = killer.communicate("kill\n", timeout=60)
        assert killed.strip() == "1"
        output, _ = driver.communicate(timeout=400)
    finally:
        stop(driver)
    assert driver.returncode == 0, output
    assert output.count("the pricer was lost") == 1, output
    rows = final_rows(folder)
    assert rows.num_rows == 4 and set(rows["status"].to_pylist()) == {"completed"}
    prices = _prices(folder)
    assert prices[0] and None in prices  # priced at first; unpriced once the pricer was lost
    assert all(v is not None for v in rows["latency_ms"].to_pylist())  # each trial measured


def test_a_gpu_trials_pricer_measures_on_the_cpu_and_leaves_gpu_latency_to_the_trial(
    local_ray, tmp_path, capsys
):
    from cluster.raytune.pricer import RayPricer
    from cluster.study.config import Study

    base = {"arch": "mlp", "trials": 1, "dir": str(tmp_path / "study"), "dataset": "digits"}
    base |= {"constraints": {"latency_ms": 1.0, "params": 1e6}, "trial": {"device": "cuda"}}
    config = {"arch.layers": 1, "arch.width": 32}
    gpu = {"gpus_per_trial": 0.5}
    for changes, timed in [({}, True), (gpu, True), ({**gpu, "deploy": "torch"}, False)]:
        study = Study.from_dict({**base, **changes})
        pricer = RayPricer(study, settings=study.trial_settings(), shape=((64,), 10))
        pricer.start(f"test-{len(changes)}")
        try:
            costs = pricer(config)  # this machine has no GPU: priced on its CPU
            assert costs["params"] > 0 and ("latency_ms" in costs) == timed, (changes, costs)
            pricer.ask(1e-9)  # the ask's pricing seconds all but spent: unpriced, said once
            for _ in range(2):
                with pytest.raises(Unpriced):
                    pricer(config)
        finally:
            pricer.stop()
    said = capsys.readouterr().err
    assert (
        said.count("[study] pricing on Ray: ") == 3 and "left of its ask's pricing budget" in said
    )
