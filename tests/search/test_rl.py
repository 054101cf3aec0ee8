import math

import pytest

import search
from search.testing import SearcherContract, mixed_space, toy_metrics
from spaces import Choice, Float, Space


class TestController(SearcherContract):
    searcher_name = "rl"


class TestControllerHardPenalty(SearcherContract):
    searcher_name = "rl"
    options = {"reward": "hard", "bins": 4}


def test_probability_of_a_rewarded_choice_rises():
    space = Space({"op": Choice(("a", "b", "c", "d")), "x": Float(0.0, 1.0)})
    searcher = search.create("rl", space, metric="score", seed=0)
    assert searcher.probabilities("op")[2] == pytest.approx(0.25)
    for _ in range(60):
        trial = searcher.ask()
        searcher.tell(trial.id, {"score": 1.0 if trial.config["op"] == "c" else 0.0})
    assert searcher.probabilities("op")[2] > 0.6


def test_mnasnet_reward_by_hand():
    searcher = search.create(
        "rl", mixed_space(), metric="score", seed=0, constraints={"cost": 4.0}, reward="soft"
    )
    assert searcher.reward({"score": 0.9, "cost": 8.0}) == pytest.approx(0.9 * 2**-0.07)
    assert searcher.reward({"score": 0.9, "cost": 2.0}) == pytest.approx(0.9 * 0.5**-0.07)


def test_default_reward_penalizes_only_the_excess_over_the_bound():
    searcher = search.create("rl", mixed_space(), metric="score", seed=0, constraints={"cost": 4.0})
    assert searcher.reward({"score": 0.9, "cost": 2.0}) == 0.9  # no bonus under the bound
    assert searcher.reward({"score": 0.9, "cost": 4.0}) == 0.9
    assert searcher.reward({"score": 0.9, "cost": 8.0}) == pytest.approx(0.45)  # (8 / 4) ** -1
    assert searcher.reward({"score": -0.9, "cost": 8.0}) == pytest.approx(-1.8)


def test_never_repeats_a_told_config_while_new_ones_exist():
    space = Space({"a": Choice(("x", "y", "z")), "b": Choice((1, 2, 3))})
    searcher = search.create("rl", space, metric="score", seed=0, lr=0.5)
    seen = []
    for _ in range(9):  # a policy sure of one config after a few rewards still covers all 9
        trial = searcher.ask()
        seen.append(space.canonical(trial.config))
        searcher.tell(trial.id, {"score": 1.0 if trial.config["a"] == "x" else 0.0})
    assert len(set(seen)) == 9


def test_hard_penalty_scores_infeasible_below_every_reward():
    searcher = search.create(
        "rl", mixed_space(), metric="score", seed=0, constraints={"cost": 4.0}, reward="hard"
    )
    searcher.rewards = [0.2, 0.5, 0.9]
    assert searcher.reward({"score": 5.0, "cost": 8.0}) < 0.2
    assert searcher.reward({"score": 0.7, "cost": 3.0}) == 0.7


def test_rl_options_are_checked():
    with pytest.raises(ValueError, match="reward must be one of"):
        search.create("rl", mixed_space(), metric="score", reward="mnas")
    with pytest.raises(ValueError, match="advantage must be one of"):
        search.create("rl", mixed_space(), metric="score", advantage="raw")


@pytest.mark.parametrize("unit", [1.0, 1000.0])
def test_several_objectives_reward_the_share_not_dominated(unit):
    searcher = search.create("rl", mixed_space(), metric=["acc", "ms"], mode=["max", "min"], seed=0)
    for acc, ms in [(90, 5), (80, 2), (70, 6), (85, 4)]:
        searcher.tell(searcher.ask().id, {"acc": acc, "ms": ms * unit})
    # (75, 5) is dominated by (90, 5), (80, 2) and (85, 4), not by (70, 6)
    assert searcher.reward({"acc": 75, "ms": 5 * unit}) == pytest.approx(0.25)
    assert searcher.reward({"acc": 95, "ms": 1 * unit}) == 1.0


@pytest.mark.parametrize("advantage, same", [("rank", True), ("scaled", False)])
def test_rank_advantage_ignores_a_monotone_rescaling_of_the_metric(advantage, same):
    def configs(transform):
        searcher = search.create("rl", mixed_space(), metric="score", seed=0, advantage=advantage)
        out = []
        for _ in range(30):
            trial = searcher.ask()
            out.append(trial.config)
            score = toy_metrics(trial.config)["score"]
            searcher.tell(trial.id, {"score": transform(score)})
        return out

    assert (configs(lambda s: s) == configs(lambda s: math.exp(5 * s))) is same
