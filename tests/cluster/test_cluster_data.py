"""A cluster whose trial nodes never see the dataset: the driver loads it once and trials get
it through Ray's object store (a zero-CPU head, a worker node with a HOME of its own)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ray import cluster_utils

from cluster.study import results
from tests.cluster.drivers import STUDY

pytestmark = pytest.mark.xdist_group("drivers")

FORBIDDEN = "PARETUNE_TEST_FORBIDDEN"  # the path no worker may open
ROOT = Path(__file__).resolve().parents[2]


def forbid_opening() -> None:
    """A worker's `worker_process_setup_hook`: any open of the `FORBIDDEN` path raises."""
    forbidden = os.environ[FORBIDDEN]

    def hook(event, args):
        path = args[0] if event == "open" else None
        if (
            isinstance(path, str | bytes | os.PathLike)
            and os.path.abspath(os.fsdecode(path)) == forbidden
        ):
            raise PermissionError(f"a worker opened {forbidden}")

    sys.addaudithook(hook)


def drive(study_file: str, address: str) -> None:
    """The driver (in a process of its own): joins the cluster with the hook in its runtime
    env, deletes the `.npz` once `check_data` has loaded it, runs the study."""
    import ray

    from cluster.raytune import runner
    from cluster.study.config import Study, read

    study = read(study_file)
    loaded = Study.check_data

    def load_then_delete(self):
        data = loaded(self)
        os.unlink(self.data_path)
        return data

    Study.check_data = load_then_delete
    # the hook is pickled by reference: workers import it from this checkout's `tests`
    variables = {FORBIDDEN: study.data_path, "PYTHONPATH": str(ROOT)}
    env = {"worker_process_setup_hook": forbid_opening, "env_vars": variables}
    ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False)
    runner.run(study, address=address)
    nodes = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]}
    hook = ray.get(ray.remote(num_cpus=1)(_open).remote(study.data_path))  # the hook is live
    print(json.dumps({"cpus": nodes, "open": hook}))


def run_driver(module: str, study_file, address: str) -> subprocess.CompletedProcess:
    """`module.drive(study_file, address)` in a process of its own (a driver joins a cluster
    once per process); asserts it exited 0."""
    code = f"from {module} import drive; drive({str(study_file)!r}, {address!r})"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _open(path: str) -> str:
    try:
        open(path).close()
    except OSError as error:
        return type(error).__name__
    return "opened"


def _write(tmp_path, **changes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    config = {**STUDY, "dir": str(tmp_path / "study"), "trials": 2, "dataset": "numpy"}
    config |= {"data_path": str(data), "trial": {"epochs": 1, "latency_repeats": 2}}
    (tmp_path / "study.yaml").write_text(json.dumps(config | changes))
    return tmp_path / "study.yaml", data


def test_trials_get_the_data_by_reference_on_a_node_without_it(tmp_path):
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        (tmp_path / "home").mkdir()
        cluster.add_node(num_cpus=2, env_vars={"HOME": str(tmp_path / "home")})
        cluster.wait_for_nodes()
        study_file, data = _write(tmp_path)
        out = run_driver("tests.cluster.test_cluster_data", study_file, cluster.address)
        assert not data.exists()  # deleted by the driver before any trial started
        table = results.load(tmp_path / "study")
        assert table["status"].to_pylist() == ["completed"] * 2, table["error"].to_pylist()
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        assert {seen["cpus"][node] for node in table["node"].to_pylist()} == {2}  # the worker's
        assert seen["open"] == "PermissionError"  # refused by the hook, not merely missing
    finally:
        cluster.shutdown()


def test_a_study_that_needs_gpus_is_refused_on_a_cluster_without_any(tmp_path):
    study_file, _ = _write(tmp_path, gpus_per_trial=0.5)
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        command = [sys.executable, "-m", "cluster.cli", "run", str(study_file)]
        out = subprocess.run(
            [*command, "--address", cluster.address], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 2, out.stderr[-3000:]
        assert "gpus_per_trial 0.5: no node of the cluster" in out.stderr
        assert "set gpus_per_trial: 0" in out.stderr
        assert not (tmp_path / "study").exists()  # refused before the folder was made
    finally:
        cluster.shutdown()
