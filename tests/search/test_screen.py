"""A price's screen (issue 33): past its warm-up, a model fit on the exact prices answers for
the configs clearly over or under a bound, and only those near one are priced exactly."""

import json
import math

import numpy as np
import pytest

import search
from search.testing import check_replay
from spaces import Choice, Float, Int, Space

OPS = {"conv": 3.0, "sep": 1.5, "pool": 1.0}
SPACE = Space(
    {
        "w1": Choice((8, 16, 32, 64)),
        "w2": Choice((8, 16, 32, 64)),
        "depth": Int(1, 8),
        "op": Choice(tuple(OPS)),
        "lr": Float(1e-4, 1e-1, log=True),
    }
)
KEYS = ["depth", "op", "w1", "w2"]  # what the latency depends on (not lr)
BOUND = 15.0  # about a fifth of the space fits


def latency(config: dict) -> dict:
    """A closed-form cost: the sum of the widths times the depth times the op's factor."""
    return {"latency_ms": config["depth"] * (config["w1"] + config["w2"]) * OPS[config["op"]] / 10}


def metrics(config: dict) -> dict:
    """Wider, deeper, convolutional models score better: the best ones sit near the bound."""
    score = math.log(config["w1"] + config["w2"]) + math.log(config["depth"])
    score += 0.2 * (config["op"] == "conv") - (math.log10(config["lr"]) + 2) ** 2 / 10
    return {"score": score, **latency(config)}


def counting():
    calls = []

    def priced(config):
        calls.append(dict(config))
        return latency(config)

    return priced, calls


def distinct_configs(count: int, seed: int = 0) -> list[dict]:
    rng, out, keys = np.random.default_rng(seed), [], set()
    while len(out) < count:
        config = SPACE.sample(rng)
        key = tuple(config[k] for k in KEYS)
        if key not in keys:
            keys.add(key)
            out.append(config)
    return out


def test_past_its_warm_up_the_screen_prices_exactly_only_the_configs_near_the_bound():
    function, calls = counting()
    price = search.Price(function, keys=KEYS, screen=20)
    bounds, level = {"latency_ms": BOUND}, math.log(BOUND)
    screened = near = far = 0
    for i, config in enumerate(distinct_configs(300)):
        before = len(calls)
        answer = price(config, bounds=bounds)
        if i < 20:
            assert len(calls) == before + 1 and answer == latency(config)  # the warm-up
            continue
        model = price.screen.models["latency_ms"]  # the fit that placed it
        row = price.screen.encoding.row({k: config[k] for k in KEYS})
        reach = row is not None and model.predict(row) is not None
        distance = abs(math.log(latency(config)["latency_ms"]) - level)
        if len(calls) > before:  # priced exactly: near the bound, or out of the fit's reach
            near += 1
            assert not reach or distance <= 2 * model.margin, (config, distance, model.margin)
        else:
            screened += 1
            far += distance > 2 * model.margin
            assert reach
    assert price.stats["calls"] == len(calls) == 20 + near
    assert price.stats["screened"] == screened and price.stats["hits"] == 0
    assert screened > 2 * near and far > 0
    model = price.screen.models["latency_ms"]
    assert model.log and 0 < model.margin < 1.0  # a product: its log fits best; a learned error


def test_the_screen_never_places_a_config_beyond_its_margin_on_the_wrong_side():
    price = search.Price(latency, keys=KEYS, screen=20)
    level, checked = math.log(BOUND), 0
    for config in distinct_configs(300, seed=1):
        answer = price(config, bounds={"latency_ms": BOUND})
        model = price.screen.models.get("latency_ms")
        margin = model and model.margin
        if price.known(config) is not None:
            continue  # priced exactly
        true = math.log(latency(config)["latency_ms"])
        if answer["latency_ms"] <= BOUND:  # accepted on its predicted costs
            assert true <= level + margin, (config, answer)
        else:  # refused on its predicted costs
            assert answer["latency_ms"] > BOUND and true >= level - margin, (config, answer)
        checked += 1
    assert checked > 150


def test_before_its_warm_up_or_without_bounds_every_config_is_priced_exactly():
    function, calls = counting()
    price = search.Price(function, keys=KEYS, screen=10)
    configs = distinct_configs(40, seed=2)
    for config in configs[:9]:
        assert price(config, bounds={"latency_ms": BOUND}) == latency(config)
    for config in configs[9:]:
        assert price(config) == latency(config)  # no bounds: nothing to screen against
    assert len(calls) == 40 and price.stats["screened"] == 0


def test_a_config_outside_what_the_fit_has_seen_is_priced_exactly():
    function, calls = counting()
    price = search.Price(function, keys=KEYS, screen=10)
    seen = [c for c in distinct_configs(200, seed=3) if c["op"] != "pool" and c["depth"] < 8]
    for config in seen[:60]:
        price(config, bounds={"latency_ms": BOUND})
    before = len(calls)
    for unseen in ({**seen[0], "op": "pool"}, {**seen[0], "depth": 8}):
        price(unseen, bounds={"latency_ms": 1e-3})  # far over, yet outside the fit
    assert len(calls) == before + 2


def test_costs_seen_only_together_are_not_told_apart_by_the_screen():
    calls = []

    def cost(config):  # "a" and "b" add their own costs, seen only as a pair below
        calls.append(config)
        return {"ms": config["n"] * (1 + 3 * (config["a"] == "big") + 5 * (config["b"] == "big"))}

    price = search.Price(cost, screen=10)
    for flip in (0, 1):
        for n in range(1, 21):
            size = "big" if (n + flip) % 2 else "small"
            price({"a": size, "b": size, "n": n}, bounds={"ms": 1000.0})
    assert price.stats["screened"] > 10  # the pairs it has seen it places
    before = len(calls)
    price({"a": "big", "b": "small", "n": 1}, bounds={"ms": 1000.0})
    assert len(calls) == before + 1  # a new mix: priced exactly


def test_a_bound_on_a_cost_the_price_never_returns_leaves_the_screen_to_the_others():
    function, calls = counting()
    price = search.Price(function, keys=KEYS, screen=10)
    bounds = {"latency_ms": BOUND, "accuracy_drop": 0.01}  # a cost only training measures
    for config in distinct_configs(10, seed=4):
        price(config, bounds=bounds)
    far = 0
    for config in distinct_configs(200, seed=5)[10:]:
        distance = abs(math.log(latency(config)["latency_ms"] / BOUND))
        before = len(calls)
        answer = price(config, bounds=bounds)
        assert set(answer) == {"latency_ms"}  # screened or priced: the price's costs only
        if distance > 2 * price.screen.models["latency_ms"].margin:
            far += 1
            assert len(calls) == before or price.known(config) is not None, config
    assert far > 50 and price.stats["screened"] >= far


@pytest.mark.parametrize("name", ["bo", "evolution"])
def test_a_screened_searcher_proposes_only_fitting_configs_with_fewer_exact_calls(name):
    def run(screen):
        function, calls = counting()
        price = search.Price(function, keys=KEYS, screen=screen)
        searcher = search.create(
            name, SPACE, metric="score", seed=0, constraints={"latency_ms": BOUND}, price=price
        )
        for _ in range(30):
            trial = searcher.ask()
            assert latency(trial.config)["latency_ms"] <= BOUND, trial.config
            exact = trial.costs == latency(trial.config)
            assert exact or trial.costs["latency_ms"] <= BOUND  # else screened: predicted costs
            for refusal in trial.refused:
                assert refusal["costs"]["latency_ms"] > BOUND
            searcher.tell(trial.id, metrics(trial.config))
        assert searcher.pricing["calls"] == len(calls)
        return searcher.pricing

    screened, exact = run(20), run(None)
    assert screened["screened"] > 0 and exact["screened"] == 0
    assert screened["calls"] < exact["calls"]


def test_a_screened_searcher_replays_and_resumes_identically():
    def make(seed):
        price = search.Price(latency, keys=KEYS, screen=10)
        return search.create(
            "bo", SPACE, metric="score", seed=seed, constraints={"latency_ms": BOUND}, price=price
        )

    check_replay(make, steps=16, metrics=metrics)
    searcher = make(0)
    for _ in range(15):
        trial = searcher.ask()
        searcher.tell(trial.id, metrics(trial.config))
    state = json.loads(json.dumps(searcher.state_dict(), default=search.plain))
    assert state["price"]["screened"] > 0 and len(state["price"]["prices"]) >= 10
    resumed = make(7)
    resumed.load_state_dict(state)
    assert resumed.price.prices() == searcher.price.prices()
    assert [resumed.ask().config for _ in range(3)] == [searcher.ask().config for _ in range(3)]
    counts = ("calls", "hits", "screened")
    assert [resumed.pricing[k] for k in counts] == [searcher.pricing[k] for k in counts]


def test_a_screened_searchers_ask_events_carry_each_exact_price_once():
    price = search.Price(latency, keys=KEYS, screen=10)
    searcher = search.create(
        "evolution", SPACE, metric="score", seed=0, constraints={"latency_ms": BOUND}, price=price
    )
    copied, prices = [], price.prices

    def counted(*args, **kwargs):  # the prices an event copies out of the cache
        out = prices(*args, **kwargs)
        copied.append(len(out))
        return out

    price.prices, events = counted, []
    for _ in range(40):
        trial, event = searcher.record("ask")
        events.append(json.loads(json.dumps(event)))
        searcher.tell(trial.id, metrics(trial.config))
    carried = [key for event in events for key, _ in event["price"]["prices"]]
    assert sorted(carried) == sorted(key for key, _ in prices())  # each one, in one event
    assert sum(copied) == len(carried) == len(prices()) > 10  # copied once, when it is new
    replayed = search.create(
        "evolution",
        SPACE,
        metric="score",
        seed=0,
        constraints={"latency_ms": BOUND},
        price=search.Price(latency, keys=KEYS, screen=10),
    )
    for event in events:
        replayed.apply(event)
        if event["config"] is not None:
            replayed.tell(event["id"], metrics(event["config"]))
    assert replayed.price.prices() == prices() and replayed.state_dict() == searcher.state_dict()


@pytest.mark.parametrize("screen", [5, 0, True, 20.0, "20"])
def test_a_bad_screen_names_the_argument_and_what_is_allowed(screen):
    with pytest.raises(ValueError, match=r"price: screen must be None .* an integer >= 10"):
        search.Price(latency, screen=screen)
