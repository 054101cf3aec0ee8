"""A cluster node that does not have the driver's folders (a zero-CPU head and one worker node
whose Python processes cannot open or list them): a study's own trainable ships to it, a
local study folder it would save checkpoints to is refused up front (`paretune run` exits 2
naming the fix), and a study on `s3://` runs there.

One machine has one disk, so the node is made blind to the folders: its `PYTHONPATH` starts
with a `sitecustomize` (`UNSEEN`) whose audit hook raises `FileNotFoundError` on the `open`,
`os.listdir` and `os.scandir` of any path under them. Imports list a folder before they read
it, so nothing imports from there either. (`os.stat` raises no audit event: a check that
only stats a path would still see it; `cluster.raytune.nodes` reads a file instead.)"""

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from ray import cluster_utils

from cluster.study import results, storage
from cluster.study.custom import load_trainable
from cluster.study.rows import config_of
from tests.cluster.drivers import STUDY, cli_command
from tests.cluster.test_cluster_data import ROOT
from tests.cluster.test_study_uri import KEYS
from tests.cluster.test_study_uri import bucket as s3_bucket  # noqa: F401 - the fixture s3_bucket
from trainers.export import model_file

pytestmark = pytest.mark.xdist_group("drivers")

HIDDEN = "PARETUNE_TEST_UNSEEN"  # path prefixes the node does not have, os.pathsep apart
UNSEEN = f"""
import os
import sys

_unseen = tuple(p for p in os.environ.get({HIDDEN!r}, "").split(os.pathsep) if p)


def _hide(event, args):
    if event not in ("open", "os.listdir", "os.scandir") or not args:
        return
    if isinstance(args[0], str | bytes | os.PathLike):
        path = os.path.abspath(os.fsdecode(args[0]))
        if path.startswith(_unseen):
            raise FileNotFoundError(2, "not on this node", path)


if _unseen:
    sys.addaudithook(_hide)
"""
# A user's module: reports where it was imported from and whether it sees its own folder.
TRAINABLE = """
import os

FOLDER = {folder!r}


def train(config, report):
    report(score=config["x"])
    try:
        open(os.path.join(FOLDER, "study.yaml")).close()
        sees = 1.0
    except OSError:
        sees = 0.0
    here = os.path.dirname(os.path.realpath(__file__))
    return {{"score": config["x"], "sees_folder": sees, "shipped_copy": float(here != FOLDER)}}
"""


@pytest.fixture(scope="module")
def blind(tmp_path_factory):
    """The cluster, and the folder (under which tests make theirs) that its worker node does
    not have; nor has it the driver's staging folders (`paretune-study-*`)."""
    unseen, site = tmp_path_factory.mktemp("unseen"), tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(UNSEEN)
    home = tmp_path_factory.mktemp("home")
    staging = os.path.join(os.path.realpath(tempfile.gettempdir()), "paretune-study-")
    env = {"HOME": str(home), "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", **KEYS}
    env[HIDDEN] = os.pathsep.join([str(unseen.resolve()), staging])
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=2, env_vars=env)
        cluster.wait_for_nodes()
        yield cluster, unseen.resolve()
    finally:
        cluster.shutdown()


def _run(folder, address: str) -> subprocess.CompletedProcess:
    """`paretune run study.yaml --address ADDRESS` from `folder` (the driver's working folder)."""
    command = cli_command("run", "study.yaml", "--address", address)
    return subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=300)


def test_a_trainable_ships_to_a_node_without_its_folder(blind):
    cluster, unseen = blind
    folder = unseen / "user"
    folder.mkdir()
    (folder / "own_far.py").write_text(textwrap.dedent(TRAINABLE.format(folder=str(folder))))
    study = {"trainable": "own_far:train", "space": {"x": {"low": 0.0, "high": 1.0}}}
    study |= {"objectives": {"score": "max"}, "searcher": "random", "scheduler": "fifo"}
    study |= {"trials": 2, "parallel": 2, "dir": str(folder / "study")}
    (folder / "study.yaml").write_text(yaml.safe_dump(study))  # trainable_path: its folder
    done = _run(folder, cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    table = results.load(folder / "study")
    assert table["status"].to_pylist() == ["completed"] * 2, table["error"].to_pylist()
    assert table["sees_folder"].to_pylist() == [0.0, 0.0]  # the node has no such folder
    assert table["shipped_copy"].to_pylist() == [1.0, 1.0]  # it ran Ray's copy of the module


def test_a_local_study_folder_a_node_does_not_see_is_refused(blind):
    cluster, unseen = blind
    folder = unseen / "local"
    folder.mkdir()
    study = {**STUDY, "dataset": "digits", "trials": 2, "dir": str(folder / "study")}
    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    done = _run(folder, cluster.address)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("paretune: error")]
    assert f"does not see the study folder {str(folder / 'study')!r}" in line
    assert "set dir: s3://bucket/path (or a folder every node mounts)" in line
    assert not (folder / "study").exists()  # refused before the folder was made


def test_a_study_on_s3_runs_on_a_node_without_the_drivers_folders(blind, request):
    cluster, unseen = blind
    options = request.getfixturevalue("s3_bucket")  # the moto server's
    folder = unseen / "s3"
    folder.mkdir()
    uri = f"s3://studies/blind?{options}"
    trial = {"epochs": 1, "latency_repeats": 2}
    study = {**STUDY, "dataset": "digits", "trials": 2, "dir": uri, "trial": trial}
    (folder / "study.yaml").write_text(yaml.safe_dump(study))
    done = _run(folder, cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    copy = Path(storage.local_copy(uri, models=True))
    table = results.load(copy)
    assert table["status"].to_pylist() == ["completed"] * 2, table["error"].to_pylist()
    for row in table.to_pylist():  # each trial's model came through Tune, filed on s3
        assert model_file(copy / "models", config_of(row)).exists()


def test_a_shipped_trainable_wins_over_the_folder_it_came_from(tmp_path, monkeypatch):
    """On a worker, the copy Ray shipped (earlier on the path) is imported, not whatever a
    node holds at the driver's folder; the folder still serves what did not ship."""
    shipped, stale = tmp_path / "shipped", tmp_path / "stale"
    for where, value in ((shipped, "shipped"), (stale, "stale")):
        where.mkdir()
        (where / "own_order.py").write_text(f"def train(config, report):\n    return {value!r}\n")
    (stale / "own_helper.py").write_text("VALUE = 3\n")
    monkeypatch.setattr(sys, "path", [str(shipped), *sys.path])
    function = load_trainable("own_order:train", str(stale), shipped=True)
    assert function({}, None) == "shipped"
    assert __import__("own_helper").VALUE == 3
    for name in ("own_order", "own_helper"):
        sys.modules.pop(name, None)
    assert sys.path[-1] == str(stale)  # last, not first
