"""A config rejected on its costs before training teaches the constraint models of `bo` and
`forest`."""

import pytest

import search
from spaces import Choice, Float, Space


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
