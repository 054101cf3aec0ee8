"""The study runner: a paretune searcher behind Ray Tune, results to Parquet, crash-safe resume.

The Parquet files are the truth. A trial's final row is flushed before the searcher is told and
its state saved (atomically), so after a crash `resume` tells the searcher whatever reached
Parquet, forgets the trials that never finished, and runs the rest of the budget.
"""

from __future__ import annotations

import dataclasses
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
from cluster.store import StudyStore, write_json
from cluster.study import SCHEDULERS, ConfigError, Study
from search.base import Exhausted

STUDY_FILE = "study.json"


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
    if study.scheduler == "pbt":
        options.setdefault("perturbation_interval", 2)
        # trials run as population members: their config sits under member.config
        flat = options.pop("hyperparam_mutations", None) or _mutations(study.space())
        options["hyperparam_mutations"] = {"member": {"config": flat}}
        return schedulers.PopulationBasedTraining(**options)
    raise ConfigError(f"scheduler {study.scheduler!r}: allowed {list(SCHEDULERS)}")


def _mutations(space) -> dict:
    """What population-based training may perturb: the unconditional training
    hyperparameters (architecture and compression keys stay as cloned)."""
    from ray import tune

    from spaces import Choice, Float, Int

    mutations = {}
    for key, param in space.params.items():
        if not key.startswith("train.") or param.when:
            continue
        if isinstance(param, Float):
            sample = tune.loguniform if param.log else tune.uniform
            mutations[key] = sample(param.low, param.high)
        elif isinstance(param, Int):
            mutations[key] = tune.randint(param.low, param.high + 1)
        elif isinstance(param, Choice):
            mutations[key] = list(param.options)
    if not mutations:
        raise ConfigError("scheduler pbt: the study has no training hyperparameters to perturb")
    return mutations


def _max_steps(study: Study) -> int:
    settings = study.trial_settings()
    return settings.epochs + settings.finetune_epochs + settings.qat_epochs + 1


def trainable(config: dict, settings) -> None:
    """The Ray Tune function: one report per epoch, then one final row (`final: True`). A trial
    that raises reports `status: failed` with its error text instead of crashing its worker."""
    import ray
    import torch
    from ray import tune

    from trainers import run_trial

    node = ray.get_runtime_context().get_node_id()

    def report(row):
        snapshot = row.pop("snapshot", None)
        metrics = {**row, "node": node, "final": False}
        if snapshot is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(snapshot, Path(folder) / "snapshot.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    checkpoint, resume = tune.get_checkpoint(), None
    if checkpoint is not None:  # population-based training restarts from a trial's snapshot
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / "snapshot.pt", weights_only=True)
    try:
        result = run_trial(config, report, settings=settings, resume=resume)
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


class Recorder:
    """Writes every report of a trial to Parquet and tells the searcher when it ends (a trial a
    scheduler ended is `stopped`, kept out of the searcher's model); the searcher's JSON state
    is saved after every ask and tell. Tune trial ids map to the study's own trial ids."""

    def __init__(self, store: StudyStore, *, study: Study, writer, done: int, progress):
        self.store, self.study, self.writer = store, study, writer
        self.ids: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.steps: dict[str, int] = {}  # the last epoch step each trial reported
        self.done, self.progress = done, progress

    @property
    def searcher(self) -> search.Searcher:
        return self.store.searcher

    def ask(self, tune_id: str):
        """A new trial from the searcher, or None when the study's budget is taken."""
        with self.store.locked() as searcher:
            if len(searcher.observations) + len(searcher.pending) >= self.study.trials:
                return None
            trial = searcher.ask()
        self.ids[tune_id] = trial.id
        self.started[trial.id] = time.time()
        return trial

    def adopt(self, tune_id: str, trial: str) -> None:
        """A trial asked beforehand (a population member) starts under `tune_id`."""
        self.ids[tune_id] = trial
        self.started[trial] = time.time()

    def _config(self, trial: str, ran) -> dict:
        """The config the trial runs now: population-based training may have swapped it."""
        asked = self.searcher.pending.get(trial, {})
        if not isinstance(ran, dict) or ran == asked:
            return asked
        space = self.searcher.space
        active = {k: v for k, v in ran.items() if k in space.params}
        active = {k: v for k, v in active.items() if space.is_active(k, active)}
        with self.store.locked() as searcher:
            searcher.revise(trial, active)
        return active

    def _row(self, trial: str, result: dict, status: str, config) -> dict:
        return {
            **result,
            "study": self.study.name,
            "trial": trial,
            "status": status,
            "config": self._config(trial, config),
            "time": datetime.now(UTC),
            "elapsed_s": time.time() - self.started.get(trial, time.time()),
        }

    def result(self, tune_id: str, result: dict, config=None) -> None:
        if tune_id in self.ids and not result.get("final"):
            trial = self.ids[tune_id]
            self.steps[trial] = result.get("step")
            self.writer.add(self._row(trial, result, "running", config or result.get("config")))
        self.show()

    def complete(self, tune_id: str, result: dict | None, *, error: bool, config=None) -> None:
        trial = self.ids.pop(tune_id, None)
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
        with self.store.locked() as searcher:
            row = self._row(trial, result, status, config or result.get("config"))
            self.writer.add(row, flush=True)
            metrics, told_as = _told(result, status, searcher.objective.names)
            searcher.tell(trial, metrics, **told_as)
        self.done += 1
        self.show()

    def show(self, *, force: bool = False) -> None:
        running = len(self.ids)
        self.progress.show(self.searcher, done=self.done, running=running, force=force)


def tune_searcher(recorder: Recorder):
    from ray.tune.search import Searcher as TuneSearcherBase

    class TuneSearcher(TuneSearcherBase):
        """Any paretune searcher as a `ray.tune.search.Searcher`: asks on `suggest`; reports
        and completions go to the `Recorder`; `save`/`restore` hold its JSON state."""

        def __init__(self):
            metric, mode = recorder.study.objectives[0]
            super().__init__(metric=metric, mode=mode)
            self.recorder = recorder  # not `.searcher`: Tune walks that attribute
            self.max_concurrent = 0  # 0: no limit of its own

        def set_search_properties(self, metric, mode, config, **spec):
            return True

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            self.max_concurrent = max_concurrent
            return True  # Tune then needs no ConcurrencyLimiter around it

        def suggest(self, trial_id):
            if self.max_concurrent and len(self.recorder.ids) >= self.max_concurrent:
                return None  # Tune asks again when a trial ends
            try:
                trial = self.recorder.ask(trial_id)
            except Exhausted:
                trial = None
            return TuneSearcherBase.FINISHED if trial is None else dict(trial.config)

        def on_trial_result(self, trial_id, result):
            self.recorder.result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.recorder.complete(trial_id, result, error=error)

        def get_state(self) -> dict:
            return {"searcher": self.recorder.searcher.state_dict()}

        def set_state(self, state: dict) -> None:
            self.recorder.searcher.load_state_dict(state["searcher"])

        def save(self, checkpoint_path):
            write_json(Path(checkpoint_path), self.recorder.searcher.state_dict())

        def restore(self, checkpoint_path):
            self.recorder.searcher.load_state_dict(json.loads(Path(checkpoint_path).read_text()))

    return TuneSearcher()


def _population(recorder: Recorder, size: int) -> tuple[list[dict], object]:
    """Population-based training takes no search algorithm (Ray refuses one): the searcher
    proposes the whole population up front, Tune runs it as a grid of `{"id", "config"}`, and a
    callback records reports and completions under each trial's first id (PBT clones configs,
    ids included, between trials)."""
    from ray import tune

    members = []
    with recorder.store.locked() as searcher:
        for _ in range(size):
            try:
                trial = searcher.ask()
            except Exhausted:
                break
            members.append({"id": trial.id, "config": dict(trial.config)})

    class Record(tune.Callback):
        def __init__(self):
            self.running: dict[str, dict] = {}  # the config each trial (re)started with

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id not in recorder.ids:
                recorder.adopt(trial.trial_id, trial.config["member"]["id"])
            self.running[trial.trial_id] = dict(trial.config["member"]["config"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.result(trial.trial_id, result, config=self.running.get(trial.trial_id))

        def on_trial_complete(self, iteration, trials, trial, **info):
            config = self.running.pop(trial.trial_id, None)
            recorder.complete(trial.trial_id, trial.last_result, error=False, config=config)

        def on_trial_error(self, iteration, trials, trial, **info):
            config = self.running.pop(trial.trial_id, None)
            recorder.complete(trial.trial_id, trial.last_result, error=True, config=config)

    return members, Record()


def member_trainable(config: dict, settings) -> None:
    """`trainable` for a population member: its config sits under `member`."""
    trainable(config["member"]["config"], settings)


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
        write_json(saved, study.to_dict())
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
    store = StudyStore(folder, make_searcher(study))
    try:
        table = results.load(folder, every_step=True)
    except ValueError:
        table = None
    with store.locked() as searcher:  # loads the saved state, if any
        done = reconcile(searcher, table)
    left = study.trials - done
    if left > 0:
        _fit(
            study,
            store,
            done=done,
            left=left,
            options={"address": address, "verbose": verbose, "cpus": num_cpus},
            function=function or trainable,
        )
    return results.load(folder)


def _fit(study, store, *, done, left, options, function):
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
    names = store.searcher.objective.names
    writer = results.ResultWriter(study.dir, results.schema(study.space(), names))
    settings = study.trial_settings()
    if study.scheduler == "pbt":
        settings = dataclasses.replace(settings, snapshots=True)
    recorder = Recorder(store, study=study, writer=writer, done=done, progress=Progress(study))
    metric, mode = study.objectives[0]
    resources = {"cpu": study.cpus_per_trial, "gpu": study.gpus_per_trial}
    scheduler = make_scheduler(study)
    tune_config = {"scheduler": scheduler, "metric": metric, "mode": mode, "reuse_actors": True}
    tune_config["max_concurrent_trials"] = study.parallel
    if study.scheduler == "pbt":
        members, callback = _population(recorder, left)
        callbacks, space = [callback], {"member": tune.grid_search(members)}
        function = member_trainable if function is trainable else function
    else:
        tune_config |= {"search_alg": tune_searcher(recorder), "num_samples": left}
        callbacks, space = [], None
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(function, settings=settings), resources),
        param_space=space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(
            name=f"{study.name}-{int(time.time())}",
            storage_path=str((Path(study.dir) / "ray").resolve()),
            verbose=2 if verbose else 0,
            callbacks=callbacks,
        ),
    )
    try:
        tuner.fit()
    finally:
        writer.flush()
        recorder.show(force=True)
