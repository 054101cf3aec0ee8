"""The first hour at the command line, round 2: SIGTERM as Ctrl-C, a full disk in one line,
`cluster.results` importable, and the tables and addresses the CLI prints."""

import errno
import importlib
import logging
import signal
import subprocess
import time
from types import SimpleNamespace

import pyarrow as pa
import pytest

from cluster import cli
from cluster.cli import commands
from cluster.cli.table import format_table
from cluster.study import results
from spaces import Choice, Float, Space
from tests.cluster.drivers import paretune, stop, write_study

SPACE = Space({"arch.width": Choice((8, 16, 32)), "train.lr": Float(1e-3, 1.0, log=True)})


@pytest.fixture
def study(tmp_path):
    """A study folder with 20 finished trials."""
    writer = results.ResultWriter(tmp_path, results.schema(SPACE, ["val_acc"]))
    for i in range(20):
        config = {"arch.width": (8, 16, 32)[i % 3], "train.lr": 0.01}
        row = {"trial": str(i), "status": "completed", "val_acc": 50.0 + i, "latency_ms": 9.0}
        writer.add({**row, "final": True, "config": config, "study": "s"})
    writer.flush()
    return tmp_path


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    config, folder = write_study(tmp_path, trials=5, trial={"epochs": 20, "latency_repeats": 4})
    driver = paretune("run", config, "--cpus", "2", stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (folder / "results").exists():  # Ray started, a trial reported
            if driver.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the run never got going: {driver.communicate()[1]}")
            time.sleep(0.2)
        driver.send_signal(signal.SIGTERM)
        _, said = driver.communicate(timeout=90)
    finally:
        stop(driver)
    assert driver.returncode == 143, said
    assert f"paretune resume {folder}" in said
    assert "SIGTERM received" not in said and "PC: @" not in said  # no native stack dump


def test_an_os_error_tune_logs_during_a_run_is_one_line(tmp_path, monkeypatch, capfd):
    from ray.tune.execution import tune_controller

    from cluster.raytune import runner

    assert tune_controller.logger.name == commands.TUNE_LOG  # where Tune logs our errors

    def full_disk(study, **options):  # as Tune logs an error of the study's recorder
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            tune_controller.logger.exception("Trial t: Error stopping trial.")
        return None

    monkeypatch.setattr(runner, "run", full_disk)
    config, _ = write_study(tmp_path)
    assert cli.main(["run", str(config)]) == 2
    said = capfd.readouterr().err
    assert said.strip() == "paretune: error: [Errno 28] No space left on device"
    assert not logging.getLogger(commands.TUNE_LOG).filters  # the filter lives with the run


def test_cluster_results_is_the_study_results_module():
    module = importlib.import_module("cluster.results")
    assert module.load is results.load and module.pareto is results.pareto


def test_the_end_of_run_table_leaves_no_run_of_spaces_after_a_long_config():
    table = pa.table({"trial": ["0", "1"], "config": ["width=8 " * 40, "width=8"]})
    lines = format_table(table, ["trial", "config"]).splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert lines[2] == "1      width=8"


def test_a_negative_limit_is_refused(study, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["results", str(study), "--limit", "-1"])
    assert stopped.value.code == 2
    assert "--limit: must be a whole number of rows, 0 or more; got '-1'" in capsys.readouterr().err
    assert cli.main(["results", str(study), "--limit", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "... 20 more rows"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--columns", "trial,nosuch", "--columns: no column 'nosuch'; columns: ["),
        ("--columns", "trial,val_ac", "--columns: no column 'val_ac' (did you mean 'val_acc'?)"),
        ("--sort", "val_ac:desc", "--sort: no column 'val_ac' (did you mean 'val_acc'?)"),
    ],
)
def test_an_unknown_column_is_refused_with_the_closest(study, capsys, option, value, message):
    assert cli.main(["results", str(study), option, value]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "shown"), [("0.0.0.0", "http://127.0.0.1:8750/"), ("::", "http://[::1]:8750/")]
)
def test_a_dashboard_on_every_interface_prints_an_address_a_browser_opens(
    monkeypatch, capsys, host, shown
):
    from cluster.dashboard import command, server

    def serve(studies, **options):
        return SimpleNamespace(shutdown=lambda: None), options["port"]

    def sleep(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "serve", serve)
    monkeypatch.setattr(command.time, "sleep", sleep)
    args = ["dashboard", "study", "--host", host]
    assert cli.main(args) == 0
    said = capsys.readouterr().out
    assert f"on {shown}, listening on all interfaces" in said and "0.0.0.0:" not in said
