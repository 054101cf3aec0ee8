"""Multi-objective, constraint-aware successive halving (`moasha`): the rule on hand-built
rungs in closed form, its decisions through Tune's scheduler interface, and a real study."""

import dataclasses
import types

import pyarrow.compute as pc
import pytest

from cluster.raytune import runner
from cluster.raytune.moasha import MOASHA, continuing
from cluster.raytune.schedulers import check_scheduler, make_scheduler
from cluster.raytune.trainable import PRICED
from cluster.study.config import ConfigError
from search.objective import Objective
from tests.cluster.test_runner import _study

TWO = Objective.build(["val_acc", "latency_ms"], ["max", "min"], {"latency_ms": 10.0})
# Six trials at a rung. Within the bound, a, b and c are the front (a and b its extremes, so
# crowding puts them first), d is dominated by c alone, f by a, c and d; e is the most accurate
# but over the latency bound.
RUNG = [
    ("a", {"val_acc": 90.0, "latency_ms": 8.0}),
    ("b", {"val_acc": 80.0, "latency_ms": 2.0}),
    ("c", {"val_acc": 85.0, "latency_ms": 5.0}),
    ("d", {"val_acc": 70.0, "latency_ms": 6.0}),
    ("e", {"val_acc": 95.0, "latency_ms": 12.0}),
    ("f", {"val_acc": 60.0, "latency_ms": 9.0}),
]


@pytest.mark.parametrize(
    ("factor", "kept"),
    [
        (3, {"a", "b"}),  # ceil(6 / 3) = 2: the front's extremes
        (2, {"a", "b", "c"}),  # 3: the whole front
        (1.5, {"a", "b", "c", "d"}),  # 4: the second front's d
        (1.01, {"a", "b", "c", "d", "f"}),  # 6: all but the one over the bound
    ],
)
def test_a_rung_keeps_the_top_fronts_and_never_a_trial_over_a_bound(factor, kept):
    assert continuing(RUNG, objective=TWO, reduction_factor=factor) == kept


def test_one_objective_is_successive_halving_on_it():
    one = Objective.build("val_acc", "max", {})
    assert continuing(RUNG, objective=one, reduction_factor=3) == {"e", "a"}
    assert continuing(RUNG, objective=one, reduction_factor=2) == {"e", "a", "c"}


def test_a_rung_ranks_on_the_objectives_every_trial_reported():
    rung = [(name, {"val_acc": m["val_acc"]}) for name, m in RUNG]  # no latency yet
    assert continuing(rung, objective=TWO, reduction_factor=3) == {"e", "a"}
    nothing = [(name, {}) for name, _ in RUNG]
    assert continuing(nothing, objective=TWO, reduction_factor=3) == set("abcdef")


def test_a_nan_objective_is_its_worst_value():
    rung = [*RUNG[:3], ("g", {"val_acc": float("nan"), "latency_ms": 8.0})]  # a dominates it
    assert continuing(rung, objective=TWO, reduction_factor=4 / 3) == {"a", "b", "c"}


def _trial(trial_id, **config):
    return types.SimpleNamespace(trial_id=trial_id, config=config)


def _decide(scheduler, trial, step, **metrics):
    return scheduler.on_trial_result(None, trial, {"training_iteration": step, **metrics})


def test_the_scheduler_ranks_each_arrival_against_the_trials_before_it():
    scheduler = MOASHA(
        objectives={"val_acc": "max", "latency_ms": "min"},
        constraints={"latency_ms": 10.0},
        grace_period=1,
        reduction_factor=3,
        max_t=9,
    )
    assert scheduler.set_search_properties("val_acc", "max")  # the runner's first objective
    assert not scheduler.set_search_properties("val_acc", "min")
    trials = {name: _trial(name) for name, _ in RUNG}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    decisions = {name: _decide(scheduler, trials[name], 1, **m) for name, m in RUNG}
    # a first; b is a's equal (two extremes): continue; c third of 3 (keep 1, two ahead): stop;
    # d, dominated: stop; e over the bound: stop; f (6 at the rung, keep 2): stop
    assert decisions == {
        "a": "CONTINUE",
        "b": "CONTINUE",
        "c": "STOP",
        "d": "STOP",
        "e": "STOP",
        "f": "STOP",
    }
    assert _decide(scheduler, trials["a"], 2, val_acc=91.0, latency_ms=8.0) == "CONTINUE"
    assert _decide(scheduler, trials["a"], 3, val_acc=92.0, latency_ms=8.0) == "CONTINUE"  # first
    assert _decide(scheduler, trials["b"], 3, val_acc=70.0, latency_ms=9.0) == "STOP"  # a dominates
    assert _decide(scheduler, trials["a"], 9, val_acc=93.0, latency_ms=8.0) == "STOP"  # max_t


def test_a_trial_over_a_bound_stops_at_its_first_rung_even_alone():
    scheduler = MOASHA(objectives=[("val_acc", "max")], constraints={"size_bytes": 100.0})
    scheduler.set_search_properties("val_acc", "max")
    trial = _trial("t")
    scheduler.on_trial_add(None, trial)
    assert _decide(scheduler, trial, 1, val_acc=99.0, size_bytes=101.0) == "STOP"


def test_priced_costs_rank_the_epochs_that_report_no_cost():
    scheduler = MOASHA(objectives={"val_acc": "max", "latency_ms": "min"}, reduction_factor=2)
    fast, slow = _trial("fast", **{PRICED: {"latency_ms": 1.0}}), _trial("slow")
    slow.config[PRICED] = {"latency_ms": 9.0}
    for trial in (slow, fast):
        scheduler.on_trial_add(None, trial)
    assert _decide(scheduler, slow, 1, val_acc=90.0) == "CONTINUE"
    # on accuracy alone it would stop (1 of 2 kept); on both it is on the front
    assert _decide(scheduler, fast, 1, val_acc=80.0) == "CONTINUE"
    third = _trial("third", **{PRICED: {"latency_ms": 5.0}})
    scheduler.on_trial_add(None, third)
    assert _decide(scheduler, third, 1, val_acc=70.0) == "STOP"  # fast dominates it


def test_in_a_users_tuner_it_takes_tunes_metric_or_says_what_it_needs():
    plain = MOASHA()
    with pytest.raises(ValueError, match="no objectives"):
        plain.on_trial_add(None, _trial("t"))
    assert plain.set_search_properties("loss", "min")
    plain.on_trial_add(None, _trial("t"))
    assert _decide(plain, _trial("t"), 1, loss=1.0) == "CONTINUE"
    with pytest.raises(ValueError, match="reduction_factor must be > 1"):
        MOASHA(reduction_factor=1)


def test_multi_objective_studies_default_to_moasha_single_objective_to_asha(tmp_path):
    two = {"objectives": {"val_acc": "max", "latency_ms": "min"}}
    assert _study(tmp_path, scheduler="", **two).scheduler == "moasha"
    assert _study(tmp_path, scheduler="", objectives={"val_acc": "max"}).scheduler == "asha"
    assert _study(tmp_path, scheduler="asha", **two).scheduler == "asha"  # as told
    study = _study(
        tmp_path, scheduler="", constraints={"latency_ms": 5.0}, trial={"epochs": 3}, **two
    )
    scheduler = make_scheduler(study)
    assert isinstance(scheduler, MOASHA) and scheduler._max_t == 4
    assert scheduler._objective.metrics == ("val_acc", "latency_ms")
    assert scheduler._objective.constraints == (("latency_ms", 5.0),)
    bad = dataclasses.replace(study, scheduler_options={"objectives": {}})
    with pytest.raises(ConfigError, match="unknown option 'objectives'.*grace_period"):
        check_scheduler(bad)


def test_a_two_objective_study_runs_with_moasha_and_stops_trials(local_ray, tmp_path):
    study = _study(
        tmp_path,
        scheduler="",  # the default: two objectives
        objectives={"val_acc": "max", "latency_ms": "min"},
        train={"lr": [1e-6, 3e-2]},  # the low end learns nothing in three epochs
        trials=6,
        scheduler_options={"grace_period": 1, "reduction_factor": 3},
        trial={"epochs": 3, "latency_repeats": 4},
    )
    assert study.scheduler == "moasha"
    table = runner.run(study)
    statuses = table["status"].to_pylist()
    assert table.num_rows == 6 and "stopped" in statuses and "completed" in statuses
    stopped = table.filter(pc.equal(table["status"], "stopped"))
    # stopped at a rung (grace 1, factor 3: epochs 1 and 3) before its final row
    assert set(stopped["step"].to_pylist()) <= {1, 3}
