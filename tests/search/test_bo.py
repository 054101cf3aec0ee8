import math

import numpy as np
import pytest

import search
from search import gp
from search.testing import SearcherContract, mixed_space
from spaces import Choice, Float, Space


class TestBayes(SearcherContract):
    searcher_name = "bo"
    options = {"n_initial": 4, "candidates": 200}


class TestBayesUCB(SearcherContract):
    searcher_name = "bo"
    options = {"n_initial": 4, "candidates": 200, "acquisition": "ucb"}


def test_ei_matches_the_closed_form():
    # BoTorch's reference value: EI(mu=-0.5, sigma=1, best=0) = 0.19780
    assert gp.expected_improvement(-0.5, 1.0, 0.0) == pytest.approx(0.19780, abs=1e-5)
    assert gp.expected_improvement(0.0, 1.0, 0.0) == pytest.approx(1 / math.sqrt(2 * math.pi))
    assert gp.expected_improvement(2.0, 1e-9, 0.0) == pytest.approx(2.0)


def test_log_ei_is_exact_where_ei_is_representable_and_finite_beyond():
    z = np.array([-30.0, -8.0, -3.0, -1.0, -0.999, 0.0, 0.5, 4.0])
    log_ei = gp.log_expected_improvement(z, 1.0, 0.0)
    direct = np.log(gp.expected_improvement(z, 1.0, 0.0))
    assert np.allclose(log_ei[1:], direct[1:], rtol=1e-9)
    # deep in the tail EI ~ phi(z) / z^2: log EI ~ -z^2/2 - log(sqrt(2 pi)) - 2 log|z|
    tail = -450.0 - 0.5 * math.log(2 * math.pi) - 2 * math.log(30.0)
    assert log_ei[0] == pytest.approx(tail, abs=0.01)
    assert np.all(np.diff(log_ei) > 0)


def test_ucb_and_pi_closed_forms():
    assert gp.upper_confidence_bound(1.0, 0.5, 2.0) == pytest.approx(2.0)
    assert math.exp(gp.log_probability_of_improvement(0.0, 1.0, 0.0)) == pytest.approx(0.5)
    assert math.exp(gp.log_probability_below(1.0, 1.0, 2.0)) == pytest.approx(0.8413447, 1e-6)


def test_gp_posterior_equals_the_textbook_formula():
    rng = np.random.default_rng(0)
    cat = np.array([False, True, True])
    x = np.column_stack([rng.random(16), rng.integers(0, 3, (16, 2))]).astype(float)
    y = np.sin(5 * x[:, 0]) + x[:, 1] * x[:, 2]
    model = gp.GP(cat).fit(x, y)
    w, s_m, s_a, s_p, noise = np.exp(model.theta[:3]), *np.exp(model.theta[3:])

    def kernel(a, b):
        same = a[:, None, 1:] == b[None, :, 1:]
        r2 = w[0] * (a[:, None, 0] - b[None, :, 0]) ** 2 + (w[1:] * ~same).sum(axis=2)
        r = np.sqrt(r2)
        matern = (1 + math.sqrt(5) * r + 5 * r2 / 3) * np.exp(-math.sqrt(5) * r)
        first, both = same.mean(axis=2), same[:, :, 0] & same[:, :, 1]
        return s_m * matern + s_a * first + s_p * both

    z = (y - y.mean()) / y.std()
    k = kernel(x, x) + (noise + gp.NOISE_FLOOR) * np.eye(16)
    test = np.array([[0.3, 0.0, 1.0], [0.9, 2.0, 2.0], [0.5, -1.0, 0.0]])
    k_star = kernel(test, x)
    mean = y.mean() + y.std() * k_star @ np.linalg.solve(k, z)
    var = np.diag(kernel(test, test) - k_star @ np.linalg.solve(k, k_star.T)) * y.var()
    got_mean, got_std = model.predict(test)
    assert np.allclose(got_mean, mean) and np.allclose(got_std, np.sqrt(var))


def test_gp_hyperparameter_gradient_matches_finite_differences():
    from scipy.optimize import approx_fprime

    rng = np.random.default_rng(1)
    cat = np.array([False, True, True])
    x = np.column_stack([rng.random(20), rng.integers(-1, 3, (20, 2))]).astype(float)
    model = gp.GP(cat).fit(x, np.cos(4 * x[:, 0]) + x[:, 2])
    theta = rng.normal(0.0, 0.5, 7)
    numeric = approx_fprime(theta, lambda t: model._neg_log_posterior(t)[0], 1e-6)
    assert np.allclose(model._neg_log_posterior(theta)[1], numeric, atol=1e-4)


def test_seeks_feasibility_before_any_feasible_point():
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    searcher = search.create(
        "bo", space, metric="f", mode="max", seed=0, n_initial=6, constraints={"cost": 0.1}
    )
    for _ in range(6):  # all infeasible: cost = x + y is above 0.1 in this design
        trial = searcher.ask()
        c = trial.config
        searcher.tell(trial.id, {"f": c["x"] + c["y"], "cost": max(0.2, c["x"] + c["y"])})
    nxt = searcher.ask().config
    assert nxt["x"] + nxt["y"] < 0.6  # it heads for low cost, not for high f


@pytest.mark.parametrize("fantasy", ["worst", "mean", "believer"])
def test_pending_trials_spread_the_proposals_unless_believed(fantasy):
    space = Space({"x": Float(0.0, 1.0)})
    searcher = search.create(
        "bo", space, metric="f", mode="max", seed=0, n_initial=5, fantasy=fantasy
    )
    for _ in range(5):
        trial = searcher.ask()
        searcher.tell(trial.id, {"f": -((trial.config["x"] - 0.3) ** 2)})
    batch = sorted(searcher.ask().config["x"] for _ in range(4))
    if fantasy == "believer":  # it believes the GP: the batch stays at the predicted optimum
        assert max(abs(x - 0.3) for x in batch) < 0.05
    else:
        assert min(np.diff(batch)) > 0.01


def test_bo_beats_random_on_branin_at_30_evaluations():
    space = Space({"x1": Float(-5.0, 10.0), "x2": Float(0.0, 15.0)})

    def branin(c):
        b, cc, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
        x1, x2 = c["x1"], c["x2"]
        return (x2 - b * x1**2 + cc * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10

    def best(name, seed):
        options = {"candidates": 256} if name == "bo" else {}
        s = search.create(name, space, metric="y", mode="min", seed=seed, **options)
        for _ in range(30):
            t = s.ask()
            s.tell(t.id, {"y": branin(t.config)})
        return s.best()["metrics"]["y"] - 0.397887

    assert np.median([best("bo", s) for s in range(3)]) < 0.1
    assert np.median([best("bo", s) for s in range(3)]) < np.median(
        [best("random", s) for s in range(3)]
    )


def test_parego_covers_a_trade_off_curve():
    # f1 = x and f2 = 1 - sqrt(x) (+ a penalty on y): every y=0 point is Pareto-optimal
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})

    def hv(name, seed):
        s = (
            search.create(
                name, space, metric=["f1", "f2"], mode=["min", "min"], seed=seed, n_initial=5
            )
            if name == "bo"
            else search.create(name, space, metric=["f1", "f2"], mode=["min", "min"], seed=seed)
        )
        for _ in range(20):
            t = s.ask()
            x, y = t.config["x"], t.config["y"]
            s.tell(t.id, {"f1": x + y, "f2": 1 - math.sqrt(x) + y})
        return search.hypervolume(
            [o["metrics"] for o in s.front()], ["f1", "f2"], ["min", "min"], [2.0, 2.0]
        )

    assert np.median([hv("bo", s) for s in range(3)]) > np.median(
        [hv("random", s) for s in range(3)]
    )


def test_bo_options_are_checked():
    with pytest.raises(ValueError, match="acquisition must be one of"):
        search.create("bo", mixed_space(), metric="score", acquisition="ts")
    with pytest.raises(ValueError, match="fantasy must be one of .'worst', 'mean', 'believer'"):
        search.create("bo", mixed_space(), metric="score", fantasy="cl_min")
    with pytest.raises(ValueError, match="n_initial"):
        search.create("bo", mixed_space(), metric="score", n_initial=0)
    with pytest.raises(ValueError, match="feasibility_weight must be a positive number"):
        search.create("bo", mixed_space(), metric="score", feasibility_weight=0)


def test_feasibility_weight_is_the_power_on_the_probability_of_feasibility():
    # same seed, same data, so the same models: log acquisitions differ by (w - w') log P(feasible)
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    points = np.random.default_rng(0).random((8, 2))
    scores = {}
    for weight in (1.0, 0.5, 0.25):
        searcher = search.create(
            "bo", space, metric="f", seed=0, constraints={"cost": 0.8}, feasibility_weight=weight
        )
        for x, y in points:
            searcher.add({"x": x, "y": y}, {"f": x - y, "cost": x + y})
        grid = np.random.default_rng(1).random((50, 2))
        scores[weight] = searcher._scorer(*searcher._targets())(grid)
    gap_full, gap_half = scores[1.0] - scores[0.25], scores[1.0] - scores[0.5]
    assert np.all(gap_full <= 1e-9) and gap_full.min() < -1.0  # log P(feasible) <= 0
    np.testing.assert_allclose(gap_full, 1.5 * gap_half, rtol=1e-6, atol=1e-9)


def test_exhaustive_scoring_never_repeats_a_config():
    space = Space({"a": Choice(("p", "q", "r")), "b": Choice((1, 2, 3))})
    searcher = search.create("bo", space, metric="f", seed=0, n_initial=2)
    seen = []
    for _ in range(9):
        t = searcher.ask()
        seen.append((t.config["a"], t.config["b"]))
        searcher.tell(t.id, {"f": float(len(seen))})
    assert len(set(seen)) == 9


def test_a_state_saved_before_the_pair_term_still_loads_and_asks():
    space = Space({"x": Float(0.0, 1.0), "c": Choice(("a", "b", "c"))})
    searcher = search.create("bo", space, metric="f", mode="max", seed=0, n_initial=3)
    for _ in range(5):
        trial = searcher.ask()
        searcher.tell(trial.id, {"f": trial.config["x"] + (trial.config["c"] == "b")})
    state = searcher.state_dict()
    # the earlier kernel had one scale fewer: (w_x, w_c, s_m, s_a, noise)
    state["extra"]["thetas"] = {k: v[:4] + v[5:] for k, v in state["extra"]["thetas"].items()}
    restored = search.create("bo", space, metric="f", mode="max", seed=0, n_initial=3)
    restored.load_state_dict(state)
    assert space.validate(restored.ask().config) is None
    assert all(len(v) == 6 for v in restored._thetas.values())


def test_past_max_fit_the_gps_see_a_bounded_subset_near_the_incumbents(monkeypatch):
    sizes = []
    fit = gp.GP.fit

    def recording_fit(self, x, y, **kwargs):
        sizes.append(len(x))
        return fit(self, x, y, **kwargs)

    monkeypatch.setattr(gp.GP, "fit", recording_fit)
    space = Space({"x": Float(0.0, 1.0), "y": Float(0.0, 1.0)})
    searcher = search.create(
        "bo", space, metric="f", seed=0, max_fit=40, candidates=64, constraints={"c": 2.0}
    )
    for x, y in np.random.default_rng(0).random((150, 2)):
        f = -((x - 0.3) ** 2) - (y - 0.7) ** 2
        searcher.add({"x": float(x), "y": float(y)}, {"f": f, "c": x + y})
    config = searcher.ask().config
    assert sizes == [40, 40]  # the objective's GP and the constraint's
    assert math.hypot(config["x"] - 0.3, config["y"] - 0.7) < 0.15
    with pytest.raises(ValueError, match="max_fit must be an integer >= 4"):
        search.create("bo", space, metric="f", max_fit=2)


def _bounded_line(**options):
    """`bo` on x in [0, 1] with `latency_ms` bounded at 0.5, two initial points."""
    space = Space({"x": Float(0.0, 1.0)})
    bound = {"latency_ms": 0.5}
    return search.create(
        "bo", space, metric="acc", mode="max", seed=0, constraints=bound, n_initial=2, **options
    )


@pytest.mark.parametrize("observed", [(0.1, 0.2, 0.3, 0.9), (0.0, 0.25, 0.75, 1.0)])
def test_constrained_ucb_peaks_inside_the_bound_whatever_the_objectives_scale(observed):
    # the objective rises with x, the latency too, past its bound of 0.5 at x = 0.5: UCB in
    # the objective's units added to a unitless log feasibility went past the bound at scale
    # 100 or 1000 while it stayed inside at scale 1
    proposals = []
    for scale in (1, 100, 1000):
        searcher = _bounded_line(acquisition="ucb")
        for x in observed:
            searcher.add({"x": x}, {"acc": scale * x, "latency_ms": x})
        proposals.append(searcher.ask().config["x"])
    assert all(0.4 < x <= 0.5 for x in proposals), proposals
    assert max(proposals) - min(proposals) < 1e-6  # the same point: scale-free


def test_local_search_starts_from_feasible_incumbents_not_the_best_violators(monkeypatch):
    # the three highest objectives break the bound: the moves start around the best feasible
    from search import bo

    seen = []

    def spy(space, cat, rng, starts, count, scale):
        seen.append([s["x"] for s in starts])
        return real(space, cat, rng, starts, count, scale)

    real = bo.neighbours
    monkeypatch.setattr(bo, "neighbours", spy)
    searcher = _bounded_line()
    told = [0.05, 0.15, 0.3, 0.45, 0.7, 0.8, 0.9]
    for x in told:
        searcher.add({"x": x}, {"acc": x, "latency_ms": x})
    searcher.ask()
    incumbents = [x for x in seen[0] if x in told]
    assert sorted(incumbents) == [0.15, 0.3, 0.45]


def test_a_priced_first_ask_heads_for_the_corner_that_fits_from_its_refusals():
    # a cost that fits in 1 draw of ~3,000: random draws would spend the ask's 50 prices in
    # vain; the constraint model fit on the refusals points to the corner that fits
    space = Space({f"x{i}": Float(0.0, 1.0) for i in range(4)})
    for seed in range(3):
        price = search.Price(lambda config: {"cost": sum(config.values())}, calls=50)
        searcher = search.create(
            "bo", space, metric="y", mode="max", seed=seed, constraints={"cost": 0.3}, price=price
        )
        trial = searcher.ask()
        assert sum(trial.config.values()) <= 0.3
        assert len(trial.refused) < 25  # its 10 design points, then a few steps to the corner


def test_a_priced_design_trains_n_initial_fitting_points_spread_like_the_design():
    # 7 of 10 design points are over the bound: the design goes on drawing (new Latin
    # hypercubes) until 10 fitting ones are trained, one per tenth of [0, 0.3] a hypercube,
    # where a GP started from 3 would head for the objective's best, at the bound
    space = Space({"x": Float(0.0, 1.0), "z": Float(0.0, 1.0)})
    for seed in range(3):
        price = search.Price(lambda config: {"cost": config["x"]})
        searcher = search.create(
            "bo", space, metric="y", mode="max", seed=seed, constraints={"cost": 0.3}, price=price
        )
        told = []
        for _ in range(10):
            trial = searcher.ask()
            searcher.tell(trial.id, {"y": trial.config["x"], "cost": trial.config["x"]})
            told.append(trial.config["x"])
        assert max(told) <= 0.3
        for tenth in range(3):
            assert sum(tenth / 10 <= x < (tenth + 1) / 10 for x in told) >= 3, (seed, told)


def test_a_priced_design_never_proposes_a_config_told_before():
    # 3 of 16 configs fit: fresh hypercubes keep drawing them, and a design that took them
    # again would train the same 3 configs until its n_initial trials are told
    space = Space({"a": Choice([0, 1, 2, 3]), "b": Choice([0, 1, 2, 3])})
    for seed in range(3):
        price = search.Price(lambda config: {"cost": config["a"] + config["b"]})
        searcher = search.create(
            "bo", space, metric="y", mode="max", seed=seed, constraints={"cost": 1}, price=price
        )
        told = []
        for _ in range(3):
            trial = searcher.ask()
            cost = trial.config["a"] + trial.config["b"]
            searcher.tell(trial.id, {"y": float(trial.config["a"]), "cost": cost})
            told.append((trial.config["a"], trial.config["b"]))
        assert sorted(told) == [(0, 0), (0, 1), (1, 0)], (seed, told)
