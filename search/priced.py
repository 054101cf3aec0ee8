"""Asking with a price: a searcher that never proposes a config its price puts over a bound."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from search.errors import Exhausted, NothingFits
from search.price import Price, stats_of

PROPOSALS_PER_CALL = 10  # proposals an ask may price per call of its budget (cache hits too)


class PricedAsks:
    """The part of `search.Searcher` that asks with a price: a `search.Price`, or a plain
    `config -> {cost: value}` callable wrapped as `Price(fn)`, its costs a subset of the
    constraint names. `ask` never returns a config whose priced costs break a bound while one
    that fits turns up within the price's per-ask budget: each one over a bound is recorded
    (once per price key) as an observation of its own id (`status` "infeasible", `metrics`
    None, its `costs` and `violation` as calibrated then, its raw `price`, `"priced": True`;
    not a trained trial, see `trained()`; `refusals()` reads them at the calibration of now)
    and the searcher proposes again; past the budget `ask` raises `NothingFits`. Subclasses
    may price while they choose (`_fits`)."""

    def _set_price(self, price) -> None:
        self.price = Price.wrap(price)
        if self.price is not None and not self.objective.constraints:
            raise ValueError(
                "price: a price checks costs against the constraints' bounds; "
                "give constraints={cost: bound} with it"
            )
        self._pricing = stats_of({})  # kept when the searcher has no price
        self._asked: tuple[dict, list] | None = None  # an ask's price stats at start, refusals
        self._refusals_indexed: tuple[int, set] = (0, set())  # see `_refused_keys`
        self._start_calibration()  # `search.calibrate.Calibration`, the searcher's too

    def _proposal(self) -> tuple[dict, dict | None, list[dict]]:
        """What an ask returns: its config, the config's priced costs (None unpriced), and
        the refusals it recorded."""
        if self.price is None:
            return self._unpending(), None, []
        self._asked = (self.price.stats, [])
        try:
            config, costs = self._priced_proposal()
        finally:
            refused = self._asked[1]
            self._asked = None
        return config, costs, refused

    def _priced_proposal(self) -> tuple[dict, dict]:
        """Proposals until one fits (its config and costs), recording those that do not."""
        for _ in range(PROPOSALS_PER_CALL * self.price.calls):
            try:
                config = self._unpending()
            except Exhausted as error:
                if isinstance(error, NothingFits) or not self._asked[1]:
                    raise
                raise self._nothing_fits(f"the searcher ran out of configs ({error})") from error
            if not self._priceable(config):
                return config, {}
            if self.price.known(config) is None and not self._budget_left():
                break  # spent (also while `_propose` priced): no call past the budget
            costs = self._priced(config)  # a config priced already is a cache hit
            if costs is not None:
                return self._plainer(config, costs)
        if self._budget_left():
            raise self._nothing_fits("every proposal is over it")
        raise self._nothing_fits(self._budget_text(), spent=True)

    def _plainer(self, config: dict, costs: dict) -> tuple[dict, dict]:
        """`(config, costs)`, or the price's `twin` of `config` with its costs when the twin
        fits every bound too, was neither run nor is pending, and is priced within the ask's
        budget (a twin over a bound is not a refusal: nobody proposed it)."""
        twin = self.price.twin(dict(config)) if self.price.twin is not None else None
        if not twin or twin == config:
            return config, costs
        self.space.validate(twin)
        key = self.space.canonical(twin)
        if self._taken(key):
            return config, costs
        if self.price.known(twin) is None and not self._budget_left():
            return config, costs
        twin_costs = self._calibrated(self._cost(twin))
        if self.objective.violation(twin_costs) == 0:
            return twin, twin_costs
        return config, costs

    def _priced(self, config: dict) -> dict | None:
        """`config`'s calibrated costs when they fit every bound; else None, and `config` is
        recorded as refused."""
        raw = self._cost(config)
        costs = self._calibrated(raw)
        if self.objective.violation(costs) == 0:
            return costs
        self._refuse(config, raw, costs)
        return None

    def _cost(self, config: dict) -> dict:
        """`config`'s raw price (a screen judges it against the bounds over the factors)."""
        bounds, factors = dict(self.objective.constraints), self.price_factors()
        raw = {name: bound / factors.get(name, 1.0) for name, bound in bounds.items()}
        costs = self.price(config, bounds=raw)  # a screen judges raw prices
        unknown = sorted(set(costs) - set(bounds))
        if unknown:
            raise ValueError(
                f"price: returned costs {unknown} that are not constraint names; "
                f"it may return only {sorted(bounds)}"
            )
        return costs

    def _priced_fits(self, configs: Sequence[dict]) -> np.ndarray:
        """Per config, 1 where its exact price (cached, at the calibration of now) fits every
        bound, -1 where it breaks one, 0 where it was not priced exactly."""
        rows: dict[str, list[int]] = {}
        for i, config in enumerate(configs):
            rows.setdefault(self.price.key(config), []).append(i)
        out = np.zeros(len(configs), dtype=int)
        for key, raw in self.price.prices():
            fit = self.objective.violation(self._calibrated(raw)) == 0
            out[rows.get(key, [])] = 1 if fit else -1
        return out

    def _fits(self, config: dict) -> bool | None:
        """During a priced ask: whether `config`'s priced costs fit every bound (a config over
        one is recorded as refused), None once the ask's price budget is spent (it is not
        priced); True without a price, outside an ask, or for a config the price skips."""
        if not self._priced_ask or not self._priceable(config):
            return True
        if not self._budget_left():
            return None
        return self._priced(config) is not None

    def _taken(self, key: str) -> bool:
        """Whether the config of canonical `key` was told or is pending (every searcher's
        check before it proposes a config again; here beside the priced asks that use it)."""
        return key in self._seen or self._pending_keys[key] > 0

    def _near_miss(self) -> dict | None:
        """During a priced ask, half the time, the config of the refusal this ask recorded
        nearest its bounds (least violation), for a searcher drawing at random to change
        instead (a repair: where 25 of 65,536 configs fit, 200 uniform draws all miss them 92%
        of the time); else None."""
        refused = self._asked[1] if self._priced_ask else []
        if not refused or self.rng.random() < 0.5:
            return None
        return min(refused, key=lambda o: o["violation"])["config"]

    @property
    def _priced_ask(self) -> bool:
        """Whether an ask is under way with a price (`_fits` prices)."""
        return self.price is not None and self._asked is not None

    def _budget_left(self) -> bool:
        start, now = self._asked[0], self.price.stats
        return (
            now["calls"] - start["calls"] < self.price.calls
            and now["seconds"] - start["seconds"] < self.price.seconds
        )

    def _budget_text(self) -> str:
        start, now = self._asked[0], self.price.stats
        return (
            f"the ask's price budget is spent ({now['calls'] - start['calls']} of "
            f"{self.price.calls} calls, {now['seconds'] - start['seconds']:.1f} of "
            f"{self.price.seconds:g} s)"
        )

    def _refuse(self, config: dict, raw: dict, costs: dict) -> None:
        """Record `config`, priced over a bound, as refused: once per price key (the configs
        that differ from a refused one only where the costs do not depend are not recorded
        again: they cost nothing to skip, and a study would write a row for each)."""
        if self.price.key(config) in self._refused_keys():
            return
        record = self.add_refused(config, costs, price=raw)
        self._asked[1].append(record)

    def add_refused(
        self,
        config: Mapping,
        costs: Mapping,
        *,
        price: Mapping | None = None,
        trial_id: str | None = None,
    ) -> dict:
        """Record `config` as refused on its priced `costs` (a study rebuilding its searcher
        from its rows; `trial_id` as `add` takes it), calibrated from the raw `price` (None: a
        row from before refusals kept it); returns the record."""
        trial_id = self._new_id(config, trial_id, change="add_refused")
        record = {"id": trial_id, "config": dict(config), "metrics": None}
        record |= {"status": "infeasible", "costs": {k: float(v) for k, v in costs.items()}}
        record |= {"violation": self.objective.violation(record["costs"]), "priced": True}
        if price is not None:
            record["price"] = {k: float(v) for k, v in price.items()}
        self._restore_refused([record])
        return record

    def _new_id(self, config: Mapping, trial_id: str | None, *, change: str) -> str:
        """The id of a config recorded without an ask (`add`, `add_refused`): `trial_id`, a
        number not used yet, or by default the next free one; `config` checked too."""
        self.space.validate(config)
        trial_id = str(self._next_id) if trial_id is None else str(trial_id)
        if not trial_id.isdigit() or trial_id in self.pending or trial_id in self._told_ids:
            raise ValueError(f"{change}: trial id {trial_id!r} must be a new number")
        return trial_id

    def refusals(self) -> list[dict]:
        """The refusal records, each with its `costs` and `violation` at the calibration of now
        (`price_factors()`) where it kept its raw `price` (else as recorded)."""
        out = []
        for record in self.observations:
            if not record.get("priced"):
                continue
            if record.get("price") is not None:
                costs = self._calibrated(record["price"])
                record = record | {"costs": costs, "violation": self.objective.violation(costs)}
            out.append(record)
        return out

    def _refused_keys(self) -> set[str]:
        """The price keys of the refusals recorded, indexed as observations grow (a loaded
        state starts the index again: `_refusals_indexed`, set by `Searcher`)."""
        seen, keys = self._refusals_indexed
        for record in self.observations[seen:]:
            if record.get("priced"):
                keys.add(self.price.key(record["config"]))
        self._refusals_indexed = (len(self.observations), keys)
        return keys

    def _nothing_fits(self, why: str, *, spent: bool = False) -> NothingFits:
        bounds = ", ".join(f"{n} <= {b:g}" for n, b in self.objective.constraints)
        priced = self.refusals()
        text = f"nothing fits {bounds}: {why}"
        if priced:
            cheapest = min(priced, key=lambda o: o["violation"])
            broken = ", ".join(
                f"{n} {cheapest['costs'][n]:g} > {b:g}"
                for n, b in self.objective.constraints
                if cheapest["costs"].get(n, -math.inf) > b
            )
            text += (
                f"; the cheapest config priced, {cheapest['config']}, costs "
                f"{cheapest['costs']} ({broken})"
            )
        if self.price_factors():
            text += f"; prices scaled by measured / priced {self.price_factors()} (calibrated)"
        return NothingFits(text, self._asked[1], spent=spent)

    def _restore_refused(self, records: Sequence[dict]) -> None:
        """Record again the refusals an ask made (replay)."""
        for record in records:
            self._next_id = max(self._next_id, int(record["id"]) + 1)
            self._record(dict(record))

    @property
    def pricing(self) -> dict:
        """The price's `stats` so far (kept in the state: see `search.replay.price_state`)."""
        return self.price.stats if self.price is not None else dict(self._pricing)

    @pricing.setter
    def pricing(self, stats: Mapping) -> None:
        self._pricing = stats_of(stats)
        if self.price is not None:
            self.price.stats = stats
            self.price.learn(stats.get("prices", ()))

    def trained(self) -> int:
        """The observations that are trials (told or added), not configs refused on price."""
        return sum(not o.get("priced") for o in self.observations)
