"""Bring your own model: a trainable written here, run as a study (`trainable:` and `space:`,
ASHA, constraints, kill -9 and resume) and under `ParetuneSearch` in a user's own Tuner
(ASHA, `ConcurrencyLimiter`, `Tuner.restore`); bad trainables named before Ray starts or
failed as trials while the study goes on."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import textwrap
import time

import pytest
import yaml

from cluster.raytune import runner
from cluster.raytune.own import OwnSettings, run_own
from cluster.study import results
from cluster.study.config import ConfigError, Study, read
from tests.cluster.drivers import final_rows, paretune, stop

# A user's module: `train(config, report)` with a quality that depends on the config.
TRAINABLE = """
import time


def train(config, report):
    quality = 1.0 - abs(config["lr"] - 0.01) * 10 + (0.2 if config["opt"] == "sgd" else 0.0)
    for step in range(1, config["steps"] + 1):
        time.sleep(config.get("pause", 0.02))
        report(score=quality * step / config["steps"], loss=1.0 / step)
    return {"score": quality, "cost": 10 * config.get("momentum", 0.5)}
"""
SPACE = {
    "lr": {"low": "1e-3", "high": 0.1, "log": True},  # YAML's 1e-3 is text: read as a number
    "opt": ["adam", "sgd"],
    "momentum": {"low": 0.1, "high": 0.9, "when": {"opt": "sgd"}},
    "steps": 4,
}
STUDY = {
    "objectives": {"score": "max"},
    "constraints": {"cost": 7.0},
    "searcher": "random",
    "scheduler": "asha",
    "scheduler_options": {"max_t": 4, "grace_period": 1, "reduction_factor": 2},
    "trials": 8,
    "parallel": 2,
}


def _module(folder, name: str, source: str = TRAINABLE) -> str:
    """`source` as `folder/name.py`; a name per test, as Ray reuses worker processes."""
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return str(folder)


def _study(tmp_path, module: str, **changes) -> Study:
    folder = _module(tmp_path, module, changes.pop("source", TRAINABLE))
    raw = {**STUDY, "trainable": f"{module}:train", "trainable_path": folder, "space": SPACE}
    return Study.from_dict({**raw, "dir": str(tmp_path / "study"), **changes})


def test_a_study_runs_its_own_trainable_under_asha_with_a_conditional(local_ray, tmp_path):
    study = _study(tmp_path, "own_asha")
    table = runner.run(study)
    rows = table.to_pylist()
    statuses = {r["status"] for r in rows}  # infeasible: ran to the end over the cost bound
    assert len(rows) == 8 and {"completed", "stopped"} <= statuses
    assert statuses <= {"completed", "stopped", "infeasible"}
    assert min(r["step"] for r in rows if r["status"] == "stopped") < 4  # stopped at a rung
    for row in rows:
        assert row["step"] == 4 if row["status"] != "stopped" else row["step"] <= 4
        assert (row["config.momentum"] is None) == (row["config.opt"] == "adam")
        assert row["config.steps"] == 4 and 1e-3 <= row["config.lr"] <= 0.1
    every = results.load(study.dir, every_step=True)
    assert "loss" in every.column_names and every["loss"].null_count < every.num_rows
    state = json.loads((tmp_path / "study" / "searcher.json").read_text())
    told = {o["id"]: o for o in state["observations"]}
    for row in rows:  # the row and the searcher judge alike (cluster.study.judge)
        assert told[row["trial"]]["status"] == row["status"], (row, told[row["trial"]])
        if row["status"] != "stopped":
            assert (row["status"] == "infeasible") == (row["cost"] > 7.0), row
    assert json.loads((tmp_path / "study" / "study.json").read_text())["space"] == SPACE


BAD = """
def train(config, report):
    if config["mode"] == "raise":
        return 1 / 0
    if config["mode"] == "text":
        report(score="high")
    report(loss=0.5)
    if config["mode"] == "ok":
        return {"score": 0.9}
"""


def test_bad_trainables_fail_their_trials_and_the_study_goes_on(local_ray, tmp_path):
    study = _study(
        tmp_path,
        "own_bad",
        source=BAD,
        space={"mode": ["ok", "silent", "text", "raise"]},
        searcher="grid",
        scheduler="fifo",
        scheduler_options={},
        constraints={},
        trials=4,
    )
    table = runner.run(study)
    by_mode = {r["config.mode"]: r for r in table.to_pylist()}
    assert by_mode["ok"]["status"] == "completed" and by_mode["ok"]["score"] == 0.9
    errors = {mode: row["error"] for mode, row in by_mode.items() if mode != "ok"}
    assert {by_mode[m]["status"] for m in errors} == {"failed"}
    assert errors["silent"] == (
        "own_bad:train never reported the objective 'score' (it reported ['loss'])"
    )
    assert errors["text"] == "own_bad:train reported score='high': not a number"
    assert errors["raise"].startswith("ZeroDivisionError: division by zero (own_bad.py:4)")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"trainable": "nowhere:train"}, r"'nowhere:train': cannot import 'nowhere' from '/"),
        ({"trainable": "own_ok:trian"}, r"module 'own_ok' has no 'trian' \(did you mean 'train'"),
        ({"trainable": "own_ok"}, r"'own_ok': expected 'package.module:function'"),
        ({"trainable": "own_ok:LIMIT"}, r"own_ok.LIMIT is not a function \(it is 3\)"),
        ({"trainable": "own_ok:one"}, r"own_ok.one\(config\) cannot be called as one\(config, rep"),
        ({"trainable": "own_raising:train"}, r"importing 'own_raising' raised KeyError: 'HOME2'"),
        ({"space": {}}, r"space: a mapping of parameters"),
        ({"space": {"lr": {"low": 1, "hgh": 2}}}, r"space.lr: expected \{low, high\}"),
        ({"space": {"lr": {"low": 0, "high": 1, "lg": True}}}, r"space.lr: unknown key 'lg'"),
        ({"space": {"m": {"low": 0.0, "high": 1.0, "when": {"op": "x"}}}}, r"condition on 'op'"),
        ({"scheduler": "pbt"}, r"scheduler pbt restarts trials from the built-in trainer"),
        ({"scheduler_options": {}}, r"scheduler asha with a trainable: set scheduler_options"),
        ({"constraints": {"cost": "low"}}, r"constraints.cost: expected int or float, got 'low'"),
    ],
)
def test_bad_input_is_refused_before_ray_starts(tmp_path, changes, message):
    _module(tmp_path, "own_raising", "import os\nHOME = os.environ['HOME2']\n")
    source = TRAINABLE + "\nLIMIT = 3\n\ndef one(config):\n    return {}\n"
    with pytest.raises(ConfigError, match=message):
        _study(tmp_path, "own_ok", source=source, **changes)


def test_a_study_file_imports_its_trainable_from_its_folder(tmp_path):
    _module(tmp_path, "own_file")
    raw = {**STUDY, "trainable": "own_file:train", "space": SPACE, "dir": str(tmp_path / "s")}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    study = read(tmp_path / "study.yaml")
    assert study.trainable_path == str(tmp_path.resolve())
    assert list(study.space().params) == ["lr", "opt", "momentum", "steps"]
    assert Study.from_dict(study.to_dict()) == study  # study.json round-trips


def _run_own(config, **settings):
    sent = []
    options = {"trainable": "own_unit:train", "objectives": ("score",), **settings}
    run_own(config, OwnSettings(**options), send=sent.append)
    return sent


def test_a_report_measures_a_model_and_rejects_it_before_training(tmp_path):
    source = """
    import torch
    from torch import nn

    def train(config, report):
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, config["hidden"]), nn.ReLU(),
                              nn.Linear(config["hidden"], 10))
        x = torch.randn(8, 1, 8, 8)
        report.measure(model, x)  # before training: over the bound ends the trial here
        report(score=torch.tensor(0.5))  # one-element tensors are numbers
        report.measure(model, x)
        return None  # the last step's metrics are the result
    """
    _module(tmp_path, "own_unit", source)
    cost = {"runtime": "torch", "repeats": 3, "batch_size": 1}  # trainers.measure's options
    settings = {"folder": str(tmp_path), "constraints": {"params": 2000}, "cost": cost}
    small = _run_own({"hidden": 8}, **settings)
    assert [r["final"] for r in small] == [False, True] and small[0]["score"] == 0.5
    final = small[-1]
    assert final["status"] == "completed" and final["params"] == 64 * 8 + 8 + 8 * 10 + 10
    assert {"macs", "size_bytes", "latency_ms", "peak_mem_bytes"} <= set(final)
    assert "params" in final["metric_names"] and final["step"] == 1
    large = _run_own({"hidden": 64}, **settings)
    assert len(large) == 1 and large[0]["status"] == "infeasible"
    assert large[0]["params"] > 2000 and "params" in json.loads(large[0]["violations"])


def test_resume_after_kill_9_of_a_study_with_its_own_trainable(local_ray, tmp_path):
    _module(tmp_path, "own_resume")
    raw = {**STUDY, "trainable": "own_resume:train", "dir": str(tmp_path / "study")}
    raw |= {"space": {**SPACE, "pause": 0.1}, "scheduler": "fifo", "scheduler_options": {}}
    raw["trials"] = 6
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(raw))
    folder = tmp_path / "study"
    address = local_ray.get_runtime_context().gcs_address  # the driver dies, the cluster lives
    driver = paretune(
        "run", tmp_path / "study.yaml", "--address", address, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while (finals := final_rows(folder)) is None or finals.num_rows < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "never got going"
            time.sleep(0.1)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        stop(driver)
    killed_at = time.time()
    before = {r["trial"]: r for r in final_rows(folder).to_pylist()}
    assert 2 <= len(before) < 6
    from cluster.study.resume import load_study

    runner.run(load_study(folder), resume=True)
    finals = final_rows(folder).to_pylist()
    assert sorted(r["trial"] for r in finals) == sorted({r["trial"] for r in finals})
    assert len(finals) == 6
    after = {r["trial"]: r for r in finals}
    assert all(after[t]["score"] == row["score"] for t, row in before.items())
    every = results.load(folder, every_step=True).to_pylist()
    assert not [r for r in every if r["trial"] in before and r["time"].timestamp() > killed_at]
    state = json.loads((folder / "searcher.json").read_text())
    assert not state["pending"] and {o["id"] for o in state["observations"]} == set(after)


def test_paretune_search_in_a_users_tuner_with_asha_a_limiter_and_restore(local_ray, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from cluster.raytune import ParetuneSearch

    once = tmp_path / "interrupt-once"
    once.touch()

    def train(config):  # a plain Tune function: reports through tune.report
        if config["lr"] > 0.04:
            raise RuntimeError("diverged")
        quality = 1.0 - abs(math.log10(config["lr"]) + 2)
        for step in range(1, 5):
            time.sleep(0.05)  # trials left when the interrupt comes, even on a loaded machine
            tune.report({"score": quality * step / 4, "cost": 10 * config.get("momentum", 0.5)})

    class Interrupt(tune.Callback):  # Ctrl-C, as Tune takes it: state saved, fit returns
        def on_trial_complete(self, iteration, trials, trial, **info):
            if sum(t.status == "TERMINATED" for t in trials) >= 2 and once.exists():
                once.unlink()
                os.kill(os.getpid(), signal.SIGUSR1)

    space = {k: v for k, v in SPACE.items() if k != "steps"}
    search = ParetuneSearch(
        "random", space, metric="score", constraints={"cost": 7.0}, seed=7, max_t=4
    )
    tuner = tune.Tuner(
        train,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(search, max_concurrent=2),
            scheduler=ASHAScheduler(max_t=4, grace_period=1, reduction_factor=2),
            metric="score",
            mode="max",
            num_samples=6,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path), name="mine", callbacks=[Interrupt()], verbose=0
        ),
    )
    tuner.fit()
    state_files = lambda: sorted((tmp_path / "mine").glob("searcher-state-*.pkl"))  # noqa: E731
    first = json.loads(state_files()[-1].read_text())["searcher"]
    assert 2 <= len(first["observations"]) < 6 and not once.exists()

    grid = tune.Tuner.restore(str(tmp_path / "mine"), train).fit()
    state = json.loads(state_files()[-1].read_text())
    observed = state["searcher"]["observations"]
    assert observed[: len(first["observations"])] == first["observations"]  # kept as they were
    assert len(observed) == len({o["id"] for o in observed}) == 6
    assert not state["searcher"]["pending"] and not state["ids"]
    # a trial that raised before its first report has no metrics after a restore
    reached = {
        r.config["lr"]: r.metrics["training_iteration"] for r in grid if r.config and not r.error
    }
    assert len(grid) == 6
    for record in observed:
        config, status = record["config"], record["status"]
        if config["lr"] > 0.04:  # raised: Tune's error
            assert status == "failed"
        elif reached[config["lr"]] < 4:  # ASHA stopped it at a rung
            assert status == "stopped"
        else:  # ran to max_t; a cost over its bound is infeasible
            over = config.get("momentum", 0.5) * 10 > 7.0
            assert status == ("infeasible" if over else "completed"), record
    assert {o["status"] for o in observed} >= {"failed", "completed", "stopped"}


def test_the_example_study_checks_out_and_its_trainable_runs_an_epoch():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    study = read(root / "examples" / "own-model.yaml")
    assert study.trainable_path == str(root / "examples") and study.constraints
    config = {"width": 8, "hidden": 32, "optimizer": "adam", "lr": 0.01}
    settings = dataclasses.replace(OwnSettings.of(study), constraints={})  # any machine's speed
    sent = []
    run_own({**config, "epochs": 1}, settings, send=sent.append)
    final = sent[-1]
    assert [r["final"] for r in sent] == [False, True] and final["status"] == "completed"
    assert final["val_acc"] > 50 and final["latency_ms"] > 0 and final["params"] > 0
