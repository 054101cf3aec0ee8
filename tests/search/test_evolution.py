import numpy as np
import pytest

import search
from search.evolution import crowding_distance, nondominated_ranks
from search.testing import SearcherContract, mixed_space, toy_metrics
from spaces import Choice, Float, Space


class TestEvolution(SearcherContract):
    searcher_name = "evolution"
    options = {"population": 6, "sample_size": 3}
    budget = 16


class TestEvolutionManyMutations(SearcherContract):
    searcher_name = "evolution"
    options = {"population": 4, "sample_size": 2, "mutations": 3}


def test_the_oldest_dies_not_the_worst():
    searcher = search.create(
        "evolution", mixed_space(), metric="score", seed=0, population=3, sample_size=2
    )
    scores = [10.0, -5.0, 3.0, 1.0]  # the best comes first, so age alone removes it
    ids = []
    for score in scores:
        trial = searcher.ask()
        ids.append(trial.id)
        searcher.tell(trial.id, {"score": score})
    assert searcher.members == ids[1:]


def test_tournament_picks_the_best_contestant():
    space = Space({"x": Float(0.0, 1.0), "k": Choice(("a", "b"))})
    searcher = search.create(
        "evolution", space, metric="score", seed=1, population=4, sample_size=4, step=1e-3
    )
    for x in (0.1, 0.2, 0.9, 0.3):
        trial = searcher.ask()
        searcher.pending[trial.id] = {"x": x, "k": "a"}
        searcher.tell(trial.id, {"score": x})
    for _ in range(5):
        child = searcher.ask().config
        assert child["x"] == pytest.approx(0.9, abs=0.01) or child["k"] == "b"


def test_feasible_beats_infeasible_then_least_violation():
    searcher = search.create(
        "evolution", mixed_space(), metric="score", seed=0, constraints={"cost": 1.0}
    )
    living = [
        {"metrics": {"score": 9.0, "cost": 3.0}, "violation": 2.0},
        {"metrics": {"score": 1.0, "cost": 1.0}, "violation": 0.0},
        {"metrics": {"score": 5.0, "cost": 2.0}, "violation": 1.0},
        {"metrics": {"score": 2.0, "cost": 0.5}, "violation": 0.0},
    ]
    assert np.argsort(searcher._ranking(living)).tolist() == [3, 1, 2, 0]


def test_mutation_respects_conditionals():
    space = Space({"d": Choice((False, True)), "t": Float(1.0, 2.0, when={"d": True})})
    searcher = search.create("evolution", space, metric="score", seed=0)
    for _ in range(20):
        child = searcher.mutate({"d": False})
        space.validate(child)
        assert child["d"] is True and 1.0 <= child["t"] <= 2.0


def test_nsga_ranks_and_crowding_by_hand():
    points = np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    assert nondominated_ranks(points).tolist() == [0, 0, 0, 1, 2]
    crowd = crowding_distance(points[:3])
    assert np.isinf(crowd[0]) and np.isinf(crowd[2])
    assert crowd[1] == pytest.approx((4 - 1) / 3 + (4 - 1) / 3)


def test_evolution_beats_random_on_a_smooth_problem():
    def regret(name, seed):
        s = search.create(name, mixed_space(), metric="score", seed=seed)
        for _ in range(150):
            t = s.ask()
            s.tell(t.id, toy_metrics(t.config))
        return 0.25 - s.best()["metrics"]["score"]  # optimum: x=.5, lr=1e-2, gelu, n=1, no t

    ours = np.median([regret("evolution", s) for s in range(5)])
    base = np.median([regret("random", s) for s in range(5)])
    assert ours < base
