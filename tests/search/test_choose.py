"""Choosing with a price (issue 33): exact where priced, learning from each config an ask prices,
and never out of configs to propose while one priced to fit is left."""

import numpy as np

import search
import spaces
from search.basic import enumerate_configs
from search.choose import priced_pick


def _pick(gain, known, *, fits, learn=lambda i, rows: None, extra=8, feasible=None):
    gain = np.array(gain, dtype=float)
    log_feasible = np.zeros(len(gain)) if feasible is None else np.array(feasible, dtype=float)
    return priced_pick(gain, log_feasible, np.array(known), fits=fits, learn=learn, extra=extra)


def test_past_the_budget_the_best_config_priced_to_fit_is_chosen_at_no_cost():
    asked = []

    def spent(i):
        asked.append(i)
        return None

    assert _pick([5, 4, 3, 1, 2], [0, 0, 1, -1, 1], fits=spent) == 2
    assert asked == [0]  # the first call found the budget spent: no other was priced


def test_a_config_over_a_bound_or_taken_is_never_priced_and_a_known_fit_is_free():
    priced = []

    def fits(i):
        priced.append(i)
        return i == 1

    assert _pick([9, 3, 8, 7], [-1, 0, 1, 0], fits=fits) == 2  # 2 beats the unpriced 3 and 1
    assert priced == []  # 0 is over the bound; 2 is known to fit: nothing to price


def test_what_an_ask_learns_from_a_refusal_reorders_the_rest_of_it():
    priced = []

    def fits(i):
        priced.append(i)
        return i != 0

    def learn(i, rows):  # the refusal of 0 says 1 (its neighbour) will not fit either
        return np.where(rows == 1, -30.0, 0.0)

    assert _pick([3, 2.9, 2.8, 1], [0, 0, 0, 0], fits=fits, learn=learn, extra=0) == 2
    assert priced == [0, 2]


def test_priced_bo_on_a_cell_space_where_one_in_ten_fits_never_runs_out_of_configs():
    """The NB201 failure: an ask priced 50 configs of the best-looking region (all over the
    bound) before it learned, then had nothing priced to fit to propose, and the run ended."""
    space = spaces.nb201()
    gain = dict(zip(spaces.NB201_OPS, [0.0, 0.4, 1.0, 2.0, 0.3]))
    cost = dict(zip(spaces.NB201_OPS, [0.0, 0.1, 1.0, 3.0, 0.5]))
    every = [list(c.values()) for c in enumerate_configs(space, points=15625)]
    bound = float(np.quantile([sum(cost[o] for o in ops) for ops in every], 0.1))

    def latency(config):
        return {"latency_ms": sum(cost[o] for o in config.values())}

    searcher = search.create(
        "bo",
        space,
        metric="acc",
        seed=0,
        constraints={"latency_ms": bound},
        price=search.Price(latency, quantile=None),
    )
    for _ in range(60):
        trial = searcher.ask()
        acc = sum(gain[o] for o in trial.config.values()) - 0.2 * len(set(trial.config.values()))
        searcher.tell(trial.id, {"acc": acc, **latency(trial.config)})
        assert latency(trial.config)["latency_ms"] <= bound
    assert searcher.trained() == 60
