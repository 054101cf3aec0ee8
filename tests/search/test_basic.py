import pytest

import search
from search.testing import SearcherContract, mixed_space, toy_metrics
from spaces import Choice, Float, Int, Space


class TestRandom(SearcherContract):
    searcher_name = "random"


class TestGrid(SearcherContract):
    searcher_name = "grid"
    seed_sensitive = False  # a grid visits the same points in the same order


def test_grid_covers_choices_ints_and_float_points():
    space = Space({"a": Choice(("x", "y")), "n": Int(1, 3), "f": Float(0.0, 1.0)})
    grid = search.create("grid", space, metric="m", points=3)
    configs = [grid.ask().config for _ in range(18)]
    assert {(c["a"], c["n"], c["f"]) for c in configs} == {
        (a, n, f) for a in "xy" for n in (1, 2, 3) for f in (0.0, 0.5, 1.0)
    }
    with pytest.raises(search.Exhausted):
        grid.ask()


def test_grid_enumerates_conditionals_once():
    space = Space({"d": Choice((False, True)), "t": Choice((1, 2, 3), when={"d": True})})
    grid = search.create("grid", space, metric="m")
    assert [grid.ask().config for _ in range(4)] == [
        {"d": False},
        {"d": True, "t": 1},
        {"d": True, "t": 2},
        {"d": True, "t": 3},
    ]


def test_create_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="did you mean 'random'"):
        search.create("randon", mixed_space(), metric="score")
    with pytest.raises(ValueError, match=r"no option \['pionts'\]; its options: \['points'\]"):
        search.create("grid", mixed_space(), metric="score", pionts=3)
    with pytest.raises(ValueError, match="mode must be"):
        search.create("random", mixed_space(), metric="score", mode="maximize")
    with pytest.raises(ValueError, match="one per metric"):
        search.create("random", mixed_space(), metric=["a", "b", "c"], mode=["min", "max"])
    with pytest.raises(ValueError, match="upper bound must be a number"):
        search.create("random", mixed_space(), metric="score", constraints={"cost": "5ms"})
    with pytest.raises(ValueError, match="spaces.Space"):
        search.create("random", {"x": Float(0, 1)}, metric="score")


def test_state_is_refused_for_another_searcher_or_space():
    state = search.create("random", mixed_space(), metric="score").state_dict()
    with pytest.raises(ValueError, match="another space"):
        search.create("random", Space({"x": Float(0, 1)}), metric="score").load_state_dict(state)
    with pytest.raises(ValueError, match="not 'grid'"):
        search.create("grid", mixed_space(), metric="score").load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        search.create("random", mixed_space(), metric="score").load_state_dict(
            {**state, "version": 7}
        )


def test_stopped_trials_are_kept_out_of_the_usable_results():
    searcher = search.create("random", mixed_space(), metric="score")
    trial = searcher.ask()
    assert (
        searcher.tell(trial.id, toy_metrics(trial.config), status="stopped")["status"] == "stopped"
    )
    assert searcher.usable() == [] and searcher.best() is None


@pytest.mark.parametrize("name", sorted(set(search.SEARCHERS) - {"darts"}))  # darts: a NAS space
def test_rejected_configs_keep_their_costs_and_stay_out_of_the_model(name):
    space = Space({"x": Float(0.0, 1.0), "k": Choice(("a", "b", "c"))})
    searcher = search.create(name, space, metric="acc", seed=0, constraints={"params": 10.0})
    for i in range(8):
        trial = searcher.ask()
        if i % 2:
            record = searcher.tell(trial.id, {"params": 50.0}, status="infeasible")
            assert record["status"] == "infeasible" and record["violation"] == 4.0  # (50 - 10) / 10
            assert record["metrics"] is None and record["costs"] == {"params": 50.0}
        else:
            searcher.tell(trial.id, {"acc": trial.config["x"], "params": 5.0})
    assert len(searcher.usable()) == 4
    searcher.ask()  # still proposes


def test_told_completed_an_infeasible_result_stays_infeasible():
    space = Space({"x": Float(0.0, 1.0)})
    searcher = search.create("random", space, metric="acc", constraints={"params": 10.0})
    trial = searcher.ask()
    record = searcher.tell(trial.id, {"acc": 0.9, "params": 15.0}, status="completed")
    assert record["status"] == "infeasible" and record["violation"] == 0.5
    trial = searcher.ask()
    record = searcher.tell(trial.id, {"acc": 0.9, "params": 5.0}, status="completed")
    assert record["status"] == "completed" and searcher.best()["id"] == trial.id


def test_add_keeps_a_given_id_and_status():
    space = Space({"x": Float(0.0, 1.0)})
    searcher = search.create("random", space, metric="acc")
    record = searcher.add({"x": 0.5}, {"acc": 0.3}, status="stopped", trial_id="7")
    assert record["id"] == "7" and record["status"] == "stopped"
    assert searcher.ask().id == "8"
    with pytest.raises(ValueError, match="must be a new number"):
        searcher.add({"x": 0.5}, {"acc": 0.3}, trial_id="7")


def test_a_grid_pickles_and_goes_on_where_it_was():
    import cloudpickle  # what Ray Tune pickles its search algorithm with

    searcher = search.create("grid", Space({"k": Choice(("a", "b", "c"))}), metric="acc")
    first = searcher.ask().config
    copy = cloudpickle.loads(cloudpickle.dumps(searcher))
    assert [copy.ask().config for _ in range(2)] == [{"k": "b"}, {"k": "c"}] != [first] * 2
