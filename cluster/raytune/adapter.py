"""Paretune's searchers as a Ray Tune search algorithm: `ParetuneSearch`, for any `tune.Tuner`.
The study runner uses the same class over its `Recorder` (Parquet rows, the study's store)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ray.tune.search import Searcher as TuneSearcher

import search
from cluster.raytune.ledger import Ledger, TunerLedger
from cluster.study.price import AskLater
from search import Exhausted
from spaces import Space
from spaces.util import write_json

STATE_VERSION = 1


class ParetuneSearch(TuneSearcher):
    """A paretune searcher (`search.create(name, space, ...)`) as a Ray Tune search algorithm:

        tune.Tuner(train, tune_config=tune.TuneConfig(
            search_alg=ParetuneSearch("bo", space, metric="val_acc", mode="max",
                                      constraints={"latency_ms": 5.0}),
            scheduler=ASHAScheduler(metric="val_acc", mode="max"), num_samples=40))

    `searcher` is a name of `search.SEARCHERS` (then `options` go to it), a `search.Searcher`
    built already, or a `Ledger` over one (the study runner's `Recorder`); `space` a
    `spaces.Space` or a study's `space:` mapping.
    `metric`/`mode` may be lists for several objectives, or None to take `TuneConfig`'s.
    Objectives and `constraints` (upper bounds) are read from each trial's last reported
    result when it ends: a trial that errors is `failed`, one a scheduler or stopper ended
    before its function returned is `stopped` (unless it reached `max_t` iterations, the
    scheduler's `max_t`), one that never reported an objective `failed`. Works under Tune's
    `ConcurrencyLimiter`; its state (JSON: the searcher's `state_dict` and Tune's trial ids)
    is saved with Tune's experiment checkpoints, so `Tuner.restore` continues it.
    `price` (a `search.Price`, or `config -> {cost: value}`; with `constraints`) prices each
    config on the driver before it is suggested: Tune never runs one whose price breaks a
    bound (each refusal is an observation of the searcher, not a trial of Tune), and the
    search ends (`FINISHED`) when nothing fits within a suggestion's pricing budget."""

    def __init__(
        self,
        searcher: str | search.Searcher | Ledger = "bo",
        space: Space | Mapping | None = None,
        *,
        metric: str | list[str] | None = None,
        mode: str | list[str] | None = None,
        constraints: Mapping[str, float] | None = None,
        seed: int | None = None,
        max_t: int | None = None,
        price=None,
        **options,
    ):
        ledger = searcher if isinstance(searcher, Ledger) else None
        searcher = searcher.searcher if ledger else searcher
        if isinstance(searcher, search.Searcher):
            metric, mode = list(searcher.objective.metrics), list(searcher.objective.modes)
        elif not isinstance(space, Space):
            space = _space(space)
        first = metric if metric is None or isinstance(metric, str) else metric[0]
        first_mode = mode if mode is None or isinstance(mode, str) else mode[0]
        super().__init__(metric=first, mode=(first_mode or "max") if first else None)
        self._spec = {"name": searcher, "space": space, "constraints": constraints, "seed": seed}
        self._spec |= {"options": options, "mode": mode, "max_t": max_t, "price": price}
        self.ledger = None  # not `.searcher`: Tune walks that attribute
        self.max_concurrent = 0  # 0: no limit of its own
        if isinstance(searcher, search.Searcher):
            self.ledger = ledger or TunerLedger(searcher, max_t=max_t)
        elif metric is not None:
            self._build(metric, mode or "max")

    def _build(self, metric, mode) -> None:
        spec = self._spec
        created = search.create(
            spec["name"],
            spec["space"],
            metric=metric,
            mode=mode,
            seed=spec["seed"],
            constraints=spec["constraints"],
            price=spec["price"],
            max_fidelity=spec["max_t"],  # rungs below it teach the searcher
            **spec["options"],
        )
        self.ledger = TunerLedger(created, max_t=spec["max_t"])

    def _ready(self):
        if self.ledger is None:
            raise ValueError(
                "ParetuneSearch has no metric: pass ParetuneSearch(..., metric=..., mode=...) "
                "or tune.TuneConfig(metric=..., mode=...)"
            )
        return self.ledger

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if self.ledger is None and metric:
            self._metric, self._mode = metric, mode or "max"
            self._build(metric, mode or "max")
        return True  # `config` holds fixed values only; Tune merges them into each suggestion

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max_concurrent
        return True  # Tune's ConcurrencyLimiter then leaves the limit to us

    def suggest(self, trial_id: str):
        ledger = self._ready()
        if self.max_concurrent and len(ledger.ids) >= self.max_concurrent:
            return None  # Tune asks again when a trial ends
        try:
            trial = ledger.ask(trial_id)
        except AskLater:
            return None  # Tune asks again on a later turn of its loop
        except Exhausted:
            trial = None
        return TuneSearcher.FINISHED if trial is None else dict(trial.config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._ready().result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self._ready().complete(trial_id, result, error=error)

    @property
    def paretune(self) -> search.Searcher:
        """The paretune searcher inside: `best()`, `front()`, `observations`."""
        return self._ready().searcher

    def get_state(self) -> dict:
        ledger = self._ready()
        return {
            "version": STATE_VERSION,
            "searcher": ledger.searcher.state_dict(),
            **ledger.state(),
        }

    def set_state(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"ParetuneSearch state version {state.get('version')!r} unknown")
        ledger = self._ready()
        ledger.searcher.load_state_dict(state["searcher"])
        ledger.restore(state)

    def save(self, checkpoint_path: str) -> None:
        write_json(Path(checkpoint_path), self.get_state())

    def restore(self, checkpoint_path: str) -> None:
        self.set_state(json.loads(Path(checkpoint_path).read_text()))


def tune_searcher(recorder) -> ParetuneSearch:
    """The runner's search algorithm: `ParetuneSearch` over its `Recorder` (Parquet rows, the
    study's store) instead of a `TunerLedger`."""
    return ParetuneSearch(recorder)


def _space(space) -> Space:
    if not isinstance(space, Mapping):
        raise ValueError(
            f"space must be a spaces.Space or a mapping as a study's `space:`, got {space!r}"
        )
    from cluster.study.custom import parse_space

    return parse_space(space)
