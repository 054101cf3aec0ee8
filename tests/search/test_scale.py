"""Asks at scale read only what is new: no pass over the whole history per ask or tell."""

import numpy as np
import pytest

import search
from spaces import Float, Space


class AppendOnly(list):
    """Observations whose first `sealed` entries may not be read again: appends, `len` and
    slices of what came after are allowed."""

    sealed = 0

    def __iter__(self):
        raise AssertionError("walked the whole history")

    def __getitem__(self, index):
        if isinstance(index, slice) and (index.start or 0) >= self.sealed:
            return list.__getitem__(self, index)
        raise AssertionError(f"read history[{index}]")


def metrics(config: dict) -> dict:
    return {"f": config["x"] + config["y"]}


@pytest.mark.parametrize(
    "name, options",
    [
        ("evolution", {"population": 10}),
        ("forest", {"trees": 4, "candidates": 32}),
        ("bo", {"max_fit": 30, "candidates": 32}),
    ],
)
def test_ask_and_tell_do_not_walk_the_history(name, options):
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    searcher = search.create(name, space, metric="f", mode="min", seed=0, **options)
    searcher.observations = AppendOnly()
    for x, y in np.random.default_rng(0).random((60, 2)):
        searcher.add({"x": float(x), "y": float(y)}, metrics({"x": x, "y": y}))
    trial = searcher.ask()  # a model-based searcher reads the history in once
    searcher.observations.sealed = len(searcher.observations)
    searcher.tell(trial.id, metrics(trial.config))
    for _ in range(3):
        trial = searcher.ask()
        searcher.tell(trial.id, metrics(trial.config))
    assert len(searcher.observations) == 64
