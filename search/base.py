"""The ask/tell protocol shared by every searcher, its bookkeeping, and its replay."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from search import replay
from search.calibrate import Calibration
from search.fidelity import Rungs
from search.objective import Objective
from search.pareto import pareto_front
from search.priced import PricedAsks
from spaces import Space

STATE_VERSION = 1
STATUSES = ("completed", "failed", "infeasible", "stopped")


@dataclass(frozen=True)
class Trial:
    """A proposal: `refused` are the refusal records its ask made (configs priced over a
    bound, recorded as observations with their own ids), `costs` its priced costs (None when
    the searcher has no price)."""

    id: str
    config: dict
    refused: tuple[dict, ...] = ()
    costs: dict | None = None


class Searcher(PricedAsks, Rungs, Calibration):
    """Base of every searcher: `ask` proposes, `tell` records, state round-trips as JSON.

    Subclasses implement `_propose()` (a config dict, drawing randomness only from
    `self.rng`) and may override `_observe(record)`, called after each tell, and
    `_extra_state()`/`_load_extra_state()` for what they keep beyond the observations (all of
    it: `record`'s events and `state_dict` hold no more). Every change is replayable:
    `record(change, ...)` makes it and returns a JSON event, `apply(event)` makes it again.

    With a `price`, `ask` proposes only configs that fit the bounds: see `PricedAsks`; rung
    results (`report`, a stopped trial's `fidelity`) and `max_fidelity`: see `Rungs`; the
    price calibrated on what trials measure: see `Calibration`."""

    name = "base"

    def __init__(
        self,
        space: Space,
        *,
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "max",
        seed: int | None = None,
        constraints: Mapping[str, float] | None = None,
        price=None,
        max_fidelity: float | None = None,
    ):
        if not isinstance(space, Space):
            raise ValueError(f"space must be a spaces.Space, got {type(space).__name__}")
        self.space = space
        self.objective = Objective.build(metric, mode, constraints)
        self._set_price(price)
        self._set_fidelity(max_fidelity)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.pending: dict[str, dict] = {}
        self._pending_keys: Counter[str] = Counter()  # canonical keys of the pending configs
        self.observations: list[dict] = []
        self._told_ids: set[str] = set()
        self._seen: set[str] = set()  # canonical keys of every told config
        self._next_id = 0

    # -- protocol ---------------------------------------------------------------------------
    def ask(self) -> Trial:
        """A new trial; its config differs from every pending one where the space allows and,
        with a price, fits every bound (else `NothingFits`, see the class)."""
        config, costs, refused = self._proposal()
        trial = Trial(str(self._next_id), config, tuple(refused), costs)
        self._hold(trial.id, config)
        self._keep_price(trial.id, costs and self.price.known(config))  # screened: None
        return trial

    def _unpending(self) -> dict:
        for _ in range(100):
            config = self._propose()
            if self._pending_keys[self.space.canonical(config)] == 0:
                break
        return config

    def _hold(self, trial_id: str, config: dict) -> None:
        self._next_id = max(self._next_id, int(trial_id) + 1)
        self.pending[trial_id] = config
        self._pending_keys[self.space.canonical(config)] += 1

    def _release(self, trial_id: str) -> dict:
        config = self.pending.pop(trial_id)
        self._pending_keys[self.space.canonical(config)] -= 1
        return config

    def tell(self, trial_id: str, metrics: Mapping | None, *, status=None, fidelity=None) -> dict:
        """Record a result; `None`, or a NaN/inf objective or cost, records a failure.

        `status` may be given as `"stopped"` for a trial a scheduler ended early at `fidelity`
        (its metrics a rung result, out of `usable()`: see `Rungs`), or as `"infeasible"` with
        only the costs of a config rejected before training. Returns the stored record.
        """
        if trial_id not in self.pending:
            known = "already told" if trial_id in self._told_ids else "unknown"
            raise ValueError(
                f"tell: trial id {trial_id!r} is {known}; pending: {sorted(self.pending)}"
            )
        if status is not None and status not in STATUSES:
            raise ValueError(f"tell: status must be one of {list(STATUSES)}, got {status!r}")
        if status == "infeasible" and metrics is not None and self._lacks_objective(metrics):
            return self._tell_rejected(trial_id, metrics)
        rungs, stopped_at = self._rungs_at_end(trial_id, metrics, status=status, fidelity=fidelity)
        if status == "stopped" and (metrics is None or self._lacks_objective(metrics, all=True)):
            metrics = None  # stopped before every objective and cost was measured
        values = None if metrics is None else self.objective.clean(metrics)
        record = {"id": trial_id, "config": self._release(trial_id), "metrics": None}
        record["status"] = "failed"
        if self.rungs.pop(trial_id, None) or rungs:
            record["rungs"] = rungs
        if stopped_at is not None:
            record["fidelity"] = stopped_at
        if values is not None:
            record["metrics"] = values
            record["violation"] = self.objective.violation(values)
            record["status"] = "completed" if record["violation"] == 0 else "infeasible"
        if status in ("stopped", "failed") or (
            status == "infeasible" and record["status"] != "failed"
        ):
            record["status"] = status  # "completed" never hides a broken bound
        return self._record(record)

    def _record(self, record: dict) -> dict:
        self._attach_price(record)
        self.observations.append(record)
        self._told_ids.add(record["id"])
        self._seen.add(self.space.canonical(record["config"]))
        self._observe(record)
        return record

    def _lacks_objective(self, metrics: Mapping, *, all: bool = False) -> bool:
        names = self.objective.names if all else self.objective.metrics
        return any(name not in metrics for name in names)

    def _tell_rejected(self, trial_id: str, metrics: Mapping) -> dict:
        """A config rejected before training on a cost known beforehand: its costs and violation
        are kept; with no objective value it stays out of `usable()`."""
        costs = {k: float(metrics[k]) for k, _ in self.objective.constraints if k in metrics}
        record = {"id": trial_id, "config": self._release(trial_id), "metrics": None}
        record |= {"status": "infeasible", "costs": costs}
        record["violation"] = self.objective.violation(costs)
        return self._record(record)

    def revise(self, trial_id: str, config: Mapping) -> None:
        """A pending trial now runs another config (population-based training clones and
        perturbs configs): its result will be recorded under `config`."""
        self.space.validate(config)
        self._release(trial_id)
        self.rungs.pop(trial_id, None)  # measured on the config it ran before
        self.asked_costs.pop(trial_id, None)  # priced as the config it ran before
        self._hold(trial_id, dict(config))

    def reserve_ids(self, first_free: int) -> None:
        """Never hand out a trial id below `first_free` (ids already used elsewhere)."""
        self._next_id = max(self._next_id, int(first_free))

    def discard(self, trial_id: str) -> None:
        """Forget a pending trial that will never report (its worker was lost in a crash)."""
        if trial_id in self.pending:
            self._release(trial_id)
            self.rungs.pop(trial_id, None)
            self.asked_costs.pop(trial_id, None)

    def add(
        self,
        config: Mapping,
        metrics: Mapping | None,
        *,
        status: str | None = None,
        trial_id: str | None = None,
        fidelity: float | None = None,
        price: Mapping | None = None,
    ) -> dict:
        """Record a result for a config that was not asked (warm start from earlier runs, or
        a state rebuilt from results), told with `status` and `fidelity` as `tell` is.
        `trial_id` keeps the id it had (a number, not yet used); by default the next free one.
        `price`: the raw price its config had when asked (kept as a tell keeps an ask's)."""
        trial_id = self._new_id(config, trial_id, change="add")
        self._hold(trial_id, dict(config))
        self._keep_price(trial_id, price)
        return self.tell(trial_id, metrics, status=status, fidelity=fidelity)

    # -- queries ----------------------------------------------------------------------------
    def usable(self, *, feasible_only: bool = False) -> list[dict]:
        """Observations with full-fidelity metrics (not failed, not stopped)."""
        wanted = ("completed",) if feasible_only else ("completed", "infeasible")
        return [o for o in self.observations if o["status"] in wanted and o["metrics"] is not None]

    def best(self) -> dict | None:
        """The best feasible observation of a single-objective search (None before one)."""
        if len(self.objective.metrics) != 1:
            raise ValueError("best() is for one objective; use front() with several")
        feasible = self.usable(feasible_only=True)
        if not feasible:
            return None
        return min(feasible, key=lambda o: self.objective.signed(o["metrics"])[0])

    def front(self) -> list[dict]:
        """The feasible observations no other feasible one dominates."""
        feasible = self.usable(feasible_only=True)
        rows = [o["metrics"] for o in feasible]
        keep = {id(r) for r in pareto_front(rows, self.objective.metrics, self.objective.modes)}
        return [o for o in feasible if id(o["metrics"]) in keep]

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue: JSON types only, with a version."""
        return {
            "version": STATE_VERSION,
            "searcher": self.name,
            "space": self.space.to_dict(),
            "rng": self.rng.bit_generator.state,
            "next_id": self._next_id,
            "pending": dict(self.pending),
            "observations": list(self.observations),
            "price": replay.price_state(self),
            "extra": self._extra_state(),
            **(self._rung_state() if self.rungs else {}),
            **self._calibration_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"searcher state version {state.get('version')!r} is not {STATE_VERSION}, "
                "the one this release reads"
            )
        if state.get("searcher") != self.name:
            raise ValueError(f"state is of searcher {state.get('searcher')!r}, not {self.name!r}")
        if Space.from_dict(state["space"]) != self.space:
            raise ValueError(
                "state was saved for another space; create the searcher with that space"
            )
        self.rng.bit_generator.state = state["rng"]
        self._next_id = int(state["next_id"])
        self.pending, self._pending_keys = {}, Counter()
        for trial_id, config in state["pending"].items():
            self._hold(str(trial_id), dict(config))
        self.observations = [dict(o) for o in state["observations"]]
        self._refusals_indexed = (0, set())
        self._told_ids = {o["id"] for o in self.observations}
        self._seen = {self.space.canonical(o["config"]) for o in self.observations}
        self.pricing = state.get("price") or {}
        self.rungs = {str(i): [dict(r) for r in rs] for i, rs in state.get("rungs", {}).items()}
        self._load_calibration(state)
        self._load_extra_state(state.get("extra") or {})

    # -- replay -----------------------------------------------------------------------------
    @property
    def next_id(self) -> int:
        """The number the next `ask` takes as its id (at least)."""
        return self._next_id

    def record(self, change: str, /, *args, **kwargs) -> tuple[object, dict]:
        """Make `change` (`ask`, `tell`, `report`, `add`, `revise`, `discard`, `reserve_ids`, called
        with `args`/`kwargs`) and return its result with its event: a JSON dict (`op`, the
        change's arguments, `told` for a tell's or add's status) holding whatever the change
        drew, so `apply` makes it again without proposing: an ask's config, the random state
        after a change that drew (`rng`), the extras an ask changed (`extra`)."""
        return replay.record(self, change, args, kwargs)

    def apply(self, event: Mapping) -> None:
        """Make again the change `event` records (`record`'s, or a journal line an earlier
        release wrote), on a searcher in the state the change was made in: after the same
        events, or loaded from a `state_dict` taken there. A tell replayed to another status
        than the one recorded raises ValueError."""
        replay.apply(self, event)

    # -- hooks ------------------------------------------------------------------------------
    def _propose(self) -> dict:
        raise NotImplementedError

    def _priceable(self, config: dict) -> bool:
        """Whether the price applies to `config` (darts's supernet trial is not priced)."""
        return True

    def _observe(self, record: dict) -> None:
        pass

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, extra: Mapping) -> None:
        pass
