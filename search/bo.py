"""Bayesian optimization: a mixed-space GP per objective and per constraint, constrained
log-EI (or UCB, PI), pending trials as fantasies (by default a pessimistic constant liar for
the objective, a kriging believer for constraints), ParEGO for several objectives."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from search import gp
from search.base import Searcher
from search.basic import enumerate_configs
from search.candidates import best_untaken, design_point, neighbours, random_candidates, refine
from search.choose import Feasibility, priced_pick
from search.fidelity import AtFull, join_rungs
from search.history import History, fit_subset, incumbents, parego_targets
from spaces import Choice, Int

ACQUISITIONS = ("ei", "ucb", "pi")
FANTASIES = ("worst", "mean", "believer")
DESIGN_DRAWS = 10  # a priced design draws up to this many times `n_initial` points


class BayesSearcher(Searcher):
    """Bayesian optimization: a Gaussian process per objective and constraint.

    Options: `acquisition` (the acquisition function: "ei", "ucb" or "pi"), `n_initial`
    (Latin-hypercube design size), `kappa` (UCB's width), `candidates` (random candidates per
    ask on large spaces), `exhaustive_limit` (spaces with at most this many configs are scored
    whole), `fantasy` (the objective's value at a pending trial: "worst" value seen, a constant
    liar; "mean" of the values seen; "believer", the GP's own prediction; constraints always
    take their prediction), `feasibility_weight` (the acquisition times P(feasible) to this
    power: 1 is classic constrained EI; the default 0.25 tempers an overconfident constraint
    model, see benchmarks/README.md), `max_fit` (the most observations a GP is fitted on: past
    it, the `max_fit // 2` nearest the three incumbents and a uniform draw of the others, so an
    ask costs the same at 10,000 observations as at `max_fit`), `price_extra` (with a price:
    after the first candidate that fits, at most this many more priced, see `_priced_choice`).
    Rungs (`search.fidelity.Rungs`, the latest `max_fit // 2`) join the objective's GP with
    their fidelity over `max_fidelity` as one more input (full results at 1, read at 1), as
    BOCA and FABOLAS do: one GP, not BOHB's per-rung models that need many results a rung."""

    name = "bo"

    def __init__(
        self,
        space,
        *,
        acquisition: str = "ei",
        n_initial: int = 10,
        kappa: float = 2.0,
        candidates: int = 512,
        exhaustive_limit: int = 20000,
        fantasy: str = "worst",
        feasibility_weight: float = 0.25,
        max_fit: int = 256,
        price_extra: int = 8,
        **common,
    ):
        super().__init__(space, **common)
        for option, value, allowed in [
            ("acquisition", acquisition, ACQUISITIONS),
            ("fantasy", fantasy, FANTASIES),
        ]:
            if value not in allowed:
                raise ValueError(f"bo: {option} must be one of {list(allowed)}, got {value!r}")
        for option, value, low in [("n_initial", n_initial, 1), ("max_fit", max_fit, 4)]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"bo: {option} must be an integer >= {low}, got {value!r}")
        if not isinstance(price_extra, int) or price_extra < 0:
            raise ValueError(f"bo: price_extra must be an integer >= 0, got {price_extra!r}")
        if not isinstance(feasibility_weight, int | float) or not feasibility_weight > 0:
            raise ValueError(
                f"bo: feasibility_weight must be a positive number, got {feasibility_weight!r}"
            )
        self.acquisition, self.n_initial, self.kappa = acquisition, n_initial, float(kappa)
        self.fantasy, self.feasibility_weight = fantasy, float(feasibility_weight)
        self.n_candidates, self.exhaustive_limit = int(candidates), int(exhaustive_limit)
        self.max_fit, self.price_extra = max_fit, price_extra
        self.cat = gp.categorical_mask(space)
        self.history = History(space, self.objective)
        self._design_seed, self._design_used = int(self.rng.integers(2**31)), 0
        self._design_at_ask = 0
        self._thetas: dict[str, list[float]] = {}
        self._all = self._enumerate()

    # -- candidates -----------------------------------------------------------------------------
    def _enumerate(self) -> tuple[list[dict], np.ndarray, dict] | None:
        """Every config of a small discrete space, its features and its row by key, else None."""
        count = 1
        for param in self.space.params.values():
            if isinstance(param, Choice):
                count *= len(param.options)
            elif isinstance(param, Int):
                count *= param.high - param.low + 1
            else:
                return None
        if count > self.exhaustive_limit:
            return None
        configs = list(enumerate_configs(self.space, points=count))
        rows = {self.space.canonical(c): i for i, c in enumerate(configs)}
        return configs, gp.features(self.space, configs), rows

    def _proposal(self):
        self._design_at_ask = self._design_used  # `_in_design` caps the points of one ask
        return super()._proposal()

    def _in_design(self) -> bool:
        """Whether to propose a design point: unpriced, the first `n_initial`; priced, until
        `n_initial` trials are told or pending (refused points replaced, so the GP starts from
        trials that fit), at most `n_initial` points an ask, `DESIGN_DRAWS` times it in all."""
        if not self._priced_ask or self.history.n >= self.n_initial:  # the latter: skip trained()
            return self.history.n < self.n_initial and self._design_used < self.n_initial
        used, size = self._design_used, self.n_initial
        if used - self._design_at_ask >= size or used >= DESIGN_DRAWS * size:
            return False  # where almost nothing fits, the constraint GPs find what does
        return self.trained() + len(self.pending) < size

    def _priced_choice(self, configs: list[dict], feats: np.ndarray, score, taken) -> dict:
        """The fitting config of best acquisition among `configs` (`taken`: indices never to
        propose), see `search.choose.priced_pick`; a random config when none fits within the
        ask's budget."""
        gain, log_feasible = score.parts(feats)
        known = self._priced_fits(configs)
        known[list(taken)] = -1

        def learn(i: int, rows: np.ndarray) -> np.ndarray | None:
            raw = self.price.known(configs[i])  # None: screened, not priced exactly
            if raw is None:
                return None
            score.feasibility.learn(feats[i], self._calibrated(raw))
            return score.feasibility(feats[rows])

        def fits(i: int) -> bool | None:
            return self._fits(configs[i])

        extra = self.price_extra
        pick = priced_pick(gain, log_feasible, known, fits=fits, learn=learn, extra=extra)
        return self.space.sample(self.rng) if pick is None else dict(configs[pick])

    # -- proposal -------------------------------------------------------------------------------
    def _propose(self) -> dict:
        data = self.history.sync(self.observations)
        while self._in_design():
            point = design_point(self.space, self._design_seed, self.n_initial, self._design_used)
            self._design_used += 1
            key = self.space.canonical(point)
            if not self._priced_ask or not self._taken(key):
                return point  # a priced design skips what was told or is pending
        if data.n >= 2:
            y, rungs = self._targets()
            score = self._scorer(y, rungs)
        elif self.objective.constraints and data.n + data.n_rejected >= 2:
            y, score = np.zeros(data.n), self._feasibility_scorer()
        else:
            return self.space.sample(self.rng)
        if self._all is not None:
            configs, feats, rows = self._all
            taken = self._seen | {k for k, n in self._pending_keys.items() if n}
            if self._priced_ask:
                return self._priced_choice(configs, feats, score, [rows[k] for k in taken])
            values = score(feats)
            values[[rows[k] for k in taken]] = -np.inf
            if np.isfinite(values).any():
                return dict(configs[int(np.argmax(values))])
            return self.space.sample(self.rng)
        return self._optimize(score, y)

    def _optimize(self, score, y: np.ndarray) -> dict:
        configs, feats = random_candidates(self.space, self.rng, self.n_candidates)
        values = score(feats)
        pool = list(configs)  # every config scored, for a priced choice
        data = self.history
        best_rows = incumbents(y, data.feasible, data.violation, 3)  # feasible ones first
        starts_best = [data.configs[i] for i in best_rows]
        starts = [configs[i] for i in np.argsort(values)[-5:]] + starts_best
        best_config, best_value = configs[int(np.argmax(values))], float(np.max(values))
        for scale in (0.1, 0.03):
            near = neighbours(self.space, self.cat, self.rng, starts, 32, scale)
            pool += near
            near_values = score(gp.features(self.space, near))
            order = np.argsort(near_values)[::-1]
            starts = [near[i] for i in order[:5]]
            if near_values[order[0]] > best_value:
                best_config, best_value = near[order[0]], float(near_values[order[0]])
        for start in [best_config] + starts[:2] + starts_best:
            refined, value = refine(self.space, self.cat, score, start)
            pool.append(refined)
            if value > best_value:
                best_config, best_value = refined, value
        taken = self._seen | {k for k, n in self._pending_keys.items() if n}
        if self._priced_ask:
            out = [i for i, config in enumerate(pool) if self.space.canonical(config) in taken]
            return self._priced_choice(pool, gp.features(self.space, pool), score, out)
        if self.space.canonical(best_config) not in taken:
            return best_config
        # the acquisition peaks on a config already run: the best of the others instead
        index = best_untaken(self.space, configs, values, taken.__contains__)
        return configs[index] if index is not None else self.space.sample(self.rng)

    def _targets(self) -> tuple[np.ndarray, tuple]:
        """What the objective GP models (maximized), the objective or ParEGO's scalarization
        with weights drawn now, of the usable results and of the rungs: `(y, (x, level, y))`."""
        weights = None
        if len(self.objective.metrics) > 1:
            weights = self.rng.dirichlet(np.ones(len(self.objective.metrics)))
        rung_x, level, rung_signed = self.rung_rows(limit=self.max_fit // 2)
        signed = np.vstack([self.history.sync(self.observations).signed, rung_signed])
        y = parego_targets(signed, weights)
        return y[: self.history.n], (rung_x, level, y[self.history.n :])

    def _scorer(self, y_all: np.ndarray, rungs: tuple):
        """A function of candidate features returning the log acquisition (higher is better),
        from GPs on at most `max_fit` observations (`y_all`: the targets of all of them)."""
        data = self.history.sync(self.observations)
        rows = fit_subset(data, y_all, size=self.max_fit, rng=self.rng)
        x, y, feasible = data.x[rows], y_all[rows], data.feasible
        pending = gp.features(self.space, list(self.pending.values()))
        lie = {"worst": y_all.min(), "mean": y_all.mean(), "believer": None}[self.fantasy]
        model = self._fit("objective", x, y, pending, lie=lie, rungs=rungs)
        feasibility = Feasibility(self._constraint_models(rows, pending))
        best = float(y_all[feasible].max()) if feasible.any() else None
        center, spread = float(y_all.mean()), float(y_all.std()) or 1.0

        def parts(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """The acquisition alone and the log P(feasible), each `(n,)`."""
            log_feasible = feasibility(feats)
            if best is None and feasibility.constraints:
                return np.zeros(len(feats)), log_feasible
            mean, std = gp.predict_in_chunks(model, feats)
            if self.acquisition == "ucb":
                # UCB is in the objective's units, log P(feasible) in none: standardize it, so
                # the trade-off is the same whatever the objective's scale
                ucb = gp.upper_confidence_bound(mean - center, std, self.kappa)
                return ucb / spread, log_feasible
            incumbent = best if best is not None else float(y_all.max())
            if self.acquisition == "pi":
                return gp.log_probability_of_improvement(mean, std, incumbent), log_feasible
            return gp.log_expected_improvement(mean, std, incumbent), log_feasible

        def score(feats: np.ndarray) -> np.ndarray:
            gain, log_feasible = parts(feats)
            return gain + self.feasibility_weight * log_feasible

        score.parts, score.feasibility = parts, feasibility
        return score

    def _constraint_models(self, rows: np.ndarray, pending: np.ndarray) -> list[tuple]:
        """`(name, GP, bound)` per constraint, fit on the costs of the usable results `rows` and
        of configs rejected on their costs alone (refused on price, say; `History.rejected`)."""
        data = self.history
        rejected_x, rejected_costs = data.rejected(self.max_fit // 2, factors=self.price_factors())
        x = np.vstack([data.x[rows], rejected_x])
        models = []
        for j, (name, bound) in enumerate(self.objective.constraints):
            values = np.concatenate([data.costs[rows, j], rejected_costs[:, j]])
            models.append((name, self._fit(f"constraint:{name}", x, values, pending), bound))
        return models

    def _feasibility_scorer(self):
        """Before two usable results but after configs over a bound: log P(feasible) alone, so
        the first trials head where configs fit (a tight bound refuses most of a joint space)."""
        pending = gp.features(self.space, list(self.pending.values()))
        feasibility = Feasibility(self._constraint_models(np.arange(self.history.n), pending))

        def parts(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros(len(feats)), feasibility(feats)

        def score(feats: np.ndarray) -> np.ndarray:
            return parts(feats)[1]

        score.parts, score.feasibility = parts, feasibility
        return score

    def _fit(self, key, x, y, pending, *, lie: float | None = None, rungs=None) -> gp.GP:
        """A GP on `(x, y)`, then conditioned on the pending points: at `lie` (a constant
        liar, for the objective) or at the model's own mean (a kriging believer). With
        `rungs` rows `(x, level, y)`: over the fidelity level too, read at level 1."""
        x, y, pending, cat = join_rungs(x, y, pending, self.cat, rungs)
        key = key if cat is self.cat else f"{key}@fidelity"
        theta0 = self._thetas.get(key)
        model = gp.GP(cat).fit(x, y, theta0=None if theta0 is None else np.array(theta0))
        self._thetas[key] = [float(t) for t in model.theta]
        if len(pending):
            values = model.predict(pending)[0] if lie is None else np.full(len(pending), lie)
            model = model.condition(pending, values)
        return model if cat is self.cat else AtFull(model)

    # -- state ----------------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {
            "design_seed": self._design_seed,
            "design_used": self._design_used,
            "thetas": {k: list(v) for k, v in self._thetas.items()},  # not the live lists
        }

    def _load_extra_state(self, extra: Mapping) -> None:
        self._design_seed, self._design_used = int(extra["design_seed"]), int(extra["design_used"])
        self._thetas = {k: list(v) for k, v in extra["thetas"].items()}
