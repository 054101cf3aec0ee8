"""The study runner: a paretune searcher behind Ray Tune, results to Parquet, crash-safe resume.

The Parquet files are the truth. A trial's final row is flushed before the searcher is told and
its state saved (atomically), so after a crash `resume` tells the searcher whatever reached
Parquet, forgets the trials that never finished, and runs the rest of the budget.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

import search
from cluster import results
from cluster.study import ConfigError, Study
from search.base import Exhausted

STATE_FILE, STUDY_FILE = "searcher.json", "study.json"


def _write_json(path: Path, value) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as file:
        json.dump(value, file)
    os.replace(tmp, path)


def make_searcher(study: Study) -> search.Searcher:
    metrics = [m for m, _ in study.objectives]
    modes = [mode for _, mode in study.objectives]
    return search.create(
        study.searcher,
        study.space(),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        seed=study.seed,
        constraints=dict(study.constraints) or None,
        **study.searcher_options,
    )


def make_scheduler(study: Study):
    from ray.tune import schedulers

    options = dict(study.scheduler_options)
    steps = _max_steps(study)
    if study.scheduler == "fifo":
        return schedulers.FIFOScheduler()
    if study.scheduler == "asha":
        options.setdefault("max_t", steps)
        return schedulers.ASHAScheduler(**options)
    if study.scheduler == "hyperband":
        options.setdefault("max_t", steps)
        return schedulers.HyperBandScheduler(**options)
    if study.scheduler == "median":
        options.setdefault("grace_period", 2)
        return schedulers.MedianStoppingRule(**options)
    raise ConfigError(f"scheduler {study.scheduler!r} is not supported by the runner yet")


def _max_steps(study: Study) -> int:
    settings = study.trial_settings()
    return settings.epochs + settings.finetune_epochs + settings.qat_epochs + 1


def trainable(config: dict, settings) -> None:
    """The Ray Tune function: one report per epoch, then one final row (`final: True`). A trial
    that raises reports `status: failed` with its error text instead of crashing its worker."""
    import ray
    from ray import tune

    from trainers import run_trial

    node = ray.get_runtime_context().get_node_id()

    def report(row):
        tune.report({**row, "node": node, "final": False})

    try:
        result = run_trial(config, report, settings=settings)
    except Exception:  # the study goes on; the row keeps the error
        result = {"status": "failed", "error": traceback.format_exc(limit=6)}
    records = json.dumps(result.pop("records", []))
    violations = json.dumps(result.pop("violations", {}))
    tune.report(
        {**result, "records": records, "violations": violations, "node": node, "final": True}
    )


class Progress:
    """One live line: trials done, running, failed, best feasible so far."""

    def __init__(self, study: Study):
        self.study = study  # writes to sys.stderr as it is when it prints (Tune pickles this)
        self.interactive = sys.stderr.isatty()
        self.last = 0.0

    def show(self, searcher: search.Searcher, *, done: int, running: int, force=False):
        now = time.monotonic()
        if not force and (now - self.last < (0.5 if self.interactive else 15)):
            return
        self.last = now
        failed = sum(o["status"] == "failed" for o in searcher.observations)
        metric, mode = self.study.objectives[0]
        feasible = [o["metrics"][metric] for o in searcher.usable(feasible_only=True)]
        best = (max if mode == "max" else min)(feasible) if feasible else None
        line = (
            f"[{self.study.name}] {done}/{self.study.trials} done, {running} running, "
            f"{failed} failed, best feasible {metric}: "
            + ("none yet" if best is None else f"{best:.4g}")
        )
        end = "" if self.interactive and not force else "\n"
        print(("\r" if self.interactive else "") + line, end=end, file=sys.stderr, flush=True)


def _tune_searcher_class():
    from ray.tune.search import Searcher as TuneSearcherBase

    class TuneSearcher(TuneSearcherBase):
        """Any paretune searcher as a `ray.tune.search.Searcher`: asks on `suggest`, writes every
        report to Parquet, tells on completion (a trial a scheduler ended is `stopped`, kept out
        of the searcher's model), and saves its JSON state after every tell."""

        def __init__(self, searcher, *, study: Study, writer, done: int, progress=None):
            metric, mode = study.objectives[0]
            super().__init__(metric=metric, mode=mode)
            self.paretune, self.study, self.writer = (
                searcher,
                study,
                writer,
            )  # not `.searcher`: Tune walks that
            self.state_path = Path(study.dir) / STATE_FILE
            self.ids: dict[str, str] = {}
            self.started: dict[str, float] = {}
            self.steps: dict[str, int] = {}  # the last epoch step each trial reported
            self.done, self.progress = done, progress

        def set_search_properties(self, metric, mode, config, **spec):
            return True

        def suggest(self, trial_id):
            try:
                trial = self.paretune.ask()
            except Exhausted:
                return TuneSearcherBase.FINISHED
            self.ids[trial_id] = trial.id
            self.started[trial.id] = time.time()
            self._save()
            return dict(trial.config)

        def _row(self, trial: str, result: dict, status: str) -> dict:
            return {
                **result,
                "study": self.study.name,
                "trial": trial,
                "status": status,
                "config": self.paretune.pending.get(trial, {}),
                "time": datetime.now(UTC),
                "elapsed_s": time.time() - self.started.get(trial, time.time()),
            }

        def on_trial_result(self, trial_id, result):
            if trial_id in self.ids and not result.get("final"):
                self.steps[self.ids[trial_id]] = result.get("step")
                self.writer.add(self._row(self.ids[trial_id], result, "running"))
            self._show()

        def on_trial_complete(self, trial_id, result=None, error=False):
            trial = self.ids.pop(trial_id, None)
            if trial is None:
                return
            result = dict(result or {})
            if error:
                status = "failed"
                result.setdefault("error", "the trial's Ray worker failed (see the Ray logs)")
            elif result.get("final"):
                status = result.get("status", "completed")
            else:
                status = "stopped"
            result["final"] = True
            result.setdefault("step", self.steps.pop(trial, None))
            row = self._row(trial, result, status)
            self.writer.add(row, flush=True)
            metrics, told_as = _told(result, status, self.paretune.objective.names)
            self.paretune.tell(trial, metrics, **told_as)
            self.done += 1
            self._save()
            self._show()

        def _show(self):
            if self.progress:
                self.progress.show(self.paretune, done=self.done, running=len(self.ids))

        def _save(self):
            _write_json(self.state_path, self.paretune.state_dict())

        def get_state(self) -> dict:
            return {"searcher": self.paretune.state_dict(), "ids": self.ids, "done": self.done}

        def set_state(self, state: dict) -> None:
            self.paretune.load_state_dict(state["searcher"])
            self.ids, self.done = dict(state["ids"]), int(state["done"])

        def save(self, checkpoint_path):
            _write_json(Path(checkpoint_path), self.paretune.state_dict())

        def restore(self, checkpoint_path):
            self.paretune.load_state_dict(json.loads(Path(checkpoint_path).read_text()))

    return TuneSearcher


def _told(result: dict, status: str, names) -> tuple[dict | None, dict]:
    """What to tell the searcher of a finished trial: `(metrics, {"status": ...})`. A trial
    rejected before training is told `infeasible` with its costs only; a stopped one `stopped`
    (the searcher keeps it out of its model); a failed one, or one without its metrics, None."""
    if status == "infeasible":
        present = {k: v for k, v in result.items() if isinstance(v, int | float) and v == v}
        return present, {"status": "infeasible"}
    values = {n: result.get(n) for n in names}
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values.values()):
        values = None
    if status == "stopped":
        return values, {"status": "stopped"}
    return (values, {}) if status == "completed" else (None, {})


def reconcile(searcher: search.Searcher, table: pa.Table | None) -> int:
    """Bring a loaded searcher in line with the Parquet files; returns the finished trials."""
    finals = {}
    if table is not None:
        for row in table.to_pylist():
            if row.get("final"):
                finals[row["trial"]] = row
    names = searcher.objective.names
    told = {o["id"] for o in searcher.observations}
    for trial in list(searcher.pending):
        if trial in finals:
            row = finals[trial]
            metrics, status = _told(row, row["status"], names)
            searcher.tell(trial, metrics, **status)
        else:
            searcher.discard(trial)
    for trial, row in finals.items():
        if trial not in told and trial not in {o["id"] for o in searcher.observations}:
            config = {
                k.removeprefix("config."): v
                for k, v in row.items()
                if k.startswith("config.") and v is not None
            }
            metrics, _ = _told(row, row["status"], names)
            searcher.add(config, metrics)
    return len(finals)


def prepare_dir(study: Study, *, resume: bool) -> Path:
    """The study folder, checked writable; a new study refuses a folder holding another one."""
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
        _write_json(saved, study.to_dict())
    return folder


def load_study(study_dir: str | Path) -> Study:
    path = Path(study_dir) / STUDY_FILE
    if not path.exists():
        raise ConfigError(f"no study in {str(study_dir)!r} (no {STUDY_FILE})")
    return Study.from_dict(json.loads(path.read_text()))


def run(
    study: Study,
    *,
    address: str | None = None,
    resume: bool = False,
    verbose: bool = False,
    num_cpus: int | None = None,
    function=None,
) -> pa.Table:
    """Run (or resume) the study on Ray Tune until its trial budget is spent; returns
    `results.load(study.dir)`. With no `address`, Ray starts locally. `function(config,
    settings)` replaces `trainable` (it reports through `ray.tune.report`, last with `final`)."""
    folder = prepare_dir(study, resume=resume)
    searcher = make_searcher(study)
    state = folder / STATE_FILE
    if resume and state.exists():
        searcher.load_state_dict(json.loads(state.read_text()))
    try:
        table = results.load(folder, every_step=True)
    except ValueError:
        table = None
    done = reconcile(searcher, table)
    _write_json(state, searcher.state_dict())
    left = study.trials - done
    if left > 0:
        _fit(
            study,
            searcher,
            done=done,
            left=left,
            options={"address": address, "verbose": verbose, "cpus": num_cpus},
            function=function or trainable,
        )
    return results.load(folder)


def _fit(study, searcher, *, done, left, options, function):
    import ray
    from ray import tune

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress line instead of Ray's tables
    address, verbose = options["address"], options["verbose"]
    if not ray.is_initialized():
        ray.init(
            address=address or "local",
            num_cpus=options["cpus"] if address is None else None,
            include_dashboard=False,
            log_to_driver=verbose,
            logging_level="INFO" if verbose else "ERROR",
        )
    writer = results.ResultWriter(
        study.dir, results.schema(study.space(), searcher.objective.names)
    )
    progress = Progress(study)
    adapter = _tune_searcher_class()(
        searcher, study=study, writer=writer, done=done, progress=progress
    )
    metric, mode = study.objectives[0]
    resources = {"cpu": study.cpus_per_trial, "gpu": study.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(function, settings=study.trial_settings()), resources
        ),
        tune_config=tune.TuneConfig(
            search_alg=adapter,
            scheduler=make_scheduler(study),
            metric=metric,
            mode=mode,
            num_samples=left,
            max_concurrent_trials=study.parallel,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{study.name}-{int(time.time())}",
            storage_path=str((Path(study.dir) / "ray").resolve()),
            verbose=2 if verbose else 0,
        ),
    )
    try:
        tuner.fit()
    finally:
        writer.flush()
        progress.show(searcher, done=adapter.done, running=0, force=True)
