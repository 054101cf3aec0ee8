"""Searchers as pure ask/tell objects. Imports neither torch nor ray."""

from __future__ import annotations

import inspect
import re

from search.base import STATUSES, Objective, Searcher, Trial
from search.basic import GridSearcher, RandomSearcher
from search.bo import BayesSearcher
from search.darts import DartsSearcher
from search.errors import Exhausted, NothingFits, Unpriced
from search.evolution import EvolutionSearcher
from search.forest import ForestSearcher
from search.pareto import hypervolume, non_dominated, pareto_front
from search.price import PRICE_CALLS, PRICE_SECONDS, Price
from search.replay import CHANGES, plain
from search.rl import ControllerSearcher
from spaces.util import did_you_mean

COMMON = (
    "metric",
    "mode",
    "seed",
    "constraints",
    "price",
    "max_fidelity",
)  # every searcher's arguments
SEARCHERS = {
    "random": RandomSearcher,
    "grid": GridSearcher,
    "bo": BayesSearcher,
    "evolution": EvolutionSearcher,
    "forest": ForestSearcher,
    "rl": ControllerSearcher,
    "darts": DartsSearcher,
}


def create(
    name: str,
    space,
    *,
    metric,
    mode="max",
    seed=None,
    constraints=None,
    price=None,
    max_fidelity=None,
    **options,
):
    """A searcher from the registry: `create("bo", space, metric="val_acc", mode="max")`.

    `metric`/`mode` may be lists for several objectives; `constraints` maps a reported
    metric to its upper bound; `price` (a `Price`, or a `config -> {cost: value}` callable)
    prices a config's costs before it is proposed (see `Searcher`); `max_fidelity` is the full
    fidelity (a study's epochs) that rung results are below (see `search.fidelity.Rungs`);
    `options` go to the searcher (see its class).
    """
    if name not in SEARCHERS:
        hint = did_you_mean(name, SEARCHERS)
        raise ValueError(f"unknown searcher {name!r}{hint}; allowed: {sorted(SEARCHERS)}")
    cls = SEARCHERS[name]
    allowed = searcher_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"searcher {name!r} has no option {unknown}; its options: {allowed}")
    common = {"metric": metric, "mode": mode, "seed": seed, "constraints": constraints}
    return cls(space, **common, price=price, max_fidelity=max_fidelity, **options)


def searcher_options(name: str) -> list[str]:
    """The option names `create(name, ...)` accepts beyond the common ones."""
    return list(option_defaults(name))


def option_defaults(name: str) -> dict:
    """`{option: default}` for the options of searcher `name`."""
    params = inspect.signature(SEARCHERS[name].__init__).parameters
    return {
        p.name: p.default
        for p in params.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in COMMON
    }


def option_meaning(name: str, option: str) -> str:
    """What `option` of searcher `name` does, as its class docstring says (`` `option` (...)``)."""
    text = " ".join((SEARCHERS[name].__doc__ or "").split())
    found = re.search(rf"`{option}` \(((?:[^()]|\([^()]*\))*)\)", text)
    return found.group(1) if found else ""


__all__ = [
    "CHANGES",
    "SEARCHERS",
    "STATUSES",
    "BayesSearcher",
    "ControllerSearcher",
    "DartsSearcher",
    "EvolutionSearcher",
    "Exhausted",
    "NothingFits",
    "Unpriced",
    "PRICE_CALLS",
    "PRICE_SECONDS",
    "Price",
    "ForestSearcher",
    "GridSearcher",
    "Objective",
    "RandomSearcher",
    "Searcher",
    "Trial",
    "create",
    "option_defaults",
    "option_meaning",
    "hypervolume",
    "non_dominated",
    "pareto_front",
    "plain",
    "searcher_options",
]
