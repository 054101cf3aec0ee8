"""A config rejected on its costs before training teaches the constraint models of `bo` and
`forest`."""

import pytest

import search
from search.history import History
from search.objective import Objective
from spaces import Choice, Float, Int, Space


@pytest.mark.parametrize("name", ["bo", "forest"])
def test_stops_proposing_configs_rejected_on_their_costs(name):
    # big models would score higher but never fit the latency bound; they are rejected before
    # training, so the searcher sees only their latency, never an accuracy
    space = Space({"big": Choice((False, True)), "lr": Float(0.0, 1.0)})
    searcher = search.create(
        name,
        space,
        metric="acc",
        mode="max",
        seed=0,
        constraints={"latency_ms": 5.0},
        n_initial=4,
    )
    big_after_design = 0
    for i in range(24):
        trial = searcher.ask()
        config = trial.config
        if config["big"]:
            searcher.tell(trial.id, {"latency_ms": 10.0 + config["lr"]}, status="infeasible")
            big_after_design += i >= 8
        else:
            acc = 1.0 - (config["lr"] - 0.3) ** 2
            searcher.tell(trial.id, {"acc": acc, "latency_ms": 1.0})
    assert big_after_design <= 2
    assert abs(searcher.best()["config"]["lr"] - 0.3) < 0.1


def test_past_the_limit_the_refusals_kept_span_the_whole_run_not_only_the_latest():
    # the latest refusals of a priced run lie near the bound: a constraint model fit on them
    # alone forgot the configs far over it and priced a whole ask's budget of them again
    space = Space({"n": Int(0, 9)})
    history = History(space, Objective.build("score", "max", {"cost": 0.5}))
    refusals = [
        {"config": {"n": n}, "status": "infeasible", "metrics": None, "costs": {"cost": n}}
        for n in range(10)
    ]
    x, costs = history.sync(refusals).rejected(4)
    assert costs[:, 0].tolist() == [0, 7, 8, 9]  # two latest, two spread over the rest
    x, costs = history.rejected(4, upto=3)
    assert costs[:, 0].tolist() == [0, 1, 2] and x.shape == (3, 1)
    assert history.rejected(0)[1].shape == (0, 1)
