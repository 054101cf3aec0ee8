"""A price's screen: a ridge regression of each cost (or its log) on the configs priced exactly,
answering for the candidates it places clearly over or clearly under a bound so that only those
near one are priced exactly (see `search.Price`'s `screen`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np

# ridge penalties tried on each refit; the one of least leave-one-out error is kept
PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
ABSENT = "<absent>"  # the category of a key a config lacks (a conditional parameter)


class Screen:
    """Fit once `after` configs are priced exactly (refit as more are): per cost, a `Ridge` on
    `Encoding`'s rows (`models`), its `margin` the largest leave-one-out residual on the priced
    set (the worst it did on a config it had not seen; in log units where it fits the log,
    `log`). `judge` places a candidate clearly over a bound (predicted minus margin
    above it), clearly under (plus margin below), or near; a candidate the fit cannot place
    (a key, category or range it has not seen; out of a `Ridge`'s reach) is near."""

    def __init__(self, after: int):
        self.after = after
        self.models: dict[str, Ridge] = {}  # per cost, the latest fit
        self.priced: set[str] = set()  # the costs some exact price holds
        self._size, self.encoding = -1, None

    @classmethod
    def of(cls, after) -> Screen | None:
        """`Price`'s `screen` argument as a screen (None: no screen)."""
        if after is not None and (
            isinstance(after, bool) or not isinstance(after, int) or after < 10
        ):
            raise ValueError(
                "price: screen must be None (price every config exactly) or how many configs "
                f"to price exactly before screening, an integer >= 10, got {after!r}"
            )
        return None if after is None else cls(after)

    def judge(
        self, part: Mapping, bounds: Mapping[str, float], prices: Mapping[str, Mapping]
    ) -> dict | None:
        """`part` (a config's cost-relevant part) against `bounds`, the model fit on `prices`
        (`{price key: costs}`, the priced set): its predicted costs when one is clearly over a
        bound or every one is clearly under, None when it must be priced."""
        if len(prices) < self.after or not bounds:
            return None
        self._refit(prices)
        bounds = {name: bound for name, bound in bounds.items() if name in self.priced}
        row = self.encoding.row(part)
        if row is None or not bounds:
            return None
        predicted, placed = {}, set()
        for name, bound in bounds.items():
            if name not in self.models:
                return None
            model = self.models[name]
            value, level = model.predict(row), model.level(bound)
            if value is None:
                return None
            predicted[name] = model.cost(value)
            if value - model.margin > level:
                placed.add("over")
            elif value + model.margin < level:
                placed.add("under")
            else:
                placed.add("near")
        return predicted if "over" in placed or placed == {"under"} else None

    def _refit(self, prices: Mapping[str, Mapping]) -> None:
        if len(prices) == self._size:
            return
        parts = [json.loads(key) for key in prices]
        self.encoding = Encoding(parts)
        rows = np.array([self.encoding.row(p) for p in parts]).reshape(len(parts), -1)
        self.priced = {n for costs in prices.values() for n in costs}
        self.models = {}
        for name in sorted(self.priced):
            y = np.array([c.get(name, math.nan) for c in prices.values()], dtype=float)
            keep = np.isfinite(y)
            if keep.sum() >= 3:
                self.models[name] = Ridge(rows[keep], y[keep])
        self._size = len(prices)


class Ridge:
    """`y` on the rows `x`, with an intercept: on `y` itself or, where `y` is all positive, on
    its log, with the penalty (`PENALTIES`), whichever predicts `y` best left out one at a time
    (relative to `y` where it is positive). It predicts only within reach of `x`: in the span
    of its rows (an op seen only together with another is not told apart from it) and at no
    higher leverage than a row of `x` has (where its leave-one-out residuals say how far off
    it may be)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x_mean = x.mean(axis=0)
        u, s, vt = np.linalg.svd(x - self.x_mean, full_matrices=False)
        positive, best = bool(np.all(y > 0)), None
        for log in (False, True) if positive else (False,):
            z = np.log(y) if log else y
            uz = u.T @ (z - z.mean())
            for penalty in PENALTIES:
                shrink = s**2 / (s**2 + penalty)
                residual = z - z.mean() - u @ (shrink * uz)
                leverage = 1.0 / len(z) + (u**2) @ shrink
                loo = np.where(leverage < 1 - 1e-9, residual / (1 - leverage), np.inf)
                miss = np.expm1(-loo) if log else loo / y if positive else loo
                error = float(np.mean(miss**2))
                if best is None or error < best[0]:
                    weights = vt.T @ (s / (s**2 + penalty) * uz)
                    margin, reach = float(np.max(np.abs(loo))), float(np.max(leverage))
                    best = (error, log, z.mean(), weights, margin, penalty, reach)
        _, self.log, self.z_mean, self.weights, self.margin, penalty, self.reach = best
        kept = s > 1e-8 * s.max(initial=0.0)
        self.basis, self.inverse = vt[kept], 1.0 / (s[kept] ** 2 + penalty)
        self.n = len(y)

    def predict(self, row: np.ndarray) -> float | None:
        """The fit's value at `row` (a log cost where the fit is on logs); None out of reach."""
        d = row - self.x_mean
        along = self.basis @ d
        if np.linalg.norm(d - self.basis.T @ along) > 1e-6 * (1.0 + np.linalg.norm(d)):
            return None
        if 1.0 / self.n + along**2 @ self.inverse > self.reach + 1e-9:
            return None
        return float(self.z_mean + d @ self.weights)

    def level(self, bound: float) -> float:
        """`bound` where `predict`'s values are."""
        return (math.log(bound) if bound > 0 else -math.inf) if self.log else bound

    def cost(self, value: float) -> float:
        """`predict`'s `value` as a cost."""
        return float(math.exp(value) if self.log else value)


class Encoding:
    """Feature rows of config parts as the fit set `parts` shows them: a key whose values are all
    numbers gives the number scaled (and its log, where all are positive) and, where some part
    lacks it, an absent flag; any other key one-hot categories (`ABSENT` one of them). A part
    outside the set (a key, category or absence not seen, a number outside the range seen)
    has no row (None)."""

    def __init__(self, parts: list[Mapping]):
        self.columns = [_column(key, parts) for key in sorted({k for p in parts for k in p})]

    def row(self, part: Mapping) -> np.ndarray | None:
        out = []
        for column in self.columns:
            features = column(part)
            if features is None:
                return None
            out += features
        return np.array(out, dtype=float)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _column(key: str, parts: list[Mapping]):
    values = [p[key] for p in parts if key in p]
    absent = len(values) < len(parts)
    if not all(_number(v) for v in values):
        levels = sorted({json.dumps(p.get(key, ABSENT)) for p in parts})

        def categorical(part):
            level = json.dumps(part.get(key, ABSENT))
            return [float(level == known) for known in levels] if level in levels else None

        return categorical
    x = np.array(values, dtype=float)
    scales = [(x.mean(), x.std() or 1.0, False)]
    if x.min() > 0:
        scales.append((np.log(x).mean(), np.log(x).std() or 1.0, True))

    def numeric(part):
        if key not in part:
            return [0.0] * len(scales) + [1.0] if absent else None
        v = part[key]
        if not _number(v) or not x.min() <= v <= x.max():
            return None
        out = [((math.log(v) if log else v) - m) / s for m, s, log in scales]
        return out + [0.0] * absent

    return numeric
