"""A price calibrated on what trials measure (issue 33): a conformal 90% quantile of measured /
priced scales every price once a trial was priced and then measured."""

import json

import numpy as np
import pytest

import search
from search.calibrate import OUTLIER_AFTER, factors
from search.testing import mixed_space, toy_metrics, toy_price
from spaces import Float, Int, Space

BOUND = 4.0  # n in 1..4 fits on price


def _make(*, quantile=0.9, name="random", seed=0):
    price = search.Price(toy_price, keys=["n"], quantile=quantile)
    space = mixed_space()
    return search.create(
        name, space, metric="score", seed=seed, constraints={"cost": BOUND}, price=price
    )


def _slower(config, ratio):
    """What a trial measures: the price times `ratio` (a loaded machine)."""
    return {**toy_metrics(config), "cost": toy_price(config)["cost"] * ratio}


def _run(searcher, asks, ratio):
    trials = []
    for _ in range(asks):
        trial = searcher.ask()
        trials.append(trial)
        searcher.tell(trial.id, _slower(trial.config, ratio))
    return trials


def test_the_quantile_of_measured_over_priced_scales_prices_from_the_first_trial_measured():
    searcher = _make()
    first = _run(searcher, OUTLIER_AFTER, ratio=1.2)
    assert first[0].costs == toy_price(first[0].config)  # nothing measured yet: the raw price
    assert all(t.costs["cost"] == pytest.approx(1.2 * t.config["n"]) for t in first[1:])
    told = [o for o in searcher.observations if not o.get("priced")]
    assert all(o["price"] == toy_price(o["config"]) for o in told)  # the raw price is kept
    assert searcher.price_factors() == {"cost": pytest.approx(1.2)}
    later = _run(searcher, 30, ratio=1.2)
    # calibrated: n = 4 prices at 4.8 > 4, refused; n <= 3 prices at <= 3.6 and is proposed
    assert {t.config["n"] for t in later} <= {1, 2, 3}
    assert all(t.costs["cost"] == pytest.approx(1.2 * t.config["n"]) for t in later)
    refused = [o for o in searcher.observations if o.get("priced") and o["config"]["n"] == 4]
    assert refused and refused[0]["costs"]["cost"] == pytest.approx(4.8)


def test_the_factor_is_the_quantile_of_the_ratios_of_measured_trials_only():
    """Measured at the end, before training (over a bound), or before training by a trial
    stopped at a rung (told with those costs); never a failure, a refusal or an unpriced."""
    observations = [
        {"status": "completed", "price": {"cost": 1.0}, "metrics": {"cost": r}}
        for r in (1.0, 1.1, 1.2, 1.3, 1.4, 2.0)
    ]
    observations += [
        {"status": "stopped", "price": {"cost": 1.0}, "metrics": {"cost": 1.5}},  # at a rung
        {"status": "failed", "price": {"cost": 1.0}, "metrics": None},
        {"status": "completed", "metrics": {"cost": 9.0}},  # not priced (added, warm)
        {"status": "infeasible", "price": {"cost": 1.0}, "costs": {"cost": 3.0}, "metrics": None},
        {"status": "infeasible", "priced": True, "costs": {"cost": 9.0}, "metrics": None},
        {"status": "infeasible", "priced": True, "price": {"cost": 1.0}, "costs": {"cost": 9.0}},
    ]
    assert factors(observations, 0.5) == {"cost": pytest.approx(1.4)}  # 5th of 8
    assert factors(observations, 1.0) == {"cost": pytest.approx(3.0)}  # measured before training
    assert factors(observations[:4], 0.9) == {"cost": pytest.approx(1.3)}  # few: the largest
    assert factors(observations[4:5], 0.9) == {"cost": pytest.approx(1.4)}
    assert factors([], 0.9) == {}


def test_faster_trials_relax_the_price_and_none_turns_calibration_off():
    searcher = _make()
    _run(searcher, 5, ratio=0.75)
    later = _run(searcher, 40, ratio=0.75)
    assert 5 in {t.config["n"] for t in later}  # 5 prices at 3.75: fits
    plain = _make(quantile=None)
    later = _run(plain, 40, ratio=0.75)
    assert {t.config["n"] for t in later} <= {1, 2, 3, 4} and plain.price_factors() == {}


@pytest.mark.parametrize("quantile", [0, 1.5, "0.9", True])
def test_a_bad_quantile_is_refused(quantile):
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\] or None"):
        search.Price(toy_price, quantile=quantile)


def test_a_pending_trials_raw_price_survives_state_and_journal_replay():
    searcher = _make()
    _run(searcher, 5, ratio=1.2)
    before = json.loads(json.dumps(searcher.state_dict()))
    trial, event = searcher.record("ask")
    event = json.loads(json.dumps(event))
    assert event["costs"] == toy_price(trial.config)  # the raw price, not the calibrated one
    assert trial.costs["cost"] == pytest.approx(1.2 * trial.config["n"])
    loaded, replayed = _make(), _make()
    loaded.load_state_dict(json.loads(json.dumps(searcher.state_dict())))
    replayed.load_state_dict(before)
    replayed.apply(event)  # the journal's line after the snapshot
    for copy in (loaded, replayed):
        record = copy.tell(trial.id, _slower(trial.config, 1.2))
        assert record["price"] == toy_price(trial.config)


def test_revise_and_discard_forget_the_raw_price():
    searcher = _make()
    revised, discarded = searcher.ask(), searcher.ask()
    searcher.revise(revised.id, {**revised.config, "x": 0.1})
    searcher.discard(discarded.id)
    assert searcher.asked_costs == {}
    assert "price" not in searcher.tell(revised.id, toy_metrics(revised.config))


def test_one_outlier_among_five_or_more_trials_does_not_move_the_factor():
    ratios = [1.0, 1.0, 1.0, 1.0, 5.0]  # one trial timed on a loaded machine
    observations = [
        {"status": "completed", "price": {"cost": 2.0}, "metrics": {"cost": 2.0 * r}}
        for r in ratios
    ]
    assert factors(observations, 0.9) == {"cost": 1.0}
    assert factors(observations + observations, 0.9) == {"cost": 5.0}  # two in ten: it is real
    assert factors(observations[1:], 0.9) == {"cost": 5.0}  # one in four: the largest of few


def test_nothing_fitting_once_calibrated_says_the_prices_were_scaled():
    searcher = _make()
    _run(searcher, 1, ratio=9.0)  # a trial measures 9 x its price
    with pytest.raises(search.NothingFits, match=r"scaled by measured / priced \{'cost': 9\.0\}"):
        searcher.ask()


def test_a_screened_price_is_calibrated_and_given_to_the_trial():
    price = search.Price(toy_price, keys=["n"], screen=10)
    space = Space({"n": Int(1, 40), "x": Float(0.0, 1.0)})
    searcher = search.create(
        "random", space, metric="score", seed=0, constraints={"cost": 20.0}, price=price
    )
    for _ in range(60):
        trial = searcher.ask()
        n = trial.config["n"]
        assert trial.costs["cost"] <= 20.0  # priced or screened: the costs a trial is given
        if searcher.price_factors():
            assert trial.costs["cost"] == pytest.approx(0.7 * n, rel=0.2)
        searcher.tell(trial.id, {"score": -n, "cost": 0.7 * n})  # trials measure 0.7 x price
    assert searcher.price_factors() == {"cost": pytest.approx(0.7)}
    assert searcher.pricing["screened"] > 0
    assert max(o["config"]["n"] for o in searcher.usable()) > 20  # raw over 20, calibrated under


def test_the_factor_covers_the_next_trial_at_the_quantile_as_conformal_prediction_does():
    # closed form: the k-th smallest of n exchangeable ratios bounds the next one with
    # probability k / (n + 1); at 20 trials and 0.9 the factor is the 19th (19 / 21 >= 0.9)
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(4000):
        ratios = 1.0 + rng.exponential(0.1, size=21)  # 20 trials measured, then the next
        observations = [
            {"status": "completed", "price": {"cost": 1.0}, "metrics": {"cost": r}}
            for r in ratios[:20]
        ]
        covered.append(ratios[20] <= factors(observations, 0.9)["cost"])
    assert np.mean(covered) == pytest.approx(19 / 21, abs=0.01)


def test_refusals_are_read_at_the_calibration_of_now_and_old_states_still_load():
    searcher = _make()
    _run(searcher, 20, ratio=1.0)  # calibrated by 1: n = 5..8 refused, at their raw price
    early = {o["id"] for o in searcher.observations if o.get("priced")}
    _run(searcher, 2, ratio=9.0)  # trials now measure 9 x their price: the factor moves to 9
    assert early and searcher.price_factors() == {"cost": 9.0}
    with pytest.raises(search.NothingFits) as caught:  # even n = 1 prices at 9 > 4
        searcher.ask()
    assert "costs {'cost': 9.0}" in str(caught.value)  # the cheapest now, not an n = 5 of then
    for record in searcher.refusals():
        assert record["price"] == toy_price(record["config"])  # the raw price, kept
        assert record["costs"] == {"cost": 9.0 * record["config"]["n"]}
        assert record["violation"] == pytest.approx((9.0 * record["config"]["n"] - BOUND) / BOUND)
    stored = [o for o in searcher.observations if o["id"] in early]
    assert all(o["costs"] == toy_price(o["config"]) for o in stored)  # as priced then
    state = json.loads(json.dumps(searcher.state_dict()))
    for record in state["observations"]:
        record.pop("price", None)  # a state from before refusals kept their raw price
    old = _make()
    old.load_state_dict(state)
    assert [o["costs"] for o in old.refusals()] == [o["costs"] for o in stored] + [
        o["costs"] for o in searcher.observations if o.get("priced") and o["id"] not in early
    ]
    assert old.price_factors() == {}  # the trials' raw prices went with it: uncalibrated


def test_bo_fits_its_constraint_model_to_refusals_at_the_calibration_of_now():
    searcher = _make(name="bo")
    _run(searcher, 16, ratio=1.0)  # n = 5..8 refused at factor 1
    _run(searcher, 3, ratio=2.0)  # then the factor moves to 2
    assert searcher.price_factors() == {"cost": 2.0}
    refused = [o for o in searcher.observations if o.get("priced")]
    fitted, fit = {}, searcher._fit

    def spy(key, x, y, pending, **options):  # what each model is fit on
        fitted[key] = np.asarray(y)
        return fit(key, x, y, pending, **options)

    searcher._fit = spy
    searcher.ask()
    expected = [2.0 * toy_price(o["config"])["cost"] for o in refused][-(searcher.max_fit // 2) :]
    assert refused and fitted["constraint:cost"][-len(expected) :].tolist() == expected


def test_an_added_trials_raw_price_calibrates_and_its_event_replays():
    searcher = _make()
    _run(searcher, 8, ratio=1.5)
    rebuilt, replayed, events = _make(seed=1), _make(seed=2), []
    for o in searcher.observations:  # as a study rebuilds its searcher from its rows
        if o.get("priced"):
            rebuilt.add_refused(o["config"], o["costs"], price=o["price"], trial_id=o["id"])
            continue
        _, event = rebuilt.record(
            "add", o["config"], o["metrics"], trial_id=o["id"], price=o["price"]
        )
        events.append(json.loads(json.dumps(event)))
    for event in events:
        replayed.apply(event)
    assert searcher.price_factors() == {"cost": pytest.approx(1.5)}
    assert rebuilt.price_factors() == replayed.price_factors() == searcher.price_factors()
    assert rebuilt.state_dict()["observations"] == searcher.state_dict()["observations"]


def _carried(ratios, *, name="random"):
    """A searcher whose price starts from `ratios`, pairs an earlier study measured."""
    price = search.Price(toy_price, keys=["n"], ratios={"cost": ratios})
    space = mixed_space()
    return search.create(
        name, space, metric="score", seed=0, constraints={"cost": BOUND}, price=price
    )


@pytest.mark.parametrize("name", ["random", "bo", "evolution"])
def test_pairs_carried_from_an_earlier_study_calibrate_the_first_ask(name):
    searcher = _carried([1.0] * 19 + [1.2], name=name)  # 20 pairs: the 19th of them, 1.0
    assert searcher.price_factors() == {"cost": 1.0}
    searcher = _carried([1.0] * 18 + [1.2] * 2, name=name)
    assert searcher.price_factors() == {"cost": pytest.approx(1.2)}  # before any trial
    first = _run(searcher, 12, ratio=1.2)
    # n = 4 prices at 4.8 over the bound from the first ask on; a fresh searcher proposes it
    assert all(t.config["n"] <= 3 for t in first) and first[0].costs["cost"] == pytest.approx(
        1.2 * first[0].config["n"]
    )
    fresh = _make(name=name)
    assert fresh.price_factors() == {} and 4 in {t.config["n"] for t in _run(fresh, 12, 1.0)}
    _run(searcher, 20, ratio=2.0)  # this study's own pairs join the carried ones
    assert searcher.price_factors() == {"cost": pytest.approx(2.0)}
    again = _carried([1.0] * 18 + [1.2] * 2, name=name)
    assert again.price_factors() == {"cost": pytest.approx(1.2)}  # read before the load
    again.load_state_dict(json.loads(json.dumps(searcher.state_dict())))
    assert again.price_factors() == searcher.price_factors()  # the price carries them on load
    assert again.price_factors(upto=0) == {"cost": pytest.approx(1.2)}


@pytest.mark.parametrize(
    "ratios, message",
    [
        ([1.0], r"ratios must map cost names to lists of numbers"),
        ({"cost": 1.2}, r"ratios\['cost'\] must be a list of numbers"),
        ({"cost": [1.2, -1.0]}, r"ratios\['cost'\] must be positive numbers"),
        ({"cost": [float("nan")]}, r"ratios\['cost'\] must be positive numbers"),
    ],
)
def test_bad_carried_ratios_are_refused(ratios, message):
    with pytest.raises(ValueError, match=message):
        search.Price(toy_price, ratios=ratios)
