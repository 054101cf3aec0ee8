"""A price calibrated on what trials measure: a measured cost (deployed latency on a shared
machine) differs from the price measured before training by noise and load, and a searcher
that lives near a bound would see a share of its priced-to-fit trials measure over it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

# trials priced and then measured from which on one outlier among them never sets the factor
OUTLIER_AFTER = 5
PRICE_QUANTILE = 0.9  # the share of trials priced to fit that should measure within the bound


class Calibration:
    """The part of `search.Searcher` that calibrates its price (a mixin, as `PricedAsks` is).

    An ask keeps the raw price of its config (`asked_costs`, by trial id); its tell stores it in
    the record as `price`. Once a trial of a cost was priced and then measured (told
    `completed`, `infeasible` or `stopped` with that cost: a study's trial measures its latency
    before training too), each price of it is scaled by the `price.quantile` conformal quantile
    of measured / priced over them (`_factors`): a config is proposed when its calibrated price
    fits, so about that share of the trials priced to fit measure within the bound.
    `Trial.costs` holds calibrated costs; a refusal holds those of its ask and its raw `price`
    too, which every reader scales by the factors of the time it reads (`PricedAsks.refusals`,
    `History.rejected`); a price that matches what trials measure (a table, a MAC count)
    calibrates by 1. The price's own `ratios` (earlier studies' pairs) come first."""

    def _start_calibration(self) -> None:
        self.asked_costs: dict[str, dict] = {}  # pending trials' raw prices
        self._ratio_cache: tuple[int, dict, dict] | None = None  # (records read, ratios, factors)

    def _keep_price(self, trial_id: str, raw: Mapping | None) -> None:
        """Keep `raw`, the raw price of pending `trial_id`'s config, for its tell (None, {}:
        none)."""
        if raw:
            self.asked_costs[trial_id] = {name: float(value) for name, value in raw.items()}

    def _attach_price(self, record: dict) -> None:
        raw = self.asked_costs.pop(record["id"], None)
        if raw is not None:
            record["price"] = raw

    def _calibrated(self, costs: Mapping[str, float]) -> dict[str, float]:
        """`costs` (a raw price) scaled by each cost's factor so far."""
        factors = self.price_factors()
        return {name: value * factors.get(name, 1.0) for name, value in costs.items()}

    def price_factors(self, *, upto: int | None = None) -> dict[str, float]:
        """Each cost's calibration factor so far, or after the first `upto` observations (a
        cost neither a trial nor the price's `ratios` measured yet: absent)."""
        quantile = getattr(self.price, "quantile", None)
        if quantile is None:
            return {}
        if upto is not None:
            return factors(self.observations[:upto], quantile, self.price.ratios)
        if self._ratio_cache is None:  # nothing read yet: start from the price's own pairs
            by_cost = {name: list(values) for name, values in self.price.ratios.items()}
            self._ratio_cache = (0, by_cost, _factors(by_cost, quantile))
        read, by_cost, known = self._ratio_cache
        new = [pair for record in self.observations[read:] for pair in _ratios(record)]
        for name, ratio in new:
            by_cost.setdefault(name, []).append(ratio)
        factors_now = _factors(by_cost, quantile) if new else known
        self._ratio_cache = (len(self.observations), by_cost, factors_now)
        return self._ratio_cache[2]

    def _calibration_state(self) -> dict:
        return {"asked_costs": dict(self.asked_costs)} if self.asked_costs else {}

    def _load_calibration(self, state: Mapping) -> None:
        self.asked_costs = {str(k): dict(v) for k, v in state.get("asked_costs", {}).items()}
        self._ratio_cache = None


def factors(observations: list[dict], quantile: float, carried=None) -> dict[str, float]:
    """The `quantile` of measured / priced per cost, over `carried` ratios (`ratios`') and
    those of the measured observations with a `price` (see `_factors`; a cost none of them
    measured: left out)."""
    by_cost = {name: list(values) for name, values in (carried or {}).items()}
    for name, values in ratios(observations).items():
        by_cost.setdefault(name, []).extend(values)
    return _factors(by_cost, quantile)


def ratios(records) -> dict[str, list[float]]:
    """Measured / priced per cost over told `records` (`Searcher.observations`, or records a
    study builds from its rows: `status`, `price`, `metrics`), in order (see `_ratios`)."""
    out: dict[str, list[float]] = {}
    for record in records:
        for name, ratio in _ratios(record):
            out.setdefault(name, []).append(ratio)
    return out


def _factors(ratios: Mapping[str, list[float]], quantile: float) -> dict[str, float]:
    """Each cost's factor, for costs with ratios: the `k`-th smallest of its `n` ratios with
    `k = ceil(quantile * (n + 1))`, as split-conformal prediction picks it, so the next
    trial's ratio is at most the factor with probability at least `quantile` (the plain
    empirical quantile covers less: 18 of 21 at 20 trials against 19 of 21). With fewer than
    `(1 + quantile) / (1 - quantile)` ratios (19 at 0.9) `k` passes `n`: before
    `OUTLIER_AFTER` ratios the largest (covering `n / (n + 1)`: the best a few can say, where
    no factor covers about half the trials near a bound), from then on never the largest
    while `quantile` < 1, so one outlier does not move it: the second largest, which covers
    `(n - 1) / (n + 1)` (4 in 6 at 5 trials, 9 in 11 at 10)."""
    out = {}
    for name, values in ratios.items():
        n = len(values)
        if n:
            top = n - 1 if n >= OUTLIER_AFTER and quantile < 1 else n
            k = min(math.ceil(quantile * (n + 1)), top)
            out[name] = float(np.partition(values, k - 1)[k - 1])
    return out


def _ratios(record: Mapping) -> list[tuple[str, float]]:
    """`(cost, measured / priced)` of a told record priced at its ask and measured: at its end,
    or before training (a trial that found itself over a bound: its `costs`; one stopped at a
    rung: the costs it was told with); a refusal (`priced`) measured nothing."""
    price, metrics = record.get("price"), record.get("metrics") or record.get("costs")
    if not price or not metrics or record.get("priced"):
        return []
    if record["status"] not in ("completed", "infeasible", "stopped"):
        return []
    return [
        (name, metrics[name] / priced)
        for name, priced in price.items()
        if _positive(priced) and _positive(metrics.get(name))
    ]


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
