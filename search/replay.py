"""How a searcher's changes are recorded as JSON events and made again (`Searcher.record`,
`Searcher.apply`, which document the contract)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping

import numpy as np

from search.errors import NothingFits

# the changes `Searcher.record` makes, and the `op` of each one's event
CHANGES = {
    "ask": "ask",
    "tell": "tell",
    "report": "report",
    "add": "add",
    "revise": "revise",
    "discard": "discard",
    "reserve_ids": "reserve",
}


def plain(value):
    """`json.dumps`'s `default` for what searchers keep: numpy scalars as Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a searcher's state holds {value!r} ({type(value).__name__}), not JSON")


def record(searcher, change: str, args: tuple, kwargs: dict) -> tuple[object, dict]:
    if change not in CHANGES:
        raise ValueError(f"record: change must be one of {list(CHANGES)}, got {change!r}")
    extra, rng = (
        json.dumps(searcher._extra_state(), default=plain),
        searcher.rng.bit_generator.state,
    )
    nothing, priced = None, 0 if searcher.price is None else searcher.price.exact
    try:
        result = getattr(searcher, change)(*args, **kwargs)
    except NothingFits as error:  # the refusals it recorded are a change all the same
        result, nothing = None, error
    event = {"op": CHANGES[change], **_arguments(searcher, change, result, args, kwargs)}
    if change == "ask":
        refused = result.refused if nothing is None else nothing.refused
        if refused:
            event["refused"] = [dict(r) for r in refused]
        if searcher.price is not None:
            event["price"] = price_state(searcher, since=priced)
        if result is not None and result.id in searcher.asked_costs:
            event["costs"] = dict(searcher.asked_costs[result.id])  # its raw price
        now = json.dumps(searcher._extra_state(), default=plain)
        if now != extra:
            event["extra"] = json.loads(now)
    if searcher.rng.bit_generator.state != rng:
        event["rng"] = searcher.rng.bit_generator.state
    if nothing is not None:
        nothing.event = event
        raise nothing
    return result, event


def apply(searcher, event: Mapping) -> None:
    op, trial_id = event.get("op"), event.get("id")
    if op == "ask":
        searcher._restore_refused(event.get("refused", ()))
        if "price" in event:
            searcher.pricing = event["price"]
        if event.get("config") is not None:  # None: the ask raised NothingFits
            searcher._hold(str(trial_id), dict(event["config"]))
        if "costs" in event:
            searcher.asked_costs[str(trial_id)] = dict(event["costs"])
        if "extra" in event:
            searcher._load_extra_state(event["extra"])
    elif op == "tell":
        told = searcher.tell(
            trial_id, event["metrics"], status=event["status"], fidelity=event.get("fidelity")
        )
        _check_told(event, told)
    elif op == "report":
        searcher.report(trial_id, event["metrics"], fidelity=event["fidelity"])
    elif op == "add":
        record = searcher.add(
            event["config"],
            event["metrics"],
            status=event["status"],
            trial_id=trial_id,
            fidelity=event.get("fidelity"),
            price=event.get("costs"),
        )
        _check_told(event, record)
    elif op == "revise":
        searcher.revise(trial_id, event["config"])
    elif op == "discard":
        searcher.discard(trial_id)
    elif op == "reserve":
        searcher.reserve_ids(event["first_free"])
    else:
        raise ValueError(f"apply: unknown event {op!r}; known: {list(CHANGES.values())}")
    if "rng" in event:
        searcher.rng.bit_generator.state = event["rng"]


def price_state(searcher, since: int = 0) -> dict:
    """`searcher.pricing` as its state and an ask's event keep it: with a screen, also the
    exact prices from the `since`th on (`"prices"`), which the screen's fit is restored from."""
    state = searcher.pricing
    if searcher.price is not None and searcher.price.screen is not None:
        state["prices"] = searcher.price.prices(since)
    return state


def _arguments(searcher, change: str, result, args: tuple, kwargs: dict) -> dict:
    """What the event of `change` holds besides its `op` (the keys journals have always had)."""
    given = inspect.signature(getattr(searcher, change)).bind(*args, **kwargs)
    given.apply_defaults()
    given = given.arguments
    if change == "ask":  # (result None: NothingFits)
        return (
            {"id": None, "config": None}
            if result is None
            else {
                "id": result.id,
                "config": dict(result.config),
            }
        )
    if change == "reserve_ids":
        return {"first_free": int(given["first_free"])}
    event = {"id": result["id"] if change == "add" else given["trial_id"]}
    if "config" in given:
        event["config"] = dict(given["config"])
    if change in ("tell", "add", "report"):
        metrics = given["metrics"]
        event["metrics"] = None if metrics is None else dict(metrics)
    if change in ("tell", "add"):
        event |= {"status": given["status"], "told": result["status"]}
    if given.get("fidelity") is not None:  # (tells without one keep the keys they always had)
        event["fidelity"] = float(given["fidelity"])
    if given.get("price"):  # an add's raw price, as an ask's event keeps it
        event["costs"] = dict(given["price"])
    return event


def _check_told(event: Mapping, record: dict) -> None:
    if record["status"] != event["told"]:
        raise ValueError(
            f"apply: trial {event['id']!r} was told {event['told']!r}, "
            f"replayed as {record['status']!r}"
        )
