"""Rungs: results of a trial at a lower fidelity (epochs) than the study's full one, kept by
`Searcher.report` and by a stopped trial's tell, and what the searchers' models read of them."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from search import gp
from search.pareto import dominating


def _number(value) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool)


class Rungs:
    """The rung results of a `Searcher` (a mixin, as `PricedAsks` is).

    `report(trial_id, metrics, fidelity=...)` keeps an intermediate result of a pending trial
    (the objectives' values, and the constrained costs it carries), the last one per fidelity;
    its tell moves them to its record as `rungs` (`[{"fidelity", "metrics"}]`, by fidelity). A
    trial told `stopped` keeps its metrics at its `fidelity` (given to `tell`, else its highest
    rung) among its rungs and as its record's `fidelity`. The models read rungs below
    `max_fidelity` (the full fidelity: a study's epochs) only when it is set, so a searcher
    created without it behaves as if no rung was ever reported. `usable()`, `best()` and
    `front()` hold full-fidelity results only."""

    def _set_fidelity(self, max_fidelity) -> None:
        if max_fidelity is not None and not (
            _number(max_fidelity) and math.isfinite(max_fidelity) and max_fidelity > 0
        ):
            raise ValueError(f"max_fidelity must be a positive number, got {max_fidelity!r}")
        self.max_fidelity = None if max_fidelity is None else float(max_fidelity)
        self.rungs: dict[str, list[dict]] = {}  # each pending trial's rung results

    def report(self, trial_id: str, metrics: Mapping, *, fidelity: float) -> dict | None:
        """Keep `metrics`, measured on pending trial `trial_id` at `fidelity` (> 0, at most
        `max_fidelity`): they must hold every objective. Returns the rung kept, or None when
        an objective or cost is NaN or inf (nothing kept)."""
        if trial_id not in self.pending:
            raise ValueError(
                f"report: trial id {trial_id!r} is not pending; pending: {sorted(self.pending)}"
            )
        rung = self._rung(metrics, fidelity, what="report")
        if rung is not None:
            kept = [r for r in self.rungs.get(trial_id, []) if r["fidelity"] != rung["fidelity"]]
            self.rungs[trial_id] = sorted(kept + [rung], key=lambda r: r["fidelity"])
        return rung

    def _rung(self, metrics: Mapping, fidelity, *, what: str) -> dict | None:
        top = self.max_fidelity or math.inf
        if not (_number(fidelity) and 0 < fidelity <= top):
            raise ValueError(
                f"{what}: fidelity must be a number in (0, max_fidelity={self.max_fidelity}], "
                f"got {fidelity!r}"
            )
        values = self.objective.clean(metrics, what=what, partial=True)
        return None if values is None else {"fidelity": float(fidelity), "metrics": values}

    def _rungs_at_end(self, trial_id: str, metrics, *, status, fidelity) -> tuple[list, float]:
        """The rungs a tell moves to its record, and a stopped trial's fidelity (None: not
        known, or not stopped); changes nothing (a bad `fidelity` raises before the tell)."""
        if fidelity is not None and status != "stopped":
            raise ValueError(f"tell: fidelity is for a stopped trial, got status {status!r}")
        rungs = list(self.rungs.get(trial_id, []))
        if status != "stopped" or metrics is None or self._lacks_objective(metrics):
            return rungs, None
        fidelity = rungs[-1]["fidelity"] if fidelity is None and rungs else fidelity
        rung = None if fidelity is None else self._rung(metrics, fidelity, what="tell")
        if rung is None:
            return rungs, None
        rungs = [r for r in rungs if r["fidelity"] != rung["fidelity"]] + [rung]
        return sorted(rungs, key=lambda r: r["fidelity"]), rung["fidelity"]

    def _rung_state(self) -> dict:
        return {"rungs": {i: [dict(r) for r in rs] for i, rs in self.rungs.items()}}

    # -- what the models read -------------------------------------------------------------------
    def rung_results(self, *, pending: bool = True, upto: int | None = None) -> list[tuple]:
        """`(trial id, config, fidelity, metrics)` of every rung below `max_fidelity` (none
        without it), of the first `upto` observations in order, then (`pending`) of the
        pending trials."""
        if self.max_fidelity is None:
            return []
        sources = [(o["id"], o["config"], o.get("rungs", ())) for o in self.observations[:upto]]
        if pending:
            sources += [(i, self.pending[i], rs) for i, rs in self.rungs.items()]
        return [
            (trial, config, r["fidelity"], r["metrics"])
            for trial, config, rungs in sources
            for r in rungs
            if r["fidelity"] < self.max_fidelity
        ]

    def rung_rows(self, *, limit: int, pending: bool = True, upto: int | None = None):
        """The latest `limit` of `rung_results`, thinned to each trial's rungs at a power of
        two and its last: feature rows `(k, d)`, fidelity over `max_fidelity` `(k,)` and
        signed objectives `(k, m)`."""
        results, rows = self.rung_results(pending=pending, upto=upto), []
        for j, (trial, config, fidelity, metrics) in enumerate(results):
            last = j + 1 == len(results) or results[j + 1][0] != trial
            if last or math.log2(fidelity).is_integer():
                rows.append((config, fidelity / self.max_fidelity, self.objective.signed(metrics)))
        rows = rows[-limit:] if limit else []
        m = len(self.objective.metrics)
        if not rows:
            return np.zeros((0, len(self.space))), np.zeros(0), np.zeros((0, m))
        configs, level, signed = zip(*rows)
        return gp.features(self.space, list(configs)), np.array(level), np.array(signed)

    def rung_standings(self, trial_ids) -> dict[str, float | None]:
        """How each trial fares at its rungs: the share of the other trials' results at one
        fidelity that do not dominate its own (1: none better), at the highest fidelity it
        shares with another trial; None when it shares none (or the searcher reads no rungs)."""
        at: dict[float, dict[str, np.ndarray]] = {}
        for trial, _, fidelity, metrics in self.rung_results():
            at.setdefault(fidelity, {})[trial] = self.objective.signed(metrics)
        out = dict.fromkeys(trial_ids)
        for trial_id in out:
            for fidelity in sorted((f for f in at if trial_id in at[f]), reverse=True):
                others = [v for t, v in at[fidelity].items() if t != trial_id]
                if others:
                    better = dominating(np.array(others), at[fidelity][trial_id])
                    out[trial_id] = 1.0 - float(better.mean())
                    break
        return out


def with_level(x: np.ndarray, level) -> np.ndarray:
    """Feature rows `(n, d)` with their fidelity level (a number, or `(n,)`) as one more column."""
    return np.column_stack([x, np.broadcast_to(level, (len(x),))])


class AtFull:
    """A model over `(features, fidelity level)` read at the full fidelity (level 1)."""

    def __init__(self, model):
        self.model = model

    def predict(self, x: np.ndarray):
        return self.model.predict(with_level(x, 1.0))


def join_rungs(x, y, pending, cat, rungs):
    """`(x, y, pending, cat)` of a GP over `(features, fidelity level)`: the full results and
    the pending ones at level 1, the rung rows `rungs` (`(x, level, y)`) after them; all
    unchanged when there are none."""
    if rungs is None or not len(rungs[0]):
        return x, y, pending, cat
    x = np.vstack([with_level(x, 1.0), with_level(rungs[0], rungs[1])])
    return x, np.concatenate([y, rungs[2]]), with_level(pending, 1.0), np.append(cat, False)
