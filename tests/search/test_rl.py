import pytest

import search
from search.testing import SearcherContract, mixed_space
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
    searcher = search.create("rl", mixed_space(), metric="score", seed=0, constraints={"cost": 4.0})
    assert searcher.reward({"score": 0.9, "cost": 8.0}) == pytest.approx(0.9 * 2**-0.07)
    assert searcher.reward({"score": 0.9, "cost": 2.0}) == pytest.approx(0.9 * 0.5**-0.07)


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


@pytest.mark.parametrize("unit", [1.0, 1000.0])
def test_several_objectives_reward_the_share_not_dominated(unit):
    searcher = search.create("rl", mixed_space(), metric=["acc", "ms"], mode=["max", "min"], seed=0)
    for acc, ms in [(90, 5), (80, 2), (70, 6), (85, 4)]:
        searcher.tell(searcher.ask().id, {"acc": acc, "ms": ms * unit})
    # (75, 5) is dominated by (90, 5), (80, 2) and (85, 4), not by (70, 6)
    assert searcher.reward({"acc": 75, "ms": 5 * unit}) == pytest.approx(0.25)
    assert searcher.reward({"acc": 95, "ms": 1 * unit}) == 1.0
