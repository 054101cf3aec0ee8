import json
import math

import numpy as np
import pytest

import search
from search import gp
from search.forest import _predict
from search.history import fit_subset
from search.testing import SearcherContract, mixed_space, toy_metrics
from spaces import Float, Space


class TestForest(SearcherContract):
    searcher_name = "forest"
    options = {"n_initial": 4, "trees": 8, "candidates": 64}


class TestForestRandomForestRefitLess(SearcherContract):
    searcher_name = "forest"
    options = {"n_initial": 4, "trees": 8, "candidates": 64, "model": "rf", "refit": 0.5}


def quadratic_space() -> Space:
    return Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})


def fill(searcher, points, f):
    for x, y in points:
        searcher.add({"x": float(x), "y": float(y)}, f(x, y))


def test_forest_beats_random_on_the_toy_problem():
    def regret(name, seed):
        options = {"trees": 8, "candidates": 64} if name == "forest" else {}
        s = search.create(name, mixed_space(), metric="score", seed=seed, **options)
        for _ in range(30):
            t = s.ask()
            s.tell(t.id, toy_metrics(t.config))
        return 0.25 - s.best()["metrics"]["score"]  # optimum: x=.5, lr=1e-2, gelu, n=1, no t

    ours = np.median([regret("forest", s) for s in range(3)])
    assert ours < np.median([regret("random", s) for s in range(3)])


def test_refits_as_the_data_grow_by_the_share_and_replays_the_fit_after_a_reload():
    searcher = search.create(
        "forest", quadratic_space(), metric="f", seed=0, refit=0.25, trees=4, candidates=32
    )
    points = np.random.default_rng(0).random((100, 2))
    fill(searcher, points[:40], lambda x, y: {"f": -((x - 0.3) ** 2) - y})
    fits = []
    for i in range(20):
        trial = searcher.ask()
        fits.append(searcher._fit_n)
        searcher.tell(trial.id, {"f": float(i)})
    # fitted at 40 observations, again once 40 + 10 were seen, then at 50 + 12
    assert fits == [40] * 10 + [50] * 10
    state = json.loads(json.dumps(searcher.state_dict()))
    resumed = search.create(
        "forest", quadratic_space(), metric="f", seed=1, refit=0.25, trees=4, candidates=32
    )
    resumed.load_state_dict(state)
    grid = np.random.default_rng(1).random((30, 2))
    for s in (searcher, resumed):
        s.history.sync(s.observations)
        s._forests = s._forests or s._fit()
    assert np.array_equal(searcher._forests[0].predict(grid), resumed._forests[0].predict(grid))


def test_past_max_fit_the_forest_sees_a_trust_region_and_a_spread():
    searcher = search.create(
        "forest", quadratic_space(), metric="f", seed=0, max_fit=60, model="et", trees=4
    )
    points = np.random.default_rng(0).random((400, 2))
    f = -((points[:, 0] - 0.3) ** 2) - (points[:, 1] - 0.6) ** 2
    fill(searcher, points, lambda x, y: {"f": -((x - 0.3) ** 2) - (y - 0.6) ** 2})
    searcher.ask()
    assert all(t.tree_.n_node_samples[0] == 60 for t in searcher._forests[0].estimators_)
    rows = fit_subset(searcher.history, f, size=60, rng=np.random.default_rng(0))
    # by brute force: the 30 rows nearest the three best, and 30 of the others
    best = np.argsort(-f)[:3]
    near = np.min([((points - points[i]) ** 2).sum(axis=1) for i in best], axis=0)
    local = set(np.argsort(near)[:30].tolist())
    assert len(set(rows.tolist())) == 60 and np.all(np.diff(rows) > 0)
    assert local <= set(rows.tolist()) and set(best.tolist()) <= local
    assert np.array_equal(fit_subset(searcher.history, f[:60], size=60, rng=None), np.arange(60))


def test_seeks_feasibility_before_any_feasible_point():
    searcher = search.create(
        "forest", quadratic_space(), metric="f", seed=0, n_initial=8, constraints={"cost": 0.2}
    )
    points = np.random.default_rng(2).random((30, 2)) * [0.7, 1.0] + [0.3, 0.0]  # infeasible
    fill(searcher, points, lambda x, y: {"f": x + y, "cost": x})
    proposals = [searcher.ask().config for _ in range(3)]
    assert all(c["x"] < 0.45 for c in proposals)  # heading for low cost, not high f


def test_pending_trials_spread_the_proposals():
    space = Space({"x": Float(0.0, 1.0)})
    searcher = search.create("forest", space, metric="f", seed=0, n_initial=5)
    for x in np.linspace(0.0, 1.0, 12):
        searcher.add({"x": float(x)}, {"f": -((x - 0.3) ** 2)})
    batch = sorted(searcher.ask().config["x"] for _ in range(4))
    assert min(np.diff(batch)) > 0.02


def test_several_objectives_spread_over_the_trade_off():
    searcher = search.create(
        "forest",
        quadratic_space(),
        metric=["f1", "f2"],
        mode=["min", "min"],
        seed=0,
        refit=0,
        trees=8,
        candidates=64,
    )
    for _ in range(25):
        t = searcher.ask()
        x, y = t.config["x"], t.config["y"]
        searcher.tell(t.id, {"f1": x + y, "f2": 1 - math.sqrt(x) + y})
    front = searcher.front()
    assert len(front) >= 4
    assert max(o["metrics"]["f1"] for o in front) - min(o["metrics"]["f1"] for o in front) > 0.3


def test_forest_options_are_checked():
    with pytest.raises(ValueError, match="model must be one of .'et', 'rf'"):
        search.create("forest", mixed_space(), metric="score", model="gbrt")
    with pytest.raises(ValueError, match="trees must be an integer >= 1"):
        search.create("forest", mixed_space(), metric="score", trees=0)
    with pytest.raises(ValueError, match="refit must be a number in"):
        search.create("forest", mixed_space(), metric="score", refit=1.5)
    with pytest.raises(ValueError, match="feasibility_weight"):
        search.create("forest", mixed_space(), metric="score", feasibility_weight=-1)


@pytest.mark.parametrize("model", ["et", "rf"])
def test_the_fast_prediction_is_scikit_optimizes(model):
    searcher = search.create("forest", mixed_space(), metric="score", seed=0, model=model)
    TestForest().run(searcher, 16)
    forest = searcher._forests[0]
    feats = gp.features(searcher.space, [searcher.space.sample(searcher.rng) for _ in range(50)])
    mean, std = _predict(forest, feats)
    skopt_mean, skopt_std = forest.predict(feats, return_std=True)
    np.testing.assert_allclose(mean, skopt_mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, np.maximum(skopt_std, 1e-6 * forest.scale), rtol=1e-9)
    assert std.min() > 0
