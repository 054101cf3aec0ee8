"""A study's price: the costs its trials check before training (`measure_costs`: the trial's own
cost function and settings: runtime, repeats, batch), measured on the driver or, in a study on
Ray, where its trials run (`cluster.raytune.pricer`), so the searcher proposes only configs that
fit the study's bounds (`search.Price`). A config refused on its price is a row of its own
(`refused`, status `infeasible`, final, its costs and violations, no accuracy), never a trial: it
uses up none of the study's `trials:`. The searcher calibrates the price on what its trials
measure (`search.calibrate`: from the first trial priced and measured, before training too,
prices are scaled by a conformal quantile of measured / priced), so a refused row's costs, and
the costs a trial is given, are the calibrated ones; a refused row and a trial's final row keep
the raw price too (`PRICE`), so a searcher rebuilt from the rows calibrates as the lost one did."""

from __future__ import annotations

import json
import math
import time

import search
from cluster.study import earlier, judge
from cluster.study.config import Study
from cluster.study.errors import ConfigError
from cluster.study.results import PRICE, REFUSED
from cluster.study.rows import make_row
from trainers.settings import COST_METRICS

# the compression switches a price's twin turns off (`uncompressed`)
COMPRESSION_SWITCHES = tuple(
    f"compress.{name}" for name in ("prune", "neuron_prune", "weight_prune", "quantize")
)
# A study stops once its searcher refused more than this many configs per trial it asked,
# beyond what its first trial may take (it knows nothing of where configs fit yet)
REFUSALS_PER_TRIAL, FIRST_TRIAL_REFUSALS = 50, 200
# A study timing latency on a device server screens configs after this many exact prices
SCREEN_AFTER = 20


def study_price(study: Study, *, settings=None, shape=None, measure=None) -> search.Price | None:
    """The price of `study`'s configs, or None where it has none: a study with its own
    trainable, or without a bound on a cost known before training (`COST_METRICS`). `settings`:
    the trial's (default `study.trial_settings()`; a runner passes them with its device
    server's latency source bound); `shape`: the data's `(in_shape, num_classes)` (default:
    the data loaded when first priced). `measure(config) -> costs`: measures in place of
    `measure_costs` here, on the driver (the study runner's measures on a Ray actor,
    `cluster.raytune.pricer`). Cached by the architecture and compression keys (training
    hyperparameters change no cost). A config that cannot be measured is unpriced (`{}`): its
    trial measures it and says why. With a device server (`settings`' latency source), each
    exact price is a round trip: past `SCREEN_AFTER` of them a learned model screens configs
    first (`search.Price`'s `screen`) and prices exactly only those near a bound. The pairs of
    the study's `calibrate_from` studies start its calibration (`cluster.study.earlier`)."""
    bounds = [name for name in study.constraints if name in COST_METRICS]
    if study.trainable or not bounds:
        return None
    settings = settings or study.trial_settings()
    known = [] if shape is None else [tuple(shape)]

    def here(config: dict) -> dict:
        if not known:
            data = study.check_data()
            known.append((data.in_shape, data.num_classes))
        return measure_costs(config, settings=settings, shape=known[0])

    def costs(config: dict) -> dict:
        try:
            measured = (measure or here)(config)
        except search.Unpriced:
            raise  # unpriced this once (the Ray pricer's timeout): not cached
        except Exception:  # noqa: BLE001 - any failure to measure is the trial's to report
            return {}
        return {k: float(measured[k]) for k in bounds if _finite(measured.get(k))}

    keys = [key for key in study.space().params if key.partition(".")[0] != "train"]
    screen = SCREEN_AFTER if settings.cost.latency_source is not None else None
    priced_objective = any(metric in COST_METRICS for metric, _ in study.objectives)
    twin = None if priced_objective else uncompressed(study.space())
    ratios = earlier.carried_ratios(study)  # `calibrate_from`'s, kept when the study was made
    return search.Price(costs, keys=keys, screen=screen, twin=twin, ratios=ratios)


def uncompressed(space):
    """`config -> config` with its pruning and quantization switched off (distillation kept),
    a `search.Price`'s `twin`; None for a space that cannot switch them off."""
    switches = [
        key
        for key in COMPRESSION_SWITCHES
        if key in space.params and False in getattr(space[key], "options", ())
    ]
    if not switches:
        return None

    def twin(config: dict) -> dict:
        plain = {**config, **{key: False for key in switches if key in config}}
        return {key: value for key, value in plain.items() if space.is_active(key, plain)}

    return twin


def measure_costs(config: dict, *, settings, shape) -> dict:
    """The costs of `config` known before training as its trial measures them
    (`trainers.estimate_cost` with the trial's `settings`, its runtime, batch and repeats);
    `shape`: the data's `(in_shape, num_classes)`."""
    from trainers.estimate import estimate_cost

    in_shape, num_classes = shape
    repeats = settings.cost.latency_repeats  # the trial's: priced as it is measured
    return estimate_cost(
        config, settings, in_shape=in_shape, num_classes=num_classes, repeats=repeats
    )


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def priced_costs(trial, constraints) -> dict | None:
    """The priced costs of an asked `trial` when they hold every cost `constraints` bound (its
    trial then need not estimate them again), else None."""
    costs = dict(getattr(trial, "costs", None) or {})
    needed = [k for k in constraints if k in COST_METRICS]
    return costs if needed and all(k in costs for k in needed) else None


def spent(before: dict, after: dict) -> dict:
    """A row's pricing columns: the calls and seconds between two `Searcher.pricing`s."""
    return {
        "price_calls": after["calls"] - before["calls"],
        "price_s": after["seconds"] - before["seconds"],
    }


def refusal_rows(refused, *, study: Study, node: str = "driver") -> list[dict]:
    """The rows of an ask's refusals (`search.Trial.refused`, `NothingFits.refused`), written
    as it makes them: their costs at its calibration, their raw price (`PRICE`) too."""
    rows = []
    for record in refused:
        costs = dict(record.get("costs") or {})
        over = judge.violations(costs, study.constraints)  # the study's one feasibility rule
        values = {**costs, REFUSED: True, "violations": json.dumps(over), "node": node}
        values[PRICE] = record.get("price")  # raw: scaled again by whoever reads it back
        values["error"] = "refused on price: " + _over_text(costs, study.constraints)
        rows.append(
            make_row(
                values,
                study=study.name,
                trial=record["id"],
                status="infeasible",
                config=record["config"],
                final=True,
            )
        )
    return rows


def _over_text(costs, constraints) -> str:
    over = [k for k, limit in constraints.items() if costs.get(k, -math.inf) > limit]
    return ", ".join(f"{k} {costs[k]:.4g} > {constraints[k]:.4g}" for k in over)


def check_refusals(searcher: search.Searcher, *, asked: int, study: Study) -> None:
    """Raise `ConfigError` when the searcher refused more than `REFUSALS_PER_TRIAL` configs on
    their price per trial asked (`asked`, warm trials left out) beyond the
    `FIRST_TRIAL_REFUSALS` its first may take: the space barely fits the bounds. The message
    names the bounds and the cheapest config priced (at the calibration of now)."""
    refused = len(searcher.observations) - searcher.trained()
    if refused <= REFUSALS_PER_TRIAL * asked + FIRST_TRIAL_REFUSALS:
        return
    least = cheapest(searcher.refusals(), study)
    raise ConfigError(
        f"study {study.name!r} stopped: its searcher refused {refused} configs on their "
        f"price for the {asked} trials it asked (more than {FIRST_TRIAL_REFUSALS} for a "
        f"first, {REFUSALS_PER_TRIAL} a trial after): few models of the space fit "
        f"{dict(study.constraints)}; {least}. Loosen the bound, or narrow the space to "
        "smaller models"
    )


class AskLater(Exception):
    """No config fit within one pricing budget of wall time of asking again: the caller asks
    later (Tune polls its searcher again; a service client is told `UNAVAILABLE`), so no ask
    holds Tune's event loop or the study's lock for long."""


def ask_within_refusals(
    searcher: search.Searcher, *, asked: int, study: Study, refused, each=None
) -> search.Trial:
    """`searcher.ask()`, asked again while an ask spends its pricing budget (its refusals
    taught the searcher where configs fit), for at most the price's `seconds` of wall time
    (then `AskLater`), and until `check_refusals` raises `ConfigError`; `refused(records)`
    gets each ask's refusals, `each()` (if given) is called before each ask. Raises
    `search.NothingFits` when the searcher proposes nothing that fits within a budget, or
    runs out of configs."""
    started = time.monotonic()
    while True:
        check_refusals(searcher, asked=asked, study=study)
        if each is not None:
            each()
        try:
            trial = searcher.ask()
        except search.NothingFits as error:
            refused(error.refused)
            if not error.spent:
                raise
            if time.monotonic() - started > searcher.price.seconds:
                raise AskLater(str(error)) from error
        else:
            refused(trial.refused)
            return trial


def cheapest(refused: list[dict], study: Study) -> str:
    """`the cheapest model priced: ...` among refusal records (least violation)."""
    best = min(refused, key=lambda o: o.get("violation") or 0.0)
    costs = best.get("costs") or {}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in costs.items())
    return f"the cheapest model priced has {shown} ({_over_text(costs, study.constraints)})"


def stopped(error: search.NothingFits, *, study: Study) -> ConfigError:
    """The study's stop for a searcher that found no fitting config within its pricing budget."""
    return ConfigError(f"study {study.name!r} stopped: {error}")
