"""A cluster whose trial nodes never write under the study: models, the distillation teacher,
supernet checkpoints and population-based training's snapshots travel through Tune and Ray's
object store, and the driver files them (a zero-CPU head, a worker node with a HOME of its own
and an audit hook that refuses writes). The hook sees Python's writes, not those of Tune's own
checkpoint upload (`pyarrow.fs`, in C++) to its `storage_path`: `STUDY/ray` here, `URI/ray` on a
cluster, whose nodes must reach it (`cluster.raytune.nodes.preflight` refuses a folder they
do not see)."""

import json
import os
import sys

import pytest
from ray import cluster_utils

from cluster.cli.export import export_trial
from cluster.study import results
from cluster.study.rows import config_of
from tests.cluster.test_cluster_data import ROOT, _write, run_driver
from tests.cluster.test_darts import STUDY as DARTS
from trainers.export import model_file

pytestmark = pytest.mark.xdist_group("drivers")

GUARDED = "PARETUNE_TEST_GUARDED"  # the folder no worker may write under
WRITES = {"os.rename", "os.mkdir", "os.remove", "os.link", "os.symlink", "shutil.copyfile"}


def forbid_writing() -> None:
    """A worker's `worker_process_setup_hook`: a write, rename or mkdir under `GUARDED`
    raises."""
    guarded = os.environ[GUARDED]

    def hook(event, args):
        if event == "open":
            mode, flags = args[1], args[2]
            if not (any(c in (mode or "") for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR)):
                return
        elif event not in WRITES:
            return
        for path in args[:2] if event != "open" else args[:1]:
            if isinstance(path, str | bytes | os.PathLike) and not isinstance(path, int):
                where = os.path.abspath(os.fsdecode(path))
                if where == guarded or where.startswith(guarded + os.sep):
                    raise PermissionError(f"a worker wrote {where} ({event})")

    sys.addaudithook(hook)


def drive(study_file: str, address: str) -> None:
    """The driver (a process of its own): joins the cluster with the hook, runs the study."""
    import ray

    from cluster.raytune import runner
    from cluster.study.config import read

    study = read(study_file)
    env = {"worker_process_setup_hook": forbid_writing}
    env["env_vars"] = {GUARDED: os.path.realpath(study.dir), "PYTHONPATH": str(ROOT)}
    ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False)
    runner.run(study, address=address)
    probe = ray.get(ray.remote(num_cpus=1)(_mkdir).remote(study.dir))  # the hook is live
    print(json.dumps({"probe": probe}))


def _mkdir(folder: str) -> str:
    try:
        os.mkdir(os.path.join(folder, "probe"))
    except OSError as error:
        return type(error).__name__
    return "made"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=2, env_vars={"HOME": str(home)})
    cluster.wait_for_nodes()
    yield cluster, home
    cluster.shutdown()


def _run(study_file, address) -> dict:
    out = run_driver("tests.cluster.test_artifacts", study_file, address)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_models_and_the_teacher_travel_to_the_driver(cluster, tmp_path):
    cluster, home = cluster
    trial = {"epochs": 1, "latency_repeats": 2, "teacher_epochs": 1, "teacher_width": 0.5}
    arch = {"stages": 1, "depth": [1, 2], "widths": [8], "kernels": [3], "expansions": [1]}
    changes = {"dataset": "digits", "data_path": None, "arch": "chain", "arch_options": arch}
    study_file, _ = _write(tmp_path, compress={"distill": True}, trial=trial, **changes)
    assert _run(study_file, cluster.address)["probe"] == "PermissionError"
    table = results.load(tmp_path / "study")
    assert table["status"].to_pylist() == ["completed"] * 2, table["error"].to_pylist()
    assert table["error"].to_pylist() == [None, None]
    assert len(list((tmp_path / "study" / "models").glob("*.npz"))) == 2  # filed by the driver
    teachers = list((tmp_path / "study" / "cache").glob("teacher-*.pt"))  # trained once
    assert len(teachers) == 1
    shipped = home / ".cache" / "paretune" / teachers[0].name
    assert shipped.read_bytes() == teachers[0].read_bytes()  # the node got it, did not train
    trial_id = table["trial"].to_pylist()[0]
    done = export_trial(tmp_path / "study", trial_id, tmp_path / "model.pt")
    assert done["format"] == "torchscript" and (tmp_path / "model.pt").stat().st_size > 0


def test_a_supernet_trial_checkpoints_through_tune(cluster, tmp_path):
    cluster, _ = cluster
    text = DARTS.format(dir=tmp_path / "study").replace("trials: 3", "trials: 1")
    (tmp_path / "study.yaml").write_text(text)
    _run(tmp_path / "study.yaml", cluster.address)
    table = results.load(tmp_path / "study", every_step=True)
    final = [r for r in table.to_pylist() if r["final"]]
    assert [r["status"] for r in final] == ["completed"], [r["error"] for r in final]
    assert final[0]["error"] is None
    assert not (tmp_path / "study" / "cache").exists()  # the checkpoints went through Tune
    assert len(list((tmp_path / "study" / "models").glob("*.npz"))) == 1


def test_population_based_training_snapshots_travel_through_tune(cluster, tmp_path):
    cluster, _ = cluster
    pbt = {  # in step: the worse member clones the better's snapshot after each epoch
        "scheduler": "pbt",
        "scheduler_options": {
            "perturbation_interval": 1,
            "synch": True,
            "quantile_fraction": 0.5,
            "resample_probability": 1.0,
        },
        "train": {"lr": [1e-4, 3e-2], "weight_decay": [1e-6, 1e-2]},
    }
    changes = {"dataset": "digits", "data_path": None, "trial": {"epochs": 2, "latency_repeats": 2}}
    study_file, _ = _write(tmp_path, **pbt, **changes)
    assert _run(study_file, cluster.address)["probe"] == "PermissionError"
    folder = tmp_path / "study"
    table = results.load(folder)
    assert table["status"].to_pylist() == ["completed"] * 2, table["error"].to_pylist()
    assert table["error"].to_pylist() == [None, None]
    rows = results.load(folder, every_step=True).to_pylist()
    assert [r["phase"] for r in rows].count("clone") >= 1  # a member restored from another's
    assert list((folder / "ray").rglob("checkpoint_*/snapshot.pt"))  # Tune carried them
    assert not (folder / "cache").exists()
    for row in table.to_pylist():  # each final model filed by the driver (a clone's is its
        assert model_file(folder / "models", config_of(row)).exists()  # source's: one file)
