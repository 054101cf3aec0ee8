"""Choosing a candidate to propose with a price: exact where a config was priced, and learning
from every config priced while an ask chooses (not only at the next ask)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from search import gp

SHORTLIST = 256  # candidates re-ranked while an ask prices (the best by acquisition x P(fit))


class Feasibility:
    """log P(every bound met) of feature rows, from `(name, GP, bound)` per constraint; `learn`
    conditions the GPs on a config priced since they were fit (no refit)."""

    def __init__(self, constraints: list[tuple]):
        self.constraints = list(constraints)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        out = np.zeros(len(feats))
        for _, model, bound in self.constraints:
            mean, std = gp.predict_in_chunks(model, feats)
            out += gp.log_probability_below(mean, std, bound)
        return out

    def learn(self, row: np.ndarray, costs: Mapping[str, float]) -> None:
        for j, (name, model, bound) in enumerate(self.constraints):
            if name in costs:
                self.constraints[j] = (name, model.condition(row[None], [costs[name]]), bound)


def priced_pick(
    gain: np.ndarray,
    log_feasible: np.ndarray,
    known: np.ndarray,
    *,
    fits: Callable[[int], bool | None],
    learn: Callable[[int, np.ndarray], np.ndarray | None],
    extra: int,
) -> int | None:
    """The index of the candidate of best `gain` that fits, among the `SHORTLIST` best by
    `gain + log_feasible` and every one priced to fit already. `known`: per candidate, 1 priced
    to fit, -1 over a bound or not to propose, 0 not priced. Candidates are priced (`fits(i)`:
    True, False, or None once the ask's budget is spent) best estimate first, exact where known
    (a known fit costs nothing); after each, `learn(i, rows)` gives the new log P(fit) of the
    shortlist `rows` (None: unchanged). After the first fit, only candidates of higher gain, at
    most `extra` more priced; past the budget, only known fits. None when nothing fits."""
    known = known.copy()
    estimate = np.where(known > 0, gain, gain + log_feasible)
    estimate[known < 0] = -np.inf
    order = np.argsort(-estimate, kind="stable")[:SHORTLIST]
    rows = np.union1d(order[estimate[order] > -np.inf], np.flatnonzero(known > 0))
    feasible, done = log_feasible[rows], np.zeros(len(rows), bool)
    best, priced, spent = None, 0, False
    while True:
        score = np.where(known[rows] > 0, gain[rows], gain[rows] + feasible)
        allowed = ~done & (known[rows] >= 0) & (~spent | (known[rows] > 0))
        if best is not None:
            allowed &= gain[rows] > gain[best]
        if not allowed.any():
            return best
        j = int(np.argmax(np.where(allowed, score, -np.inf)))
        i, done[j] = int(rows[j]), True
        if known[i] > 0:
            best = i
            continue
        if best is not None and priced == extra:
            spent = True
            continue
        fit = fits(i)
        if fit is None:
            spent = True
            continue
        priced += best is not None
        known[i] = 1 if fit else -1
        best = i if fit else best
        new = learn(i, rows)
        feasible = feasible if new is None else new
