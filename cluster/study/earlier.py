"""Earlier studies a new study reads before its first trial: `warm_start` folders (their trials
seed the searcher, `cluster.study.warm`) and `calibrate_from` folders (their priced and measured
trials start the price calibration).

Calibration carried over: `calibrate_from: [studies/arch]` names study folders whose trials were
priced and then measured on this machine (a row with its raw `price` and the costs its trial
measured, at its end or before training). Their measured / priced ratios are the study price's
`ratios` (`search.Price`), so the new study's first trials are priced as the earlier study's last
were instead of by the few ratios a fresh study has (the largest below 5, then the second
largest, covering (n - 1) / (n + 1) of trials near a bound). A study that compresses the best
model of an architecture search (searching one after the other) prices near the bound from its
first ask. An earlier study must time latency as this one does (runtime, device server, batch,
threads, repeats): a ratio from another runtime says nothing here, and the study is refused with
the difference named. Only an earlier study's own trials count (not its warm rows, not what it
was calibrated from)."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.study import results, storage, warm
from cluster.study.config import Study
from cluster.study.errors import ConfigError
from cluster.study.results import PRICE, REFUSED
from search.calibrate import ratios
from trainers.settings import COST_METRICS, MEASURED_AT_START

TIMING = ("latency_batch", "latency_threads", "latency_repeats", "runtime")


def check(study: Study) -> None:
    """Raise `ConfigError` unless every earlier study `study` names loads: each `warm_start`
    folder holds a study with results whose parameters have the names of `study`'s (ranges may
    differ), and each `calibrate_from` folder one with results timed as `study` times."""
    space = study.space()
    for folder in study.warm_start:
        other = _source(study, folder, "warm_start").space()
        if set(space.params) != set(other.params):
            phrases = "; ".join(warm.space_differences(space, other))
            raise ConfigError(f"warm_start: the space of {folder!r} is not this study's: {phrases}")
        _results(folder, "warm_start")
    calibration_ratios(study)


def calibration_ratios(study: Study) -> dict[str, list[float]]:
    """Measured / priced per bounded cost over the trials of `study`'s `calibrate_from`
    studies, in folder and trial order (`search.calibrate.ratios`); raises `ConfigError` naming
    a folder that holds no study, no results, or one timed otherwise."""
    bounds = [name for name in study.constraints if name in COST_METRICS]
    records = []
    for folder in study.calibrate_from:
        other = _source(study, folder, "calibrate_from")
        changed = _timing_differences(study, other)
        if changed:
            raise ConfigError(
                f"calibrate_from: {folder!r} timed latency otherwise: {'; '.join(changed)}"
            )
        finals = [row for row in _results(folder, "calibrate_from").to_pylist() if row["final"]]
        for row in sorted(finals, key=lambda row: results.trial_key(row["trial"])):
            if row.get(PRICE) and not (row.get(REFUSED) or row.get(warm.WARM_FROM)):
                record = {"price": json.loads(row[PRICE]), "metrics": _measured(row, bounds)}
                records.append(record | {"status": row["status"]})
    return ratios(records)


def _source(study: Study, folder: str, key: str) -> Study:
    """The earlier study in `folder` (not `study`'s own), without its own earlier studies."""
    if Path(folder) == Path(study.dir).expanduser().resolve():
        raise ConfigError(f"{key}: {folder!r} is this study's own folder")
    saved = storage.saved_study(folder)
    if saved is None:
        raise ConfigError(f"{key}: {folder!r} holds no study (no {storage.STUDY_FILE})")
    try:
        return Study.from_dict({**saved, "warm_start": [], "calibrate_from": []}, here=False)
    except ConfigError as error:
        raise ConfigError(f"{key}: the study in {folder!r} no longer loads: {error}") from error


def _results(folder: str, key: str):
    try:
        return results.load(folder, every_step=True)
    except ValueError as error:
        raise ConfigError(f"{key}: {folder!r} has no results yet") from error


def _measured(row: dict, names) -> dict:
    """The costs `names` a final row's trial measured: at its end, else before training."""
    early = {name: row.get(MEASURED_AT_START.get(name, name)) for name in names}
    return {name: early[name] if row.get(name) is None else row[name] for name in names}


def _timing_differences(study: Study, other: Study) -> list[str]:
    """How `other` times latency unlike `study`, one phrase each (empty: alike)."""
    mine, theirs = study.trial_settings().cost, other.trial_settings().cost
    changed = [
        f"{name} {getattr(theirs, name)!r} there, {getattr(mine, name)!r} here"
        for name in TIMING
        if getattr(theirs, name) != getattr(mine, name)
    ]
    if study.latency != other.latency:
        changed.append(f"latency {other.latency!r} there, {study.latency!r} here")
    return changed
