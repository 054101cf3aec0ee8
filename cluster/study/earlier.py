"""Earlier studies a new study reads before its first trial: `warm_start` folders (their trials
seed the searcher, `cluster.study.warm`) and `calibrate_from` folders, whose trials priced and
then measured on this machine start the study's price calibration (`search.Price`'s `ratios`).
Both are read once, when the study is made: the ratios are kept in the study folder
(`CALIBRATION_FILE`), so a resume, a study service or a study staged from a URI calibrates as
the first run did even where the earlier folders are gone."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.study import results, storage, warm
from cluster.study.config import Study
from cluster.study.errors import ConfigError
from cluster.study.results import PRICE, REFUSED
from search.calibrate import ratios
from spaces.util import write_json
from trainers.settings import COST_METRICS, MEASURED_AT_START

CALIBRATION_FILE = "calibration.json"  # {"sources": [folders], "ratios": {cost: [ratios]}}
TIMING = ("latency_batch", "latency_threads", "latency_repeats", "runtime")


def check(study: Study, folder: Path) -> None:
    """Raise `ConfigError` unless every earlier study `study` names loads: each `warm_start`
    folder holds a study with results whose parameters have the names of `study`'s (ranges may
    differ); each `calibrate_from` folder one timed as `study` times, with trials priced and
    measured (`calibration_ratios`), whose ratios are then written to `folder`."""
    space = study.space()
    for source in study.warm_start:
        other = _source(study, source, "warm_start").space()
        if set(space.params) != set(other.params):
            phrases = "; ".join(warm.space_differences(space, other))
            raise ConfigError(f"warm_start: the space of {source!r} is not this study's: {phrases}")
        _final_rows(source, "warm_start")
    if study.calibrate_from:
        carried = {"sources": list(study.calibrate_from), "ratios": calibration_ratios(study)}
        write_json(folder / CALIBRATION_FILE, carried)


def carried_ratios(study: Study) -> dict[str, list[float]]:
    """The ratios `check` kept in `study`'s folder ({} where it calibrates from no study)."""
    text = storage.read_text(study.dir, CALIBRATION_FILE) if study.calibrate_from else None
    return json.loads(text)["ratios"] if text else {}


def calibration_ratios(study: Study) -> dict[str, list[float]]:
    """Measured / priced per bounded cost over the trials of `study`'s `calibrate_from`
    studies, in folder and trial order (`search.calibrate.ratios`; their warm rows and
    refusals left out); raises `ConfigError` for a study that prices nothing, and naming a
    folder that holds no study, one timed otherwise, or no trial priced and then measured."""
    bounds = [name for name in study.constraints if name in COST_METRICS]
    if study.trainable or not bounds:
        raise ConfigError(
            f"calibrate_from: this study prices nothing to calibrate (it needs a bound on one of "
            f"{sorted(COST_METRICS)} and the built-in trainer)"
        )
    carried: dict[str, list[float]] = {}
    for source in study.calibrate_from:
        other = _source(study, source, "calibrate_from")
        changed = _timing_differences(study, other) if "latency_ms" in bounds else []
        if changed:
            raise ConfigError(
                f"calibrate_from: {source!r} timed latency otherwise: {'; '.join(changed)}"
            )
        found = ratios(_priced_records(_final_rows(source, "calibrate_from"), bounds))
        if not found:
            raise ConfigError(
                f"calibrate_from: {source!r} holds no trial priced and then measured on {bounds}"
            )
        for name, values in found.items():
            carried.setdefault(name, []).extend(values)
    return carried


def _priced_records(rows: list[dict], bounds: list[str]) -> list[dict]:
    """The told records (`search.calibrate.ratios` reads them) of an earlier study's own
    priced trials, in trial order."""
    records = []
    for row in sorted(rows, key=lambda row: results.trial_key(row["trial"])):
        if row.get(PRICE) and not (row.get(REFUSED) or row.get(warm.WARM_FROM)):
            record = {"price": json.loads(row[PRICE]), "metrics": _measured(row, bounds)}
            records.append(record | {"status": row["status"]})
    return records


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


def _final_rows(folder: str, key: str) -> list[dict]:
    try:
        rows = results.load(folder).to_pylist()
    except ValueError as error:
        raise ConfigError(f"{key}: {folder!r} has no results yet") from error
    return [row for row in rows if row.get("final")]


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
    for name in ("latency", "gpus_per_trial"):  # a device server; torch times on the GPU
        if getattr(study, name) != getattr(other, name):
            changed.append(f"{name} {getattr(other, name)!r} there, {getattr(study, name)!r} here")
    return changed
