"""Bringing a study back from its folder: the saved study, its searcher, and the searcher put
in line with the Parquet files (which are the truth) after a crash or a lost state file."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import search
from cluster.study import earlier, judge, results, storage, warm
from cluster.study.config import ConfigError, Study
from cluster.study.results import PRICE, REFUSED
from cluster.study.rows import config_of
from cluster.study.store import RUNNER_TRIALS, StateUnreadable, StudyStore
from spaces.util import write_json
from trainers.settings import MEASURED_AT_START, max_steps

STUDY_FILE = storage.STUDY_FILE
# The status of a trial cut off by a stopped or killed run: it never counts in the budget.
INTERRUPTED = "interrupted"
CUT_OFF = "cut off when its run stopped; the resume that marked it runs the rest of the budget"


def make_searcher(study: Study, *, price: search.Price | None = None) -> search.Searcher:
    """The study's searcher; `price`: `cluster.study.price.study_price`'s, on a driver."""
    metrics = [m for m, _ in study.objectives]
    modes = [mode for _, mode in study.objectives]
    return search.create(
        study.searcher,
        study.space(),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        seed=study.seed,
        constraints=dict(study.constraints) or None,
        price=price,
        max_fidelity=max_steps(study.trial_settings(), compress=bool(study.compress)),
        **study.searcher_options,
    )


def told_as(result: dict, status: str, names) -> tuple[dict | None, dict]:
    """What to tell the searcher of a finished trial: `(metrics, {"status": ...})`. A trial
    rejected before training is told `infeasible` with its costs only; a stopped one `stopped`
    with the metrics it has, a cost it never measured at its end as measured before training
    (`MEASURED_AT_START`: with its price, a calibration pair), and its training iteration as
    its fidelity (a rung result: see `search.fidelity.Rungs`); a failed one, or one without
    its metrics, None."""
    if status == "infeasible":
        present = {k: v for k, v in result.items() if isinstance(v, int | float) and v == v}
        return present, {"status": "infeasible"}
    read = _before(result) if status == "stopped" else result
    values = {n: read.get(n) for n in names}
    if status == "stopped":
        present = {n: v for n, v in values.items() if _number(v) and v == v}
        fidelity = result.get("training_iteration", result.get("step"))
        told = {"status": "stopped"} | ({"fidelity": fidelity} if _positive(fidelity) else {})
        return present or None, told
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values.values()):
        values = None
    return (values, {}) if status == "completed" else (None, {})


def rung_of(result: Mapping, searcher: search.Searcher) -> tuple[dict, float] | None:
    """An epoch's report as `searcher.report` takes it, `(metrics, fidelity)`: the numbers it
    holds of the objectives and costs (a cost measured before training as `told_as` reads it),
    at its training iteration; None where the searcher reads no rungs (no `max_fidelity`), an
    objective is missing, or it is not below the full fidelity (the final result is told)."""
    fidelity, top = result.get("training_iteration"), searcher.max_fidelity
    result = _before(result)
    metrics = {n: result[n] for n in searcher.objective.names if _number(result.get(n))}
    if top is None or not _positive(fidelity) or fidelity >= top:
        return None
    return (metrics, float(fidelity)) if set(searcher.objective.metrics) <= set(metrics) else None


def _before(result: Mapping) -> Mapping:
    """`result` with the costs it lacks as its trial measured them before training."""
    early = {n: result.get(c) for n, c in MEASURED_AT_START.items() if not _number(result.get(n))}
    return {**result, **{name: v for name, v in early.items() if _number(v)}}


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(value) -> bool:
    return _number(value) and value > 0


def final_rows(table: pa.Table | None, constraints=None) -> dict[str, dict]:
    """Each finished trial's final row, by trial id, its status as `judge.status_of` gives it
    under `constraints`."""
    if table is None:
        return {}
    finals = [row for row in table.to_pylist() if row.get("final")]
    return {r["trial"]: r | {"status": judge.status_of(r, constraints or {})} for r in finals}


def mark_interrupted(folder: Path, table: pa.Table | None, *, held) -> list[str]:
    """Write an `interrupted` row (its `error` saying why; not `final`: the trial never ended,
    and the searcher forgot it) after the last row of each trial still `running` that no one
    holds (`held`: the trial ids still pending in the searcher, asked by a service client);
    returns their ids."""
    if table is None:
        return []
    latest = results.last_rows(table)
    open_ = pc.and_(
        pc.invert(pc.fill_null(latest["final"], False)), pc.equal(latest["status"], "running")
    )
    cut = [row for row in latest.filter(open_).to_pylist() if row["trial"] not in held]
    if cut:
        writer = results.ResultWriter(folder, table.schema, interval=math.inf, compact=False)
        now = datetime.now(UTC)
        for row in cut:
            writer.add(row | {"status": INTERRUPTED, "final": False, "error": CUT_OFF, "time": now})
        writer.flush()
    return [row["trial"] for row in cut]


def first_free_id(table: pa.Table | None) -> int:
    """One past the largest numeric trial id in any row (finished or not)."""
    ids = [] if table is None else table["trial"].unique().to_pylist()
    return max((int(t) + 1 for t in ids if t and t.isdigit()), default=0)


def reconcile(
    searcher: search.Searcher, finals: dict[str, dict], *, runner_trials: set[str] | None = None
) -> int:
    """Bring a loaded searcher in line with the final rows; returns the finished trials, warm
    start rows not counted. A pending trial with a final row is told it; one without is
    forgotten when a runner asked it (its worker is gone; `runner_trials` None: any) and kept
    for its service client otherwise; a final row the searcher never heard of is added under
    its own id and status, with its raw price (`PRICE`: the searcher's calibration pairs)."""
    names = searcher.objective.names
    for trial in list(searcher.pending):
        if trial in finals:
            row = finals[trial]
            metrics, status = told_as(row, row["status"], names)
            searcher.tell(trial, metrics, **status)
        elif runner_trials is None or trial in runner_trials:
            searcher.discard(trial)
    told = {o["id"] for o in searcher.observations}
    for trial, row in sorted(finals.items(), key=lambda item: results.trial_key(item[0])):
        if trial in told:
            continue
        if row.get(REFUSED):  # refused on price: a refusal again, never a trial
            costs = {k: row[k] for k, _ in searcher.objective.constraints if row.get(k) is not None}
            searcher.add_refused(config_of(row), costs, price=_price(row), trial_id=trial)
            continue
        metrics, status = told_as(row, row["status"], names)
        price = None if row.get(warm.WARM_FROM) else _price(row)  # another study's setup
        searcher.add(config_of(row), metrics, trial_id=trial, price=price, **status)
    # warm trials and refusals use none of the budget
    return sum(not (row.get(warm.WARM_FROM) or row.get(REFUSED)) for row in finals.values())


def _price(row: Mapping) -> dict | None:
    """The raw price a row keeps (None in rows from before it was kept)."""
    text = row.get(PRICE)
    return json.loads(text) if text else None


def open_store(
    study: Study, folder: Path, table: pa.Table | None, *, price: search.Price | None = None
) -> tuple[StudyStore, int]:
    """The study's store with its searcher (priced by `price`) reconciled with `table`; returns
    it and the number of finished trials. A corrupt or truncated `searcher.json` is set aside
    and the searcher rebuilt from the Parquet rows, with a warning naming what could not be
    recovered."""
    store = StudyStore(folder, make_searcher(study, price=price))
    table = warm.seed(study, store.searcher, folder, table)  # earlier studies' rows, once
    finals = final_rows(table, study.constraints)
    owned = store.runner_trials()
    try:
        with store.locked() as searcher:  # loads the saved state, if any
            done = reconcile(searcher, finals, runner_trials=owned)
            mark_interrupted(folder, table, held=set(searcher.pending))
            store.compact()  # a resume starts from one snapshot, its journal empty
            return store, done
    except StateUnreadable as error:
        kept = store.set_aside()
        warnings.warn(
            f"{error}; moved to {kept.name}. "
            f"The searcher was rebuilt from the {len(finals)} finished trials in Parquet; "
            "not recovered: its random state, its own state beyond the trials "
            "(e.g. an RL controller's weights are retrained from them), and trials that "
            "were running",
            RuntimeWarning,
            stacklevel=2,
        )
        store = StudyStore(folder, make_searcher(study, price=price))
        with store.locked() as searcher:
            searcher.reserve_ids(first_free_id(table))  # lost trials' rows keep their ids
            done = reconcile(searcher, finals, runner_trials=owned)
            mark_interrupted(folder, table, held=set(searcher.pending))
            return store, done


def prepare_dir(study: Study, *, resume: bool) -> Path:
    """The study folder, checked writable; a new study refuses a folder holding another one.
    A study on a URI is staged first (`storage.staged`): never a local folder named `s3:`."""
    if storage.is_uri(study.dir):
        raise ConfigError(f"study {study.dir!r} is on a URI: run it through storage.staged")
    folder = Path(study.dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"study folder {str(folder)!r} is not writable: {error}") from error
    saved = folder / STUDY_FILE
    if saved.exists() and not resume:
        raise ConfigError(
            f"{str(folder)!r} already holds a study: `paretune resume {folder}` continues it, "
            "or choose another dir"
        )
    if not saved.exists():
        earlier.check(study, folder)
        (folder / RUNNER_TRIALS).touch()
        write_json(saved, study.to_dict())
    if resume:
        results.compact(folder)  # the small parts a stopped run left, merged before they are read
    return folder


def load_study(study_dir: str | Path, *, here: bool = False) -> Study:
    """The study saved in `study_dir` (its `study.json`; a folder or a URI). `here`: checked as
    for a run on this machine (its `data_path`, token file and trainable there); without, as
    the read-only commands need it, where these may be absent."""
    saved = storage.saved_study(study_dir)
    if saved is None:
        raise ConfigError(f"no study in {str(study_dir)!r} (no {STUDY_FILE})")
    saved |= {"dir": study_dir} if storage.is_uri(study_dir) else {}
    return Study.from_dict(saved, here=here)
