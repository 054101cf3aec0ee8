"""Searchers as pure ask/tell objects. Imports neither torch nor ray."""

from __future__ import annotations

import difflib
import inspect

from search.base import STATUSES, Exhausted, Objective, Searcher, Trial
from search.basic import GridSearcher, RandomSearcher
from search.bo import BayesSearcher
from search.evolution import EvolutionSearcher
from search.pareto import hypervolume, non_dominated, pareto_front
from search.rl import ControllerSearcher

SEARCHERS = {
    "random": RandomSearcher,
    "grid": GridSearcher,
    "bo": BayesSearcher,
    "evolution": EvolutionSearcher,
    "rl": ControllerSearcher,
}


def create(name: str, space, *, metric, mode="max", seed=None, constraints=None, **options):
    """A searcher from the registry: `create("bo", space, metric="val_acc", mode="max")`.

    `metric`/`mode` may be lists for several objectives; `constraints` maps a reported
    metric to its upper bound; `options` go to the searcher (see its class).
    """
    if name not in SEARCHERS:
        close = difflib.get_close_matches(str(name), SEARCHERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown searcher {name!r}{hint}; allowed: {sorted(SEARCHERS)}")
    cls = SEARCHERS[name]
    allowed = searcher_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"searcher {name!r} has no option {unknown}; its options: {allowed}")
    return cls(space, metric=metric, mode=mode, seed=seed, constraints=constraints, **options)


def searcher_options(name: str) -> list[str]:
    """The option names `create(name, ...)` accepts beyond the common ones."""
    params = inspect.signature(SEARCHERS[name].__init__).parameters
    return [
        p.name
        for p in params.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in ("metric", "mode", "seed", "constraints")
    ]


__all__ = [
    "SEARCHERS",
    "STATUSES",
    "BayesSearcher",
    "ControllerSearcher",
    "EvolutionSearcher",
    "Exhausted",
    "GridSearcher",
    "Objective",
    "RandomSearcher",
    "Searcher",
    "Trial",
    "create",
    "hypervolume",
    "non_dominated",
    "pareto_front",
    "searcher_options",
]
