"""The usable observations as arrays, grown one tell at a time, and what model-based searchers
compute from them: ParEGO targets, incumbents, and a bounded subset to fit a model on."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from search import gp
from search.objective import Objective
from spaces import Space


class History:
    """Arrays over the usable observations (completed or infeasible, with metrics), in the
    order they were told: `x` feature rows `(n, d)` (see `gp.features`), `signed` objectives
    to minimize `(n, m)`, `costs` constrained values `(n, c)`, `feasible` `(n,)`, `violation`
    `(n,)`, and their `configs`; configs rejected on their costs alone apart (`rejected`: a
    refusal on price by its raw `price`, scaled when read).
    `sync(observations)` appends what is new; a replaced list is read again."""

    def __init__(self, space: Space, objective: Objective):
        self.space, self.objective = space, objective
        self.cat = gp.categorical_mask(space)
        self._source: list | None = None
        self._read = 0
        self.n = 0
        self.configs: list[dict] = []
        self._rejected_x: list[np.ndarray] = []
        self._rejected_costs: list[list[float]] = []
        self._rejected_raw: list[bool] = []  # costs that are a refusal's raw price
        widths = (len(space), len(objective.metrics), len(objective.constraints), 1, 1)
        self._arrays = [np.empty((64, w)) for w in widths]

    def sync(self, observations: list[dict]) -> History:
        if observations is not self._source or len(observations) < self._read:
            self._source, self._read, self.n, self.configs = observations, 0, 0, []
            self._rejected_x, self._rejected_costs, self._rejected_raw = [], [], []
        for record in observations[self._read :]:
            if record["status"] in ("completed", "infeasible") and record["metrics"] is not None:
                self._append(record)
            elif record["status"] == "infeasible" and record.get("costs"):
                self._reject(record)
        self._read = len(observations)
        return self

    def _reject(self, record: dict) -> None:
        """A config rejected before training: no objective, but its costs teach the constraint
        models where the bounds lie (else a searcher proposes it again and again)."""
        names = [name for name, _ in self.objective.constraints]
        raw = record.get("price") if record.get("priced") else None
        costs = record["costs"] if raw is None else raw
        if all(name in costs for name in names):
            self._rejected_x.append(gp.features(self.space, [record["config"]])[0])
            self._rejected_costs.append([float(costs[name]) for name in names])
            self._rejected_raw.append(raw is not None)

    @property
    def n_rejected(self) -> int:
        return len(self._rejected_x)

    def rejected(
        self, limit: int, *, upto: int | None = None, factors: Mapping[str, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """At most `limit` of the first `upto` (default: all) rejected configs, the latest
        `limit // 2` and the rest spread evenly over the earlier ones (the latest alone lie near
        the bound, and a model fit on them forgets the configs far over it): feature rows
        `(k, d)` and their constrained costs `(k, c)`, for the constraint models only; a
        refusal's raw price scaled by `factors` (`Searcher.price_factors()`, of each cost)."""
        end = self.n_rejected if upto is None else upto
        keep = np.arange(end)
        if end > limit:
            older = np.linspace(0, end - limit // 2 - 1, limit - limit // 2).round().astype(int)
            keep = np.concatenate([older, keep[end - limit // 2 :]])
        rows = np.array([self._rejected_x[i] for i in keep])
        raw = np.array([self._rejected_raw[i] for i in keep], dtype=bool)
        width = len(self.objective.constraints)
        costs = np.array([self._rejected_costs[i] for i in keep], dtype=float)
        costs = costs.reshape(len(rows), width)
        scale = [(factors or {}).get(name, 1.0) for name, _ in self.objective.constraints]
        costs = np.where(raw[:, None], costs * np.array(scale), costs)
        return np.array(rows).reshape(len(rows), len(self.space)), costs

    def _append(self, record: dict) -> None:
        metrics = record["metrics"]
        row = (
            gp.features(self.space, [record["config"]])[0],
            self.objective.signed(metrics),
            [metrics[name] for name, _ in self.objective.constraints],
            [record["status"] == "completed"],
            [record.get("violation", 0.0)],
        )
        if self.n == len(self._arrays[0]):
            self._arrays = [np.concatenate([a, np.empty_like(a)]) for a in self._arrays]
        for array, values in zip(self._arrays, row):
            array[self.n] = values
        self.configs.append(record["config"])
        self.n += 1

    @property
    def x(self) -> np.ndarray:
        return self._arrays[0][: self.n]

    @property
    def signed(self) -> np.ndarray:
        return self._arrays[1][: self.n]

    @property
    def costs(self) -> np.ndarray:
        return self._arrays[2][: self.n]

    @property
    def feasible(self) -> np.ndarray:
        return self._arrays[3][: self.n, 0] > 0.5

    @property
    def violation(self) -> np.ndarray:
        return self._arrays[4][: self.n, 0]


def parego_targets(signed: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """What a surrogate models, maximized: the objective, or with several objectives ParEGO's
    augmented Chebyshev scalarization of the objectives scaled to [0, 1] over `signed`."""
    if signed.shape[1] == 1:
        return -signed[:, 0]
    low, high = signed.min(axis=0), signed.max(axis=0)
    unit = (signed - low) / np.where(high > low, high - low, 1.0)
    return -(np.max(unit * weights, axis=1) + 0.05 * unit @ weights)


def incumbents(y: np.ndarray, feasible: np.ndarray, violation: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` best rows: feasible ones by `y` (maximized), then the least violating."""
    return np.lexsort((violation, np.where(feasible, -y, np.inf)))[:k]


def distances(feats: np.ndarray, point: np.ndarray, cat: np.ndarray) -> np.ndarray:
    """Squared distance of each row of `feats` to `point`: numeric squared differences plus
    one per differing categorical coordinate, shape `(n,)`."""
    diff = feats - point
    return np.where(cat, diff != 0, diff**2).sum(axis=1)


def fit_subset(history: History, y: np.ndarray, *, size: int, rng) -> np.ndarray:
    """Of the first `len(y)` rows of `history` (`y`: their targets, maximized), those to fit
    a model on when there are more than `size`: a trust region of the `size // 2` rows nearest
    the three incumbents (as TuRBO fits its local GP) and a uniform draw of the others with
    `rng`; sorted, so the data keep their order. All rows, drawing nothing, up to `size`."""
    n = len(y)
    x, feasible, violation = history.x[:n], history.feasible[:n], history.violation[:n]
    if n <= size:
        return np.arange(n)
    near = np.full(n, np.inf)
    for i in incumbents(y, feasible, violation, 3):
        near = np.minimum(near, distances(x, x[i], history.cat))
    local = np.argpartition(near, size // 2 - 1)[: size // 2]
    rest = np.setdiff1d(np.arange(n), local)
    spread = rng.choice(rest, size - len(local), replace=False)
    return np.sort(np.concatenate([local, spread]))
