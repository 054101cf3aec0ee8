"""A price calibrated on what trials measure: a measured cost (deployed latency on a shared
machine) differs from the price measured before training by noise and load, and a searcher
that lives near a bound would see a share of its priced-to-fit trials measure over it."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

CALIBRATE_AFTER = 5  # trials priced and then measured before a cost's prices are calibrated
PRICE_QUANTILE = 0.9  # the share of trials priced to fit that should measure within the bound


class Calibration:
    """The part of `search.Searcher` that calibrates its price (a mixin, as `PricedAsks` is).

    An ask keeps the raw price of its config (`asked_costs`, by trial id); its tell stores it
    in the record as `price`. Once `CALIBRATE_AFTER` trials of a cost were priced and then
    measured (told `completed` or `infeasible` with that cost), each price of it is scaled by
    the `price.quantile` quantile of measured / priced over them: a config is proposed when
    its calibrated price fits, so about that share of the trials priced to fit measure within
    the bound. Refusals and `Trial.costs` hold calibrated costs; a price that matches what
    trials measure (a table, a MAC count) calibrates by 1."""

    def _start_calibration(self) -> None:
        self.asked_costs: dict[str, dict] = {}  # pending trials' raw prices
        self._factors: tuple[int, dict] = (-1, {})  # (observations counted, factors)

    def _keep_price(self, trial_id: str, config: dict, costs: dict | None) -> None:
        raw = None if costs is None else self.price.known(config)
        if raw:
            self.asked_costs[trial_id] = raw

    def _attach_price(self, record: dict) -> None:
        raw = self.asked_costs.pop(record["id"], None)
        if raw is not None:
            record["price"] = raw

    def _calibrated(self, costs: Mapping[str, float]) -> dict[str, float]:
        """`costs` (a raw price) scaled by each cost's factor so far."""
        factors = self.price_factors()
        return {name: value * factors.get(name, 1.0) for name, value in costs.items()}

    def price_factors(self) -> dict[str, float]:
        """Each cost's calibration factor so far (a cost without enough trials: absent)."""
        quantile = getattr(self.price, "quantile", None)
        if quantile is None:
            return {}
        if self._factors[0] != len(self.observations):
            self._factors = (len(self.observations), factors(self.observations, quantile))
        return self._factors[1]

    def _calibration_state(self) -> dict:
        return {"asked_costs": dict(self.asked_costs)} if self.asked_costs else {}

    def _load_calibration(self, state: Mapping) -> None:
        self.asked_costs = {str(k): dict(v) for k, v in state.get("asked_costs", {}).items()}
        self._factors = (-1, {})


def factors(observations: list[dict], quantile: float) -> dict[str, float]:
    """The `quantile` of measured / priced per cost, over the measured observations with a
    `price` (costs with fewer than `CALIBRATE_AFTER` of them left out)."""
    ratios: dict[str, list[float]] = {}
    for record in observations:
        price, metrics = record.get("price"), record.get("metrics")
        if not price or not metrics or record["status"] not in ("completed", "infeasible"):
            continue
        for name, priced in price.items():
            measured = metrics.get(name)
            if _positive(priced) and _positive(measured):
                ratios.setdefault(name, []).append(measured / priced)
    return {
        name: float(np.quantile(values, quantile))
        for name, values in ratios.items()
        if len(values) >= CALIBRATE_AFTER
    }


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0
