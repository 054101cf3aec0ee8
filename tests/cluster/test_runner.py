"""Real studies on Ray Tune (a session-wide local Ray with 2 CPUs); the schedulers are tested
in test_schedulers.py."""

import json

import pytest

from cluster.raytune import runner
from cluster.study import results
from cluster.study.config import Study

TINY = {
    "arch": "mlp",
    "arch_options": {"layers": [1, 2], "widths": [16, 32]},
    "train": {"lr": [1e-3, 3e-2]},
    "compress": False,
    "searcher": "random",
    "scheduler": "fifo",
    "trials": 6,
    "parallel": 2,
    "trial": {"epochs": 2, "latency_repeats": 4},
}


def _study(tmp_path, **changes):
    return Study.from_dict({**TINY, "dir": str(tmp_path / "study"), **changes})


def test_study_runs_its_budget_into_parquet(local_ray, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "CHUNK", 4)  # a long study's fits in turn: here 4 trials, then 2
    study = _study(
        tmp_path, searcher="bo", searcher_options={"n_initial": 3}, train={"lr": [1e-2, 3e-2]}
    )
    table = runner.run(study)
    assert len(list((tmp_path / "study" / "ray").iterdir())) == 2  # two Tune fits
    assert table.num_rows == 6 and set(table["status"].to_pylist()) == {"completed"}
    assert len(set(table["trial"].to_pylist())) == 6
    # 2 epochs learn digits at lr >= 1e-2 (every corner of the space scores 60-89%; at lr 1e-3
    # a 2-layer mlp stays near 20%, so the range here leaves that out)
    assert all(v > 40 for v in table["val_acc"].to_pylist())
    assert table["step"].to_pylist() == [2] * 6
    assert table["config.arch.layers"].type == "int64" and table["node"].null_count == 0
    every = results.load(study.dir, every_step=True)
    assert every.num_rows == 6 * 3  # two epochs and the final row
    state = json.loads((tmp_path / "study" / "searcher.json").read_text())
    assert len(state["observations"]) == 6 and not state["pending"]


def test_failures_and_infeasible_do_not_stop_the_study(local_ray, tmp_path):
    study = _study(
        tmp_path,
        train={"lr": [1e20, 1e30]},  # every trial diverges: NaN loss
        trials=3,
    )
    table = runner.run(study)
    assert table["status"].to_pylist() == ["failed"] * 3
    for trial, error in zip(table["trial"].to_pylist(), table["error"].to_pylist()):
        assert error.startswith("FloatingPointError") and "\n" not in error  # one line
        assert error.endswith(f"(traceback: logs/trial-{trial}.txt)")
        assert "Traceback" in (tmp_path / "study" / "logs" / f"trial-{trial}.txt").read_text()
    study = Study.from_dict(
        {**TINY, "dir": str(tmp_path / "tight"), "trials": 3, "constraints": {"params": 10.0}}
    )
    with pytest.raises(ValueError, match="stopped: nothing fits params <= 10"):
        runner.run(study)  # priced on the driver: no config fits, none is trained
    every = results.load(study.dir, every_step=True)
    assert set(every["status"].to_pylist()) == {"infeasible"} and all(every["refused"].to_pylist())
    state = json.loads((tmp_path / "tight" / "searcher.json").read_text())
    assert {o["status"] for o in state["observations"]} == {"infeasible"}
    assert all(o["priced"] and o["costs"]["params"] > 10 for o in state["observations"])


def test_a_second_run_refuses_the_folder_and_resume_is_a_no_op(local_ray, tmp_path):
    study = _study(tmp_path, trials=2)
    runner.run(study)
    with pytest.raises(ValueError, match="already holds a study"):
        runner.run(study)
    again = runner.run(study, resume=True)
    assert again.num_rows == 2


def test_a_trial_that_changes_config_is_told_under_the_new_one(tmp_path):
    import search
    from cluster.raytune.recorder import Progress, Recorder
    from cluster.study.store import StudyStore

    study = _study(tmp_path)
    (tmp_path / "study").mkdir()
    searcher = search.create("random", study.space(), metric="val_acc", seed=0)
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    recorder = Recorder(
        StudyStore(tmp_path / "study", searcher),
        study=study,
        writer=writer,
        done=0,
        progress=Progress(study),
    )
    trial = recorder.ask("tune-1")
    cloned = {**trial.config, "train.lr": 0.0123}
    recorder.result("tune-1", {"step": 1, "val_acc": 50.0}, config=cloned)
    assert searcher.pending[trial.id] == trial.config  # writing a row changes no searcher
    recorder.complete(
        "tune-1",
        {"final": True, "status": "completed", "val_acc": 60.0},
        error=False,
        config=cloned,
    )
    assert searcher.observations[0]["config"]["train.lr"] == 0.0123
    assert recorder.asked == {}
    rows = results.load(tmp_path, every_step=True)["config.train.lr"].to_pylist()
    assert rows == [0.0123, 0.0123]


def test_tune_searcher_limits_concurrency_and_round_trips_its_state(tmp_path):
    import search
    from cluster.raytune.adapter import tune_searcher
    from cluster.raytune.recorder import Progress, Recorder
    from cluster.study.store import StudyStore

    study = _study(tmp_path)
    (tmp_path / "study").mkdir()
    searcher = search.create("random", study.space(), metric="val_acc", seed=0)
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    store = StudyStore(tmp_path / "study", searcher)
    adapter = tune_searcher(
        Recorder(store, study=study, writer=writer, done=0, progress=Progress(study))
    )
    assert adapter.set_max_concurrency(2)
    first, second = adapter.suggest("a"), adapter.suggest("b")
    assert first and second and first != second
    assert adapter.suggest("c") is None  # two running: no third
    adapter.on_trial_complete("a", {"final": True, "status": "completed", "val_acc": 1.0})
    assert adapter.suggest("c") is not None
    adapter.save(tmp_path / "saved.json")
    other = search.create("random", study.space(), metric="val_acc", seed=0)
    copy = tune_searcher(
        Recorder(
            StudyStore(tmp_path / "other", other),
            study=study,
            writer=writer,
            done=0,
            progress=Progress(study),
        )
    )
    copy.restore(tmp_path / "saved.json")
    assert other.state_dict() == searcher.state_dict()


def test_the_runners_recorder_and_a_tuners_ledger_are_ledgers_of_one_state(tmp_path):
    import search
    from cluster.raytune.adapter import ParetuneSearch
    from cluster.raytune.ledger import Ledger, TunerLedger
    from cluster.raytune.recorder import Progress, Recorder
    from cluster.study.store import StudyStore

    study = _study(tmp_path)
    (tmp_path / "study").mkdir()
    searcher = search.create("random", study.space(), metric="val_acc", seed=0)
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    progress = Progress(study)
    recorder = Recorder(
        StudyStore(tmp_path / "study", searcher),
        study=study,
        writer=writer,
        done=0,
        progress=progress,
    )
    assert isinstance(recorder, Ledger) and isinstance(TunerLedger(searcher), Ledger)
    assert not isinstance(searcher, Ledger)
    adapter = ParetuneSearch(recorder)
    assert adapter.ledger is recorder and adapter.metric == "val_acc"
    adapter.suggest("a")
    state = adapter.get_state()
    assert set(state) == {"version", "searcher", "ids"} and list(state["ids"]) == ["a"]
    tuners = ParetuneSearch(search.create("random", study.space(), metric="val_acc", seed=0))
    tuners.suggest("b")
    tuners.on_trial_result("b", {"training_iteration": 3})
    again = ParetuneSearch(search.create("random", study.space(), metric="val_acc", seed=0))
    again.set_state(tuners.get_state())
    assert again.ledger.seen == tuners.ledger.seen and again.ledger.ids == {"b": "0"}


def test_latency_from_a_device_server_and_an_unreachable_one(local_ray, tmp_path):
    from cluster.remote import device

    server, port = device.serve()
    try:
        live = _study(tmp_path, trials=2, latency=f"remote://127.0.0.1:{port}")
        table = runner.run(live)
        assert table["status"].to_pylist() == ["completed"] * 2
        assert all(v > 0 for v in table["latency_ms"].to_pylist())
    finally:
        server.stop(grace=None)
    dead = Study.from_dict(
        {
            **TINY,
            "dir": str(tmp_path / "dead"),
            "train": {"lr": [1e-2, 3e-2]},  # learns in 2 epochs (above chance, checked below)
            "trials": 2,
            "latency": "remote://127.0.0.1:9",
            "latency_retry_s": 1,
        }
    )
    table = runner.run(dead)  # the study goes on, every trial failed with the reason
    assert table["status"].to_pylist() == ["failed"] * 2
    assert all("127.0.0.1:9 is unreachable" in e for e in table["error"].to_pylist())
    assert all(v > 10 for v in table["val_acc"].to_pylist())  # what trained is kept
