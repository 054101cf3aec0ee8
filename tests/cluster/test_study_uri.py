"""A study on `s3://` (moto's S3 server on loopback): run, kill -9 the driver, resume from
another folder, read it from a third where its `data_path` does not exist."""

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml
from sklearn.datasets import load_digits

from cluster.study import storage
from tests.cluster.drivers import STUDY, cli_command, final_rows, paretune, stop

pytestmark = pytest.mark.xdist_group("drivers")
KEYS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def bucket():
    """`s3://` URI options for a fresh bucket on a moto server on loopback."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {key: os.environ.get(key) for key in KEYS}
    os.environ.update(KEYS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = f"endpoint_override={host}:{port}&scheme=http"
    fs, _ = storage.filesystem(f"s3://studies?{options}&allow_bucket_creation=true")
    fs.create_dir("studies")
    yield options
    server.stop()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.update({key: value})


def _no_s3_folder(*roots):
    for root in roots:
        assert not [p for p in Path(root).rglob("s3:*")], f"a local s3: folder under {root}"


def _cli(*args, cwd):
    done = subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=cwd, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_a_study_on_s3_survives_kill_9_and_reads_anywhere(bucket, tmp_path):
    uri = f"s3://studies/digits?{bucket}"
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    for folder in (first, second, third):
        folder.mkdir()
    digits = load_digits()
    np.savez(first / "digits.npz", x=digits.data.reshape(-1, 8, 8) / 16, y=digits.target)
    trial = {"epochs": 20, "latency_repeats": 2}  # a kill after 2 trials lands before the 6th
    config = {**STUDY, "dir": uri, "trials": 6, "parallel": 1, "trial": trial}
    config |= {"dataset": "numpy", "data_path": str(first / "digits.npz")}
    (first / "study.yaml").write_text(yaml.safe_dump(config))

    driver = paretune("run", "study.yaml", "--cpus", "2", cwd=first, stderr=subprocess.DEVNULL)
    watch = storage.Mirror(uri, tmp_path / "watch")
    try:
        deadline = time.monotonic() + 300
        while final_rows(tmp_path / "watch") is None or final_rows(tmp_path / "watch").num_rows < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "the study never went"
            time.sleep(0.1)
            watch.pull()
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        time.sleep(0.5)
        stop(driver)
    watch.pull()
    before = {r["trial"]: r["val_acc"] for r in final_rows(tmp_path / "watch").to_pylist()}
    assert 2 <= len(before) < 6

    code, output = _cli("resume", uri, "--cpus", "2", cwd=second)
    assert code == 0, output
    assert "Pareto front" in output

    (first / "digits.npz").unlink()  # read where the data is not
    code, output = _cli("results", uri, "--limit", "100", cwd=third)
    assert code == 0, output
    shown = [line.split()[:2] for line in output.splitlines()[1:] if line.strip()]
    completed = [trial for trial, status in shown if status == "completed"]
    assert len(completed) == len(set(completed)) == 6, output  # the budget, exactly
    watch.pull()
    after = {r["trial"]: r["val_acc"] for r in final_rows(tmp_path / "watch").to_pylist()}
    assert len(after) == 6 and all(after[t] == acc for t, acc in before.items())  # none lost
    code, output = _cli("plot", uri, "--out", "plots", cwd=third)
    assert code == 0 and list((third / "plots").glob("*.png")), output

    from cluster.dashboard.feed import StudyFeed

    feed = StudyFeed(uri, min_interval=0)
    feed.refresh()
    assert feed.tables.latest.num_rows >= 6

    best = max(after, key=after.get)
    code, output = _cli("export", uri, best, "--out", "model.onnx", cwd=third)
    assert code == 2 and ("data_path" in output or "digits.npz" in output), output
    np.savez(first / "digits.npz", x=digits.data.reshape(-1, 8, 8) / 16, y=digits.target)
    code, output = _cli("export", uri, best, "--out", "model.onnx", cwd=third)
    assert code == 0 and (third / "model.onnx").stat().st_size > 0, output
    _no_s3_folder(first, second, third, Path.cwd())


def test_a_saved_study_loads_for_reading_where_its_data_is_not(tmp_path):
    from cluster.study.config import ConfigError, Study
    from cluster.study.resume import load_study
    from spaces.util import write_json

    np.savez(tmp_path / "data.npz", x=np.zeros((20, 8, 8)), y=np.arange(20) % 2)
    raw = {
        **STUDY,
        "dir": str(tmp_path),
        "dataset": "numpy",
        "data_path": str(tmp_path / "data.npz"),
    }
    write_json(tmp_path / "study.json", Study.from_dict(raw).to_dict())
    (tmp_path / "data.npz").unlink()
    assert load_study(tmp_path).data_path == str(tmp_path / "data.npz")  # results, plot, ...
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path, here=True)  # what a run needs


def test_a_study_on_a_uri_never_becomes_a_local_folder(tmp_path, monkeypatch):
    from cluster.study.config import ConfigError, Study
    from cluster.study.resume import prepare_dir

    monkeypatch.chdir(tmp_path)
    study = Study.from_dict({**STUDY, "dir": "s3://bucket/study"})
    assert study.dir == "s3://bucket/study" and storage.is_uri(study.dir)
    with pytest.raises(ConfigError, match="URI"):
        prepare_dir(study, resume=False)
    assert not list(tmp_path.iterdir())


def test_a_pass_reads_the_searchers_files_as_one_change_left_them(bucket, tmp_path):
    import threading

    import search
    from cluster.study.store import StudyStore
    from search.testing import mixed_space

    def searcher():
        return search.create("random", mixed_space(), metric="score", seed=1)

    uri = f"s3://studies/one-change?{bucket}"
    store = StudyStore(tmp_path / "staged", searcher())
    store.folder.mkdir()
    mirror = storage.Mirror(uri, store.folder)
    with store.locked() as asking:  # an ask as the runner makes it: its claim, then its journal
        trial = asking.ask()
        store.claim(trial.id)
        passing = threading.Thread(target=mirror.push)
        passing.start()
        passing.join(0.5)
        assert passing.is_alive()  # the pass waits for the change to end
    passing.join()
    storage.Mirror(uri, tmp_path / "copy").pull()
    copy = StudyStore(tmp_path / "copy", searcher())
    with copy.locked() as loaded:
        assert trial.id in loaded.pending and copy.runner_trials() == {trial.id}


def test_a_pass_uploads_an_asks_claim_before_the_journal_line_that_asked_it(
    bucket, tmp_path, monkeypatch
):
    import search
    from cluster.study.results import ResultWriter
    from cluster.study.store import JOURNAL_FILE, RUNNER_TRIALS, STATE_FILE, StudyStore
    from search.testing import mixed_space

    store = StudyStore(tmp_path, search.create("random", mixed_space(), metric="score", seed=1))
    with store.locked() as asking:
        told = asking.ask()
        asking.tell(told.id, {"score": 1.0})
        store.claim(told.id)
    writer = ResultWriter(tmp_path, pa.schema([("trial", pa.string())]))
    writer.add({"trial": told.id}, flush=True)  # its row
    with store.locked() as asking:  # the next ask, as the runner makes it: claim, journal line
        store.claim(asking.ask().id)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.onnx").write_bytes(b"onnx")
    uploaded = []
    monkeypatch.setattr(storage.Mirror, "_upload", lambda self, name, *_: uploaded.append(name))
    storage.Mirror(f"s3://studies/cut?{bucket}", tmp_path).push()
    assert uploaded[0].startswith("results/") and uploaded[-2:] == [STATE_FILE, JOURNAL_FILE]
    assert uploaded.index(RUNNER_TRIALS) < uploaded.index(STATE_FILE)  # a kill -9 between any two
