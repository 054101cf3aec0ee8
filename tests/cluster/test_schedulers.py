"""Ray Tune's schedulers on real studies: they count epochs, stop the trials they should, and
population-based training records the config that trained each row."""

import collections
import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from cluster.raytune import runner
from cluster.raytune.schedulers import make_scheduler, max_steps
from cluster.raytune.trainable import run_and_report
from cluster.study import results
from cluster.study.rows import config_of
from tests.cluster.test_runner import _study

HOPELESS = {"lr": [1e-6, 3e-2]}  # the low end learns nothing in three epochs
PBT = {"lr": [1e-4, 3e-2], "weight_decay": [1e-6, 1e-2]}


def _told(study) -> dict[str, dict]:
    state = json.loads((Path(study.dir) / "searcher.json").read_text())
    return {o["id"]: o for o in state["observations"]}


def test_grace_periods_intervals_and_max_t_count_epochs(tmp_path):
    plain = _study(tmp_path, trial={"epochs": 3})
    assert max_steps(plain) == 4  # three epochs and the final row
    # fine-tuning and QAT take 8/15 and 4/15 of the epochs (issue 37): 2 and 1 of 3
    assert max_steps(_study(tmp_path, compress=True, trial={"epochs": 3})) == 4 + 2 + 1
    expected = {"asha": ("_max_t", 4), "median": ("_grace_period", 2)}
    expected |= {"hyperband": ("_max_t", 4), "pbt": ("_perturbation_interval", 2)}
    for name, (attribute, default) in expected.items():
        scheduler = make_scheduler(dataclasses.replace(plain, scheduler=name, train=PBT))
        assert scheduler._time_attr == "training_iteration"
        assert getattr(scheduler, attribute) == default


@pytest.mark.parametrize("name", ["moasha", "hyperband", "median", "pbt"])
def test_our_schedulers_are_module_level_classes(tmp_path, name):
    from cluster.raytune import schedulers

    study = _study(tmp_path, scheduler=name, train=PBT, trial={"epochs": 3})
    scheduler = make_scheduler(study)
    assert getattr(schedulers, type(scheduler).__qualname__) is type(scheduler)


def test_a_clone_with_no_epoch_left_reports_the_config_that_trained_it(tmp_path):
    study = _study(tmp_path, train=PBT, trial={"epochs": 2, "latency_repeats": 2})
    settings = dataclasses.replace(study.trial_settings(), snapshots=True)
    source = study.space().sample(np.random.default_rng(0))
    perturbed = {**source, "train.lr": source["train.lr"] * 2}

    def run(config, resume=None):
        sent = []
        run_and_report(config, settings, send=lambda *m: sent.append(m), resume=resume)
        return sent

    (_, one), (last, two), (final, none) = run(source)
    assert one and two and none is None  # a snapshot each epoch, none at the end
    (clone, no_snapshot), (end, _) = run(perturbed, resume=two)  # cloned at its end
    assert clone == {**last, "phase": "clone"} and no_snapshot is None  # trained by `source`
    assert end["final"] and end["trained_with"] == source and end["val_acc"] == final["val_acc"]
    midway = run(perturbed, resume=one)  # one epoch left: it trains under the perturbed config
    assert [(m.get("step"), m["trained_with"]) for m, _ in midway] == [
        (2, perturbed),
        (None, perturbed),
    ]


def test_population_based_training_records_the_config_that_trained_each_row(local_ray, tmp_path):
    study = _study(
        tmp_path,
        train=PBT,
        scheduler="pbt",
        scheduler_options={  # in step: the worse trial clones the better after each epoch
            "perturbation_interval": 1,
            "synch": True,
            "quantile_fraction": 0.5,
            "resample_probability": 1.0,
        },
        trials=2,
        trial={"epochs": 2, "latency_repeats": 4},
    )
    table = runner.run(study)
    assert table.num_rows == 2 and set(table["status"].to_pylist()) == {"completed"}
    assert list((tmp_path / "study" / "ray").rglob("checkpoint_*/snapshot.pt"))
    rows = collections.defaultdict(list)
    for row in results.load(study.dir, every_step=True).to_pylist():
        rows[row["trial"]].append(row)

    def epoch(row):  # what an epoch report measured, and under which config
        return row["step"], json.dumps(config_of(row), sort_keys=True), row["val_acc"]

    trained = collections.defaultdict(set)  # epoch -> the trials that trained it
    for trial, reports in rows.items():
        for row in reports:
            if row["phase"] == "train":
                trained[epoch(row)].add(trial)
    told, cloned = _told(study), 0
    for trial, reports in rows.items():
        *epochs, final = reports
        assert final["final"] and not any(r["final"] for r in epochs)
        assert config_of(final) == config_of(epochs[-1])  # the config of the epoch it came from
        clones = [r for r in epochs if r["phase"] == "clone"]
        assert all(trained[epoch(r)] - {trial} for r in clones)  # another trial trained it
        cloned += len(clones)
        assert told[trial]["config"] == config_of(final)
        assert told[trial]["metrics"]["val_acc"] == final["val_acc"]
    assert cloned == 1  # cloned at the end: finished as the config that trained them


def test_a_paused_trial_a_scheduler_stops_keeps_its_last_report(tmp_path):
    import search
    from cluster.raytune.recorder import Progress, Recorder
    from cluster.study.store import StudyStore

    study = _study(tmp_path)
    searcher = search.create("random", study.space(), metric="val_acc", seed=0, max_fidelity=9)
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    store = StudyStore(tmp_path, searcher)
    recorder = Recorder(store, study=study, writer=writer, done=0, progress=Progress(study))
    recorder.ask("tune-1")
    report = {"step": 2, "phase": "train", "val_acc": 50.0, "final": False}
    recorder.result("tune-1", {**report, "training_iteration": 2})
    assert searcher.rungs["0"] == [{"fidelity": 2.0, "metrics": {"val_acc": 50.0}}]  # a rung
    recorder.complete("tune-1", None, error=False)  # Tune ends a paused trial with no result
    row = results.load(tmp_path).to_pylist()[0]
    assert (row["status"], row["step"], row["val_acc"]) == ("stopped", 2, 50.0)
    told = searcher.observations[0]
    assert told["status"] == "stopped" and told["metrics"] == {"val_acc": 50.0}
    assert told["fidelity"] == 2 and told["rungs"] == [
        {"fidelity": 2.0, "metrics": {"val_acc": 50.0}}
    ]


def test_asha_stops_trials_and_the_searcher_knows(local_ray, tmp_path):
    study = _study(
        tmp_path,
        trials=8,
        scheduler="asha",
        scheduler_options={"grace_period": 1, "reduction_factor": 4, "max_t": 4},
        trial={"epochs": 3, "latency_repeats": 4},
    )
    table = runner.run(study)
    statuses = table["status"].to_pylist()
    assert table.num_rows == 8 and "stopped" in statuses
    stopped = table.filter(pc.equal(table["status"], "stopped"))
    assert all(step < 3 for step in stopped["step"].to_pylist())
    told = {trial: o["status"] for trial, o in _told(study).items()}
    assert sorted(told.values()) == sorted(statuses)


# HyperBand's study is a grid in a fixed order, two at a time, one bracket: a hopeless and a good
# learning rate, then both again, so the second hopeless trial meets a cutoff the first two set
GRID = {
    "searcher": "grid",
    "searcher_options": {"points": 2},
    "arch_options": {"layers": [1, 2], "widths": [16]},
    "train": {"lr": [1e-6, 3e-2]},
    "parallel": 2,
}


@pytest.mark.parametrize(
    ("scheduler", "options", "changes"),
    [
        # three trials at a time on two CPUs: Ray's rule would pause one and retrain it
        ("median", {"grace_period": 1, "min_samples_required": 2}, {"parallel": 3}),
        ("hyperband", {"max_t": 4, "reduction_factor": 2, "brackets": 1}, GRID),
    ],
)
def test_median_and_hyperband_stop_hopeless_trials_early(
    local_ray, tmp_path, scheduler, options, changes
):
    study = _study(
        tmp_path,
        **{"train": HOPELESS, "trials": 6, **changes},
        scheduler=scheduler,
        scheduler_options=options,
        trial={"epochs": 3, "latency_repeats": 4},
    )
    table = runner.run(study)
    trials = table.num_rows
    assert trials == (4 if scheduler == "hyperband" else 6)  # a 4-config grid ends at 4
    stopped = table.filter(pc.equal(table["status"], "stopped")).to_pylist()
    completed = table.filter(pc.equal(table["status"], "completed")).to_pylist()
    assert stopped and completed and len(stopped) + len(completed) == trials
    assert min(r["step"] for r in stopped) < 3  # before the last epoch: never FIFO
    assert max(r["val_acc"] for r in stopped) < max(r["val_acc"] for r in completed)
    every = results.load(study.dir, every_step=True)
    every = every.filter(pc.invert(every["final"]))
    reports = collections.Counter(zip(every["trial"].to_pylist(), every["step"].to_pylist()))
    assert max(reports.values()) == 1  # each epoch trained once
    told = _told(study)
    assert {r["trial"]: r["status"] for r in stopped + completed} == {
        trial: o["status"] for trial, o in told.items()
    }
