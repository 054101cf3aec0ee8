"""What a new user meets in the first hour: checks before training, Ctrl-C, a second driver,
and the command line's output."""

import contextlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cluster import cli
from cluster.cli import commands, studies
from cluster.study import results
from spaces import Choice, Float, Space
from tests.cluster.drivers import final_ids, paretune, stop, write_study


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"objectives": {"val_accc": "max"}}, "did you mean 'val_acc'"),
        ({"trial": {"epochs": "one"}}, "'epochs' must be a whole number"),
        ({"scheduler": "median", "scheduler_options": {"grace": 1}}, "'grace_period'"),
        ({"dataset": "numpy", "data_path": "bad.npz"}, "n = len"),
        ({"dataset": "numpy", "data_path": "other.npz"}, "needs arrays 'x' and 'y'"),
        ({"dataset": "mnist1d", "arch": "nb201", "arch_options": {}}, "model 'nb201' takes"),
    ],
)
def test_a_bad_study_exits_2_before_anything_is_written(tmp_path, capsys, changes, message):
    np.savez(tmp_path / "bad.npz", x=np.zeros((10, 4)), y=np.zeros(9))
    np.savez(tmp_path / "other.npz", features=np.zeros((10, 4)), labels=np.zeros(10))
    with contextlib.chdir(tmp_path):
        config, folder = write_study(tmp_path, **changes)
        assert cli.main(["run", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not folder.exists()  # fixing the file and running again just works


def _wait(driver, done, *, seconds=240):
    deadline = time.monotonic() + seconds
    while not done():
        assert driver.poll() is None and time.monotonic() < deadline, "the study never got going"
        time.sleep(0.2)


def test_ctrl_c_a_second_driver_and_resume_keep_the_budget(tmp_path):
    slow = {"epochs": 60, "latency_repeats": 4}  # trials last long enough to be interrupted
    config, folder = write_study(tmp_path, trials=5, trial=slow)
    driver = paretune("run", config, "--cpus", "2", stderr=subprocess.PIPE)
    try:
        _wait(driver, lambda: (folder / "results").exists())  # a trial reported an epoch
        second = paretune("resume", folder, stderr=subprocess.PIPE)
        _, said = second.communicate(timeout=120)
        assert second.returncode == 2 and "is being run by process" in said
        _wait(driver, lambda: final_ids(folder))
        driver.send_signal(signal.SIGINT)
        _, said = driver.communicate(timeout=60)
    finally:
        stop(driver)
    assert driver.returncode == 130 and f"paretune resume {folder}" in said
    assert 1 <= len(final_ids(folder)) < 5
    resumed = paretune("resume", folder, "--cpus", "2", stdout=subprocess.PIPE)
    try:
        output, _ = resumed.communicate(timeout=300)
    finally:
        stop(resumed)
    assert resumed.returncode == 0 and "Pareto front" in output
    assert f"the study is in {folder}" in output and f"paretune plot {folder}" in output
    finals = final_ids(folder)
    assert len(finals) == len(set(finals)) == 5  # the budget, exactly
    statuses = results.load(folder)["status"].to_pylist()
    assert "running" not in statuses  # a trial Ctrl-C cut off is `interrupted`


def test_ctrl_c_while_ray_starts_exits_130(tmp_path):
    config, folder = write_study(tmp_path, trials=4)
    driver = paretune("run", config, "--cpus", "2", stderr=subprocess.PIPE)
    try:  # once the study folder is written, Ray is what starts next (on a busy machine the
        # interpreter itself can take over 1.5 s to start, and a signal then kills it)
        deadline = time.monotonic() + 60
        while not (folder / "study.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        _, said = driver.communicate(timeout=60)
    finally:
        stop(driver)
    assert driver.returncode == 130 and "paretune resume" in said


SPACE = Space({"arch.width": Choice((8, 16, 32)), "train.lr": Float(1e-3, 1.0, log=True)})


def _table(tmp_path, statuses):
    writer = results.ResultWriter(tmp_path, results.schema(SPACE, ["val_acc"]))
    for i, status in enumerate(statuses):
        config = {"arch.width": (8, 16, 32)[i % 3], "train.lr": 0.01}
        row = {"trial": str(i), "status": status, "val_acc": 50.0 + i, "latency_ms": 9.0 - i}
        writer.add({**row, "final": status != "running", "config": config, "study": "s"})
    writer.flush()


def test_results_sort_trials_as_numbers_and_quote_dotted_columns(tmp_path, capsys):
    _table(tmp_path, ["completed"] * 12)
    assert results.load(tmp_path)["trial"].to_pylist() == [str(i) for i in range(12)]
    where = 'config.arch.width > 16 AND "config.train.lr" < 1'
    assert cli.main(["results", str(tmp_path), "--where", where, "--sort", "trial:desc"]) == 0
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert shown == ["11", "8", "5", "2"]


def test_the_front_counts_finished_trials(tmp_path, capsys):
    from cluster.study.config import Study

    _table(tmp_path, ["completed", "completed", "running", "failed"])
    study = Study.from_dict({"objectives": {"val_acc": "max", "latency_ms": "min"}})
    commands._print_front(study, results.load(tmp_path))
    assert ": 1 of 3\n" in capsys.readouterr().out  # the running trial is not finished


def test_serve_takes_a_study_file(tmp_path):
    config, folder = write_study(tmp_path, trials=3)
    with studies.served(str(config)) as served:
        assert served == str(folder)
    assert (folder / "study.json").exists()
    with studies.served(str(config)) as served:
        assert served == str(folder)  # served as it is


def test_searchers_show_defaults_and_meanings(capsys):
    assert cli.main(["searchers"]) == 0
    shown = capsys.readouterr().out
    assert "  n_initial = 10: Latin-hypercube design size" in shown
    assert "  points = 5: " in shown and "bo: Bayesian optimization" in shown


def test_a_closed_pipe_is_no_error():
    command = f"{sys.executable} -m cluster.cli spaces nb201 | head -2"
    out = subprocess.run(command, shell=True, capture_output=True, text=True, check=True)
    assert out.stdout.count("\n") == 2 and out.stderr == ""
