"""SMAC-style Bayesian optimization on a random forest: scikit-optimize's extra trees (or
random forest) give a mean and a spread, log-EI scores random candidates and local moves of
the incumbents, a forest per constraint gives the probability of feasibility, ParEGO handles
several objectives. The forest is refitted only as the data grow, on a bounded subset, so an
ask costs about the same at 10,000 observations as at 1,000."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from search import gp
from search.base import Searcher
from search.candidates import best_untaken, neighbours, random_candidates
from search.fidelity import join_rungs, with_level
from search.history import History, distances, fit_subset, incumbents, parego_targets

MODELS = ("et", "rf")
PENDING_RADIUS = 0.1  # local penalization around a pending config, in unit-cube distance


class ForestSearcher(Searcher):
    """Bayesian optimization with a tree-ensemble surrogate (SMAC; Hutter et al. 2011).

    Options: `model` ("et", extra trees, or "rf", a random forest: scikit-optimize's
    regressors, whose spread is the law of total variance over the trees), `trees` (trees
    per forest), `n_initial` (random configs before the first forest), `candidates` (random
    candidates per ask, besides two rounds of local moves around the five incumbents),
    `max_fit` (the most observations a forest is fitted on: past it, the `max_fit // 2`
    nearest the three incumbents and a uniform draw of the others, as `bo` does; the
    constraint forests also learn from up to `max_fit // 2` configs rejected on their costs
    before training), `refit` (the forests are refitted once the observations, usable or
    rejected, grew by this share since the last fit, and at least every tell below
    `1 / refit` observations; 0 refits every tell),
    `feasibility_weight` (EI times P(feasible) to this power, as in `bo`). Pending configs
    are never proposed again and lower the acquisition near them (local penalization). Rungs
    (`search.fidelity.Rungs`, of the trials told before a fit) join the objective forest with
    their fidelity level as one more feature, as in `bo`; a stopped one counts for a refit."""

    name = "forest"

    def __init__(
        self,
        space,
        *,
        model: str = "et",
        trees: int = 32,
        n_initial: int = 10,
        candidates: int = 256,
        max_fit: int = 2000,
        refit: float = 0.01,
        feasibility_weight: float = 0.25,
        **common,
    ):
        super().__init__(space, **common)
        if model not in MODELS:
            raise ValueError(f"forest: model must be one of {list(MODELS)}, got {model!r}")
        for option, value, low in [
            ("trees", trees, 1),
            ("n_initial", n_initial, 2),
            ("candidates", candidates, 1),
            ("max_fit", max_fit, 4),
        ]:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"forest: {option} must be an integer >= {low}, got {value!r}")
        if not isinstance(refit, int | float) or not 0 <= refit < 1:
            raise ValueError(f"forest: refit must be a number in [0, 1), got {refit!r}")
        if not isinstance(feasibility_weight, int | float) or not feasibility_weight > 0:
            raise ValueError(
                f"forest: feasibility_weight must be a positive number, got {feasibility_weight!r}"
            )
        self.model, self.trees, self.n_initial = model, trees, n_initial
        self.n_candidates, self.max_fit, self.refit = candidates, max_fit, float(refit)
        self.feasibility_weight = float(feasibility_weight)
        self.history = History(space, self.objective)
        self._fit_n, self._fit_seed, self._fit_weights = 0, 0, None  # the last fit, in state
        self._fit_rejected, self._fit_told = 0, 0
        self._forests = None  # rebuilt from the three above when absent

    # -- proposal -------------------------------------------------------------------------------
    def _propose(self) -> dict:
        data = self.history.sync(self.observations)
        if data.n < self.n_initial:
            return self.space.sample(self.rng)
        fitted = self._fit_n + self._fit_rejected  # configs rejected on their costs count
        grown = data.n + data.n_rejected - fitted + self._new_rungs()
        if grown >= max(1, int(self.refit * fitted)):
            self._fit_n, self._fit_rejected = data.n, data.n_rejected
            self._fit_told = len(self.observations)
            self._fit_seed = int(self.rng.integers(2**31))
            m = len(self.objective.metrics)
            self._fit_weights = self.rng.dirichlet(np.ones(m)).tolist() if m > 1 else None
            self._forests = None
        if self._forests is None:
            self._forests = self._fit()
        score = self._scorer(*self._forests)
        configs, values = self._candidates(score)
        chosen = best_untaken(self.space, configs, values, self._taken, self._fits)
        return self.space.sample(self.rng) if chosen is None else configs[chosen]

    def _new_rungs(self) -> int:
        """Trials stopped at a rung since the last fit (none without `max_fidelity`)."""
        if self.max_fidelity is None:
            return 0
        return sum(o.get("fidelity") is not None for o in self.observations[self._fit_told :])

    def _candidates(self, score) -> tuple[list[dict], np.ndarray]:
        """Random candidates, then two rounds of moves around the best of them and the
        incumbents (SMAC's local search, shortened); every config scored, `(configs, values)`."""
        data = self.history
        configs, feats = random_candidates(self.space, self.rng, self.n_candidates)
        values = [score(feats)]
        weights = None if self._fit_weights is None else np.array(self._fit_weights)
        y = parego_targets(data.signed, weights)
        best = incumbents(y, data.feasible, data.violation, 5)
        starts = [configs[i] for i in np.argsort(-values[0], kind="stable")[:5]]
        starts += [data.configs[i] for i in best]
        for scale in (0.1, 0.03):
            near = neighbours(self.space, data.cat, self.rng, starts, 16, scale)
            values.append(score(gp.features(self.space, near)))
            configs += near
            starts = [near[i] for i in np.argsort(-values[-1], kind="stable")[:5]]
        return configs, np.concatenate(values)

    def _fit(self) -> tuple:
        """The objective forest, one forest per constraint, and the best feasible target seen,
        all on the first `_fit_n` usable observations (a bounded subset past `max_fit`)."""
        data = self.history
        weights = None if self._fit_weights is None else np.array(self._fit_weights)
        rung_x, level, signed = self.rung_rows(
            limit=self.max_fit // 2, pending=False, upto=self._fit_told
        )
        y = parego_targets(np.vstack([data.signed[: self._fit_n], signed]), weights)
        y, rung_y = y[: self._fit_n], y[self._fit_n :]
        rng = np.random.default_rng(self._fit_seed)
        rows = fit_subset(data, y, size=self.max_fit, rng=rng)
        x = data.x[rows]
        x_all, y_all, _, cat = join_rungs(x, y[rows], x[:0], data.cat, (rung_x, level, rung_y))
        objective = self._forest(x_all, y_all)
        objective.leveled = cat is not data.cat  # read at the full fidelity
        # configs rejected before training teach the constraint forests where the bounds lie
        rejected_x, rejected_costs = data.rejected(
            self.max_fit // 2,
            upto=self._fit_rejected,
            factors=self.price_factors(upto=self._fit_told),  # the fit's: it is rebuilt on load
        )
        constraints = [
            (
                self._forest(
                    np.vstack([x, rejected_x]),
                    np.concatenate([data.costs[rows, j], rejected_costs[:, j]]),
                ),
                bound,
            )
            for j, (_, bound) in enumerate(self.objective.constraints)
        ]
        feasible = data.feasible[rows]
        best = float(y[rows][feasible].max()) if feasible.any() else None
        return objective, constraints, best

    def _forest(self, x: np.ndarray, y: np.ndarray):
        from skopt.learning import ExtraTreesRegressor, RandomForestRegressor  # slow import

        cls = ExtraTreesRegressor if self.model == "et" else RandomForestRegressor
        forest = cls(n_estimators=self.trees, min_samples_leaf=3, random_state=self._fit_seed)
        forest.scale = float(np.std(y)) or 1.0  # for the spread's floor
        return forest.fit(x, y)

    def _scorer(self, objective, constraints, best):
        """Log acquisition of feature rows: log-EI plus `feasibility_weight` times the log
        probability of feasibility, minus the local penalty of the pending configs."""
        pending = gp.features(self.space, list(self.pending.values()))

        def score(feats: np.ndarray) -> np.ndarray:
            log_feasible = np.zeros(len(feats))
            for forest, bound in constraints:
                log_feasible += gp.log_probability_below(*_predict(forest, feats), bound)
            value = self.feasibility_weight * log_feasible + self._penalty(feats, pending)
            if best is None and constraints:
                return value
            mean, std = _predict(objective, with_level(feats, 1.0) if objective.leveled else feats)
            incumbent = best if best is not None else float(np.max(mean))
            return value + gp.log_expected_improvement(mean, std, incumbent)

        return score

    def _penalty(self, feats: np.ndarray, pending: np.ndarray) -> np.ndarray:
        """Sum over pending configs of `log(1 - exp(-d^2 / (2 r^2)))`: -inf on a pending one."""
        out = np.zeros(len(feats))
        for point in pending:
            d2 = distances(feats, point, self.history.cat)
            with np.errstate(divide="ignore"):
                out += np.log(-np.expm1(-d2 / (2 * PENDING_RADIUS**2)))
        return out

    # -- state ----------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {
            "fit_n": self._fit_n,
            "fit_rejected": self._fit_rejected,
            "fit_told": self._fit_told,
            "fit_seed": self._fit_seed,
            "fit_weights": self._fit_weights,
        }

    def _load_extra_state(self, extra: Mapping) -> None:
        self._fit_n, self._fit_seed = int(extra["fit_n"]), int(extra["fit_seed"])
        self._fit_rejected = int(extra.get("fit_rejected", 0))  # older states had none
        self._fit_told = int(extra.get("fit_told", 0))
        weights = extra.get("fit_weights")
        self._fit_weights = None if weights is None else [float(w) for w in weights]
        self._forests = None


def _predict(forest, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What scikit-optimize's `forest.predict(feats, return_std=True)` computes, read off the
    fitted trees without its per-call overhead: the mean of the trees' leaf means, and the
    spread `sqrt(mean_t (var_t + mu_t^2) - mean^2)` (the law of total variance over the trees,
    a leaf's variance being its impurity), floored at a millionth of the targets' spread."""
    x = np.ascontiguousarray(feats, dtype=np.float32)
    total, square = np.zeros(len(x)), np.zeros(len(x))
    for estimator in forest.estimators_:
        tree = estimator.tree_
        leaf = tree.apply(x)
        mu = tree.value[leaf, 0, 0]
        total += mu
        square += tree.impurity[leaf] + mu**2
    mean = total / len(forest.estimators_)
    var = np.maximum(square / len(forest.estimators_) - mean**2, 0.0)
    return mean, np.maximum(np.sqrt(var), 1e-6 * forest.scale)
