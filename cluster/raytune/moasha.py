"""Multi-objective, constraint-aware asynchronous successive halving: the rule (`continuing`)
and the Ray Tune scheduler (`MOASHA`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from ray.tune import schedulers

from cluster.raytune.trainable import PRICED
from search.evolution import crowding_distance, nondominated_ranks
from search.objective import Objective


def continuing(
    rung: Sequence[tuple[str, Mapping]], *, objective: Objective, reduction_factor: float
) -> set[str]:
    """The trials of a rung that continue, `rung` being `[(trial_id, metrics), ...]` of every
    trial that reached it. Each `metrics` holds what its trial reported (or was priced at) by
    then; `objective` gives the objectives, their modes and the upper bounds.

    A trial over a bound never continues; it is ranked behind every trial within the bounds,
    by its total relative excess (Deb's constrained domination). The trials within the bounds
    are ranked by non-dominated front over the objectives every trial of the rung reports,
    within a front by NSGA-II crowding distance, larger first (a front's extremes first). The
    top `ceil(m / reduction_factor)` of the `m` trials continue (at least one), and every trial
    tied with the last of them. With one objective this is successive halving's top
    `1 / reduction_factor`; a rung with no objective every trial reports stops only those over
    a bound."""
    if not rung:
        return set()
    over = [objective.violation(metrics) for _, metrics in rung]
    inside = [i for i, excess in enumerate(over) if excess == 0]
    shared = [
        (name, mode)
        for name, mode in zip(objective.metrics, objective.modes)
        if all(name in metrics for _, metrics in rung)
    ]
    if not shared:
        return {rung[i][0] for i in inside}
    keys = [(1.0, excess, 0.0) for excess in over]  # behind every trial within the bounds
    if inside:
        sign = np.array([1.0 if mode == "min" else -1.0 for _, mode in shared])
        points = np.array([[rung[i][1][name] for name, _ in shared] for i in inside]) * sign
        points = np.nan_to_num(points, nan=1e300, posinf=1e300, neginf=-1e300)  # NaN: worst
        fronts = nondominated_ranks(points)
        crowd = np.zeros(len(inside))
        for front in np.unique(fronts):
            crowd[fronts == front] = crowding_distance(points[fronts == front])
        for at, i in enumerate(inside):
            keys[i] = (0.0, float(fronts[at]), -float(crowd[at]))
    keep = max(1, math.ceil(len(rung) / reduction_factor))
    return {rung[i][0] for i in inside if sum(key < keys[i] for key in keys) < keep}


class MOASHA(schedulers.FIFOScheduler):
    """Multi-objective, constraint-aware asynchronous successive halving (after Schmucker et
    al., "Multi-objective asynchronous successive halving", 2021, with NSGA-II's crowding
    distance for ties). Rungs at `grace_period * reduction_factor**k` up to `max_t`, one
    bracket, counted in `time_attr`, as `ASHAScheduler`'s; when a trial reaches a rung it is
    ranked against every trial that reached it before (`continuing`): it continues when it is
    in the top `1 / reduction_factor`, and stops at once when a measured cost breaks a bound.

    `objectives`: `{metric: "max" or "min"}` or `[(metric, mode), ...]`; left out, Tune's
    `metric` and `mode` (one objective). `constraints`: `{metric: upper bound}`. A rung ranks
    each trial on the last value it reported of each objective and cost, else the value its
    config carries under `PRICED` (the costs a priced study measured before training)."""

    def __init__(
        self,
        *,
        objectives: Mapping | Sequence | None = None,
        constraints: Mapping | None = None,
        time_attr: str = "training_iteration",  # schedulers.TIME_ATTR
        max_t: int = 100,
        grace_period: int = 1,
        reduction_factor: float = 4,
        stop_last_trials: bool = True,
    ):
        if not max_t > 0:
            raise ValueError(f"max_t must be positive, got {max_t!r}")
        if not 0 < grace_period <= max_t:
            raise ValueError(f"grace_period must be in (0, max_t={max_t}], got {grace_period!r}")
        if not reduction_factor > 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor!r}")
        super().__init__()
        self._constraints = dict(constraints or {})
        self._objective = None if not objectives else self._build(objectives)
        self._time_attr, self._max_t = time_attr, max_t
        self._reduction_factor, self._stop_last_trials = reduction_factor, stop_last_trials
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9) + 1
        self._rungs = {grace_period * reduction_factor**k: {} for k in range(count)}
        self._known: dict[str, dict] = {}  # trial id -> its last value of each metric

    def _build(self, objectives) -> Objective:
        pairs = list(objectives.items() if isinstance(objectives, Mapping) else objectives)
        metrics = [metric for metric, _ in pairs]
        return Objective.build(metrics, [mode for _, mode in pairs], self._constraints)

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self._objective is None and metric:
            self._objective = self._build([(metric, mode or "max")])
            return True
        if self._objective is None:
            return True
        at = dict(zip(self._objective.metrics, self._objective.modes))
        return not metric or at.get(metric) == (mode or at.get(metric))

    def on_trial_add(self, tune_controller, trial):
        if self._objective is None:
            raise ValueError(
                "MOASHA has no objectives: pass objectives={metric: mode, ...}, or metric and "
                "mode to tune.TuneConfig"
            )
        priced = (getattr(trial, "config", None) or {}).get(PRICED) or {}
        self._known[trial.trial_id] = self._numbers(priced)

    def on_trial_result(self, tune_controller, trial, result):
        known = self._known.setdefault(trial.trial_id, {})
        known.update(self._numbers(result))
        if self._time_attr not in result:
            return schedulers.TrialScheduler.CONTINUE
        now = result[self._time_attr]
        if now >= self._max_t and self._stop_last_trials:
            return schedulers.TrialScheduler.STOP
        due = [t for t, rung in self._rungs.items() if t <= now and trial.trial_id not in rung]
        reached = [t for t, rung in self._rungs.items() if trial.trial_id in rung]
        if not due or max(due) < max(reached, default=0) or not self._ranked(known):
            return schedulers.TrialScheduler.CONTINUE
        rung = self._rungs[max(due)]
        rung[trial.trial_id] = dict(known)
        kept = continuing(
            list(rung.items()), objective=self._objective, reduction_factor=self._reduction_factor
        )
        return (
            schedulers.TrialScheduler.CONTINUE
            if trial.trial_id in kept
            else schedulers.TrialScheduler.STOP
        )

    def on_trial_complete(self, tune_controller, trial, result):
        self._known.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial):
        self._known.pop(trial.trial_id, None)

    def _numbers(self, values: Mapping) -> dict:
        names = self._objective.names if self._objective else ()
        return {
            name: float(values[name])
            for name in names
            if isinstance(values.get(name), int | float) and not isinstance(values[name], bool)
        }

    def _ranked(self, known: Mapping) -> bool:
        """Whether a rung can place the trial: it reported an objective or broke a bound."""
        return any(m in known for m in self._objective.metrics) or bool(
            self._objective.violations(known)
        )

    def debug_string(self) -> str:
        sizes = ", ".join(f"{t}: {len(rung)}" for t, rung in self._rungs.items())
        return f"MOASHA: trials per rung {{{sizes}}}"
