"""Rung results reach the models: a trial stopped at a rung changes the next proposal (it was
kept out before); without `max_fidelity` nothing changes; rungs replay and round-trip."""

import json

import pytest

import search
from search.testing import mixed_space, toy_metrics

OPTIONS = {
    "bo": {"n_initial": 3},
    "forest": {"n_initial": 3, "trees": 8, "candidates": 64},
    "evolution": {"population": 4, "sample_size": 4},
    "rl": {},
}


def _proposal_after_a_stopped_trial(name, *, fidelity, max_fidelity=10):
    searcher = search.create(
        name, mixed_space(), metric="score", seed=3, max_fidelity=max_fidelity, **OPTIONS[name]
    )
    for _ in range(5):
        trial = searcher.ask()
        searcher.tell(trial.id, toy_metrics(trial.config))
    for _ in range(3):  # stopped at a rung: better there than every full result
        trial = searcher.ask()
        metrics = {"score": 10.0 + float(trial.id), "cost": 1.0}
        if fidelity is not None:
            searcher.report(trial.id, metrics, fidelity=fidelity)
        searcher.tell(trial.id, metrics, status="stopped")
    if name == "rl":  # its policy (a draw moves only once the probabilities have moved enough)
        return searcher, searcher.state_dict()["extra"]["logits"]
    return searcher, searcher.ask().config


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_a_stopped_trials_rung_result_changes_the_next_proposal(name):
    _, without = _proposal_after_a_stopped_trial(name, fidelity=None)
    searcher, with_rung = _proposal_after_a_stopped_trial(name, fidelity=3)
    assert with_rung != without
    assert all(o["status"] != "stopped" for o in searcher.usable())
    assert searcher.best()["metrics"]["score"] < 10.0  # a rung is never a result


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_without_max_fidelity_rungs_change_nothing(name):
    _, without = _proposal_after_a_stopped_trial(name, fidelity=None, max_fidelity=None)
    _, with_rung = _proposal_after_a_stopped_trial(name, fidelity=3, max_fidelity=None)
    assert with_rung == without


def test_evolution_breeds_from_the_trial_best_at_its_rung():
    searcher, child = _proposal_after_a_stopped_trial("evolution", fidelity=3)
    parents = {o["id"]: o["config"] for o in searcher.observations}
    best_at_rung = parents["7"]  # the highest score at fidelity 3
    assert sum(child.get(k) != v for k, v in best_at_rung.items()) <= 2


def test_pending_rungs_round_trip_and_replay():
    searcher = search.create("bo", mixed_space(), metric="score", seed=0, max_fidelity=8)
    trial = searcher.ask()
    _, event = searcher.record("report", trial.id, toy_metrics(trial.config), fidelity=2)
    assert event == {
        "op": "report",
        "id": trial.id,
        "metrics": toy_metrics(trial.config),
        "fidelity": 2.0,
    }
    state = json.loads(json.dumps(searcher.state_dict()))
    assert state["rungs"][trial.id][0]["fidelity"] == 2.0
    again = search.create("bo", mixed_space(), metric="score", seed=9, max_fidelity=8)
    again.load_state_dict(state)
    assert again.rungs == searcher.rungs
    fresh = search.create("bo", mixed_space(), metric="score", seed=0, max_fidelity=8)
    fresh.apply({"op": "ask", "id": trial.id, "config": trial.config})
    fresh.apply(event)
    assert fresh.rungs == searcher.rungs
    with pytest.raises(ValueError, match="fidelity is for a stopped trial"):
        searcher.tell(trial.id, toy_metrics(trial.config), fidelity=3)
    record = searcher.tell(trial.id, toy_metrics(trial.config))
    assert record["rungs"][0]["fidelity"] == 2.0 and "fidelity" not in record
    assert searcher.rungs == {}
