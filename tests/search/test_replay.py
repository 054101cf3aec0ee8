"""The replay contract (`Searcher.record` / `Searcher.apply`) for every registered searcher,
darts included (the contract classes cover the others' option variants)."""

import pytest

import search
import spaces
from search.testing import check_replay, mixed_space


def _darts_metrics(config: dict) -> dict:
    return {"score": float(sum(len(str(v)) for v in config.values()) % 7)}


@pytest.mark.parametrize("name", sorted(search.SEARCHERS))
def test_every_searcher_replays_its_recorded_changes_exactly(name):
    space, metrics = mixed_space(), None
    if name == "darts":
        space = spaces.Space.combine({"arch": spaces.nb201(), "train": spaces.training()})
        metrics = _darts_metrics

    def make(*, seed):
        return search.create(name, space, metric="score", seed=seed)

    check_replay(make, steps=6, **({"metrics": metrics} if metrics else {}))


def test_a_replayed_tell_of_another_status_and_an_unknown_event_are_refused():
    searcher = search.create("random", mixed_space(), metric="score", seed=0)
    trial, event = searcher.record("ask")
    again = search.create("random", mixed_space(), metric="score", seed=1)
    again.apply(event)
    with pytest.raises(ValueError, match="was told 'completed', replayed as 'failed'"):
        again.apply(
            {"op": "tell", "id": trial.id, "metrics": None, "status": None} | {"told": "completed"}
        )
    with pytest.raises(ValueError, match="unknown event 'rewind'; known: .*reserve"):
        again.apply({"op": "rewind"})
    with pytest.raises(ValueError, match="change must be one of"):
        searcher.record("load_state_dict", {})
