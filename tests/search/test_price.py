"""Priced asks (issue 33): a searcher prices configs before it proposes them, never proposes one
over a bound while one that fits turns up, and records what it refused."""

import json

import pytest

import search
from search.testing import PRICED_BOUND, mixed_space, toy_metrics, toy_price
from spaces import Choice, Float, Int, Space


def _make(name="random", *, price=toy_price, bound=PRICED_BOUND, seed=0, **options):
    return search.create(
        name,
        mixed_space(),
        metric="score",
        seed=seed,
        constraints={"cost": bound},
        price=price,
        **options,
    )


def _counting(function):
    calls = []

    def counted(config):
        calls.append(dict(config))
        return function(config)

    return counted, calls


def test_a_price_is_called_once_per_cost_relevant_key():
    function, calls = _counting(toy_price)
    price = search.Price(function, keys=["n"])
    searcher = _make(price=price)
    for _ in range(30):
        trial = searcher.ask()
        searcher.tell(trial.id, toy_metrics(trial.config))
    priced = [c["n"] for c in calls]
    assert len(priced) == len(set(priced)) <= 8  # one call per n, learning rates aside
    stats = searcher.pricing
    assert stats["calls"] == len(calls) and stats["hits"] > 0 and stats["seconds"] >= 0
    assert price.key({"n": 2, "x": 0.1}) == price.key({"n": 2, "x": 0.9})


def test_a_plain_callable_is_wrapped_and_its_stats_survive_a_state_round_trip():
    searcher = _make()
    assert isinstance(searcher.price, search.Price)
    for _ in range(5):
        trial = searcher.ask()
        searcher.tell(trial.id, toy_metrics(trial.config))
    state = json.loads(json.dumps(searcher.state_dict(), default=search.plain))
    resumed = _make(seed=9)
    resumed.load_state_dict(state)
    assert resumed.pricing == searcher.pricing and resumed.pricing["calls"] > 0
    assert resumed.observations == searcher.observations
    assert resumed.trained() == 5 < len(resumed.observations)
    assert resumed.ask().config == searcher.ask().config


def test_the_budget_spent_raises_nothing_fits_naming_the_bound_and_the_cheapest():
    searcher = _make(price=search.Price(toy_price, calls=6), bound=0.5)
    with pytest.raises(search.NothingFits) as raised:
        searcher.ask()
    error = raised.value
    assert isinstance(error, search.Exhausted)
    assert "cost <= 0.5" in str(error) and "'cost': 1.0" in str(error)
    assert "cheapest config priced" in str(error) and "'n': 1" in str(error)
    assert error.refused and all(r in searcher.observations for r in error.refused)
    assert searcher.pricing["calls"] == 6 and searcher.trained() == 0
    assert not searcher.pending


def test_a_refusal_is_never_a_pending_trial_and_ids_keep_counting():
    searcher = _make()
    trials = [searcher.ask() for _ in range(6)]
    refused = [r["id"] for t in trials for r in t.refused]
    assert refused, "a third of the space fits: some asks must have refused"
    ids = [int(i) for i in refused + [t.id for t in trials]]
    assert sorted(ids) == list(range(len(ids)))
    assert set(searcher.pending) == {t.id for t in trials}
    assert searcher.usable() == []  # refusals have no metrics


def test_a_nothing_fits_ask_is_recorded_and_replays():
    searcher = _make(price=search.Price(toy_price, calls=4), bound=0.5)
    with pytest.raises(search.NothingFits) as raised:
        searcher.record("ask")
    event = json.loads(json.dumps(raised.value.event, default=search.plain))
    assert event["op"] == "ask" and event["config"] is None
    assert [r["id"] for r in event["refused"]] == [r["id"] for r in raised.value.refused]
    assert event["price"]["calls"] == 4
    again = _make(price=search.Price(toy_price, calls=4), bound=0.5, seed=3)
    again.apply(event)
    assert again.observations == searcher.observations and again.pricing == searcher.pricing
    assert again.next_id == searcher.next_id and not again.pending


def test_a_price_returning_an_unknown_cost_or_given_no_bound_is_refused():
    with pytest.raises(ValueError, match=r"\['latency_ms'\] that are not constraint names.*cost"):
        _make(price=lambda config: {"latency_ms": 1.0}).ask()
    with pytest.raises(ValueError, match="price: a price checks costs .* constraints"):
        search.create("random", mixed_space(), metric="score", price=toy_price)
    with pytest.raises(ValueError, match="cost 'cost' must be a number"):
        _make(price=lambda config: {"cost": "cheap"}).ask()
    with pytest.raises(ValueError, match="calls must be an integer >= 1"):
        search.Price(toy_price, calls=0)


def test_grid_skips_the_configs_that_do_not_fit_recording_them():
    space = Space({"n": Int(1, 6)})
    grid = search.create(
        "grid",
        space,
        metric="score",
        constraints={"cost": PRICED_BOUND},
        price=lambda config: {"cost": float(7 - config["n"])},
        points=6,
    )
    assert [grid.ask().config["n"] for _ in range(3)] == [4, 5, 6]
    assert [o["config"]["n"] for o in grid.observations] == [1, 2, 3]
    with pytest.raises(search.Exhausted):
        grid.ask()


def test_darts_does_not_price_its_supernet_trial():
    import spaces

    space = spaces.Space.combine({"arch": spaces.nb201(), "train": spaces.training()})

    def price(config):
        return {"cost": float(sum(v == "nor_conv_3x3" for v in config.values()))}

    darts = search.create(
        "darts", space, metric="score", seed=0, constraints={"cost": 2.0}, price=price
    )
    first = darts.ask()
    assert "supernet" in first.config and first.costs == {}
    assert darts.ask().costs["cost"] <= 2.0  # a slot while the supernet trains: priced


def test_rl_learns_from_refusals_to_draw_what_fits():
    searcher = _make("rl")
    before = searcher.probabilities("n")[3:].sum()  # n in 4..8, over the bound
    for _ in range(10):
        trial = searcher.ask()
        searcher.tell(trial.id, toy_metrics(trial.config))
    refusals = len(searcher.observations) - searcher.trained()
    assert refusals > 0
    assert searcher.probabilities("n")[3:].sum() < before - 0.1


def test_evolution_mutates_a_parent_until_the_child_fits():
    searcher = _make("evolution", population=4, sample_size=2)
    for _ in range(12):
        trial = searcher.ask()
        assert trial.config["n"] <= PRICED_BOUND
        searcher.tell(trial.id, toy_metrics(trial.config))
    # past the first population, children come from mutating fitting parents
    assert searcher.trained() == 12


@pytest.mark.parametrize("name", ["rl", "evolution", "bo"])
def test_an_ask_never_prices_past_its_budget(name):
    function, calls = _counting(lambda config: {"latency_ms": 10.0})  # nothing fits
    price = search.Price(function, calls=3)
    options = {"evolution": {"population": 4, "sample_size": 2}, "bo": {"n_initial": 2}}
    searcher = search.create(
        name,
        mixed_space(),
        metric="score",
        seed=0,
        constraints={"latency_ms": 1.0},
        price=price,
        **options.get(name, {}),
    )
    for _ in range(3):
        before = len(calls)
        with pytest.raises(search.NothingFits):
            searcher.ask()
        assert len(calls) - before <= 3


def test_a_config_the_function_cannot_price_now_is_unpriced_once_and_not_cached():
    answers = iter([search.Unpriced("a timeout"), {"cost": 2.0}])

    def flaky(config):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    price = search.Price(flaky)
    assert price({"n": 1}) == {} and price.known({"n": 1}) is None  # unpriced, not cached
    assert price({"n": 1}) == {"cost": 2.0} and price.stats["calls"] == 2


@pytest.mark.parametrize("name", ["random", "bo", "evolution"])
def test_a_config_that_fits_without_its_compression_is_proposed_plain(name):
    # quantizing halves the cost: only configs that need it to fit (x > 0.4) keep it
    space = Space({"x": Float(0.0, 1.0), "quantize": Choice((False, True))})
    price = search.Price(
        lambda config: {"cost": config["x"] * (0.5 if config["quantize"] else 1.0)},
        twin=lambda config: {**config, "quantize": False},
    )
    searcher = search.create(
        name, space, metric="y", mode="max", seed=0, constraints={"cost": 0.4}, price=price
    )
    proposed = []
    for _ in range(30):
        trial = searcher.ask()
        proposed.append(trial.config)
        assert trial.costs == price(trial.config)  # the costs of the config proposed
        searcher.tell(trial.id, {"y": trial.config["x"], "cost": trial.costs["cost"]})
    for k, config in enumerate(proposed):  # one that fits plain stays quantized only when
        if config["quantize"] and config["x"] <= 0.4:  # its plain twin was proposed before
            assert {**config, "quantize": False} in proposed[:k]
    assert any(c["quantize"] and c["x"] > 0.4 for c in proposed)
    assert any(not c["quantize"] for c in proposed)


def test_a_twin_must_be_callable():
    with pytest.raises(ValueError, match="twin must be callable or None"):
        search.Price(toy_price, twin={"quantize": False})


@pytest.mark.parametrize("name", ["evolution", "rl"])
def test_a_draw_that_misses_a_narrow_bound_is_repaired_from_the_nearest_refusal(name):
    """Eight choices, a cost counting those not "a": a config with at most one fits (25 of
    65,536, 0.04%). Uniform draws miss it in a budget of 200 calls with probability 92%; the
    ask changes its nearest refusal half the time and walks down to a fit."""
    space = Space({f"x{i}": Choice(["a", "b", "c", "d"]) for i in range(8)})
    for seed in range(3):
        price = search.Price(lambda c: {"cost": sum(v != "a" for v in c.values())}, calls=200)
        searcher = search.create(
            name, space, metric="score", seed=seed, constraints={"cost": 1}, price=price
        )
        trial = searcher.ask()  # evolution: its population's first, drawn; rl: its policy's
        assert trial.costs["cost"] <= 1
    told = set()
    for _ in range(6):  # repairs walk towards the few that fit, never back to one told
        trial = searcher.ask()
        assert trial.costs["cost"] <= 1 and space.canonical(trial.config) not in told
        told.add(space.canonical(trial.config))
        searcher.tell(trial.id, {"score": 1.0} | trial.costs)
