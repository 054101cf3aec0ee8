"""The study runner: a paretune searcher behind Ray Tune, results to Parquet, crash-safe resume.

The Parquet files are the truth. A trial's final row is flushed before the searcher is told and
its state saved (atomically), so after a crash `resume` tells the searcher whatever reached
Parquet, forgets the trials that never finished, and runs the rest of the budget.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pyarrow as pa

# Ray is imported with this module, before the study is checked and Ray starts: with Ray imported
# only in `_fit`, a Ctrl-C 1.5 s into `paretune run` killed the driver outright or was lost
# (tests/cluster/test_first_hour.py); imported here, it is the CLI's KeyboardInterrupt, exit 130
from cluster.raytune.adapter import tune_searcher
from cluster.raytune.nodes import connect, preflight
from cluster.raytune.own import OwnSettings, own_trainable
from cluster.raytune.pricer import RayPricer
from cluster.raytune.recorder import Progress, Recorder, TrialEvents
from cluster.raytune.schedulers import check_scheduler, make_scheduler, population
from cluster.raytune.teachers import shipped
from cluster.raytune.trainable import bound, member_trainable, trainable
from cluster.study import results, storage
from cluster.study.config import Study
from cluster.study.errors import ConfigError
from cluster.study.price import study_price
from cluster.study.resume import open_store, prepare_dir
from cluster.study.store import driver_lock

# A trial's own errors never reach Tune (the trainable reports them as `failed`); what Tune sees
# fail is the trial's worker: its node died, or it was killed. Tune runs such a trial again (on
# another node, or where its node comes back), at most this many times, before it is `failed`.
RETRIES = 2
# Trials per Tune fit. Tune's driver does work over every trial a fit holds at each step, so its
# cost per trial grows with the fit (benchmarks/scale.py: 33 ms a trial at the first 1,000 of a
# 10,000-trial fit, 58 ms at the last); a long study runs as fits of this many trials in turn,
# each starting from the study's searcher and results as a resume does.
CHUNK = 1000


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
    `results.load(study.dir)`. With no `address`, Ray starts locally. A study with its own
    `trainable` runs that (`cluster.raytune.own`); `function(config, settings)` replaces either
    (it reports through `ray.tune.report`, last with `final`)."""
    if storage.is_uri(study.dir):  # staged here, mirrored to the URI (cluster.study.storage)
        with storage.staged(study, resume=resume) as local:
            options = {"address": address, "verbose": verbose, "num_cpus": num_cpus}
            return run(local, resume=resume, function=function, **options)
    check_scheduler(study)
    # loaded once, here: trials get it through Ray's object store and never open `data_path`
    data = study.check_data() if function is None and not study.trainable else None
    options = {"address": address, "verbose": verbose, "cpus": num_cpus}
    if address is not None:  # a cluster: every node checked before the study folder is made
        connect(study, **options)
        preflight(study)
    folder = prepare_dir(study, resume=resume)
    price, pricer = _price(study, data)
    with driver_lock(folder):
        try:
            table = results.load(folder, every_step=True)
        except ValueError:
            table = None
        store, done = open_store(study, folder, table, price=price)
        function = function or (own_trainable if study.trainable else trainable)
        stop = None
        while done < study.trials and stop is None:  # in fits of CHUNK trials: Tune's cost
            left = study.trials - done  # per trial grows with the trials one fit holds; PBT
            told = _told(store)  # needs one fit
            chunk = left if study.scheduler == "pbt" else min(left, CHUNK)
            fit = {"options": options, "function": function, "data": data, "pricer": pricer}
            stop = _fit(study, store, done=done, left=chunk, **fit)
            fitted = _told(store) - told
            if fitted == 0:  # nothing more to ask (exhausted, or clients hold it)
                break
            done += fitted
        store.compact()  # searcher.json alone holds the state a run ended with
        results.compact(folder)
        if stop is not None:  # the searcher's price stopped it: a refused study, not a crash
            raise ConfigError(stop)
        return results.load(folder)


def _price(study: Study, data) -> tuple:
    """The study's price (`study_price`, None: unpriced) and the `RayPricer` that measures it
    through the trial's own cost function where trials run (the built-in trainer only)."""
    if data is None:
        return None, None
    settings, shape = bound(study), (data.in_shape, data.num_classes)
    pricer = RayPricer(study, settings=settings, shape=shape)
    price = study_price(study, settings=settings, shape=shape, measure=pricer)
    return price, None if price is None else pricer


def _fit(study, store, *, done, left, options, function, data, pricer) -> str | None:
    """One Tune fit of `left` trials, priced by `pricer`'s actor of the fit (None: unpriced);
    returns why the searcher's price stopped the study, if it did."""
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our progress line instead of Ray's tables
    # Ctrl-C raises KeyboardInterrupt at once (Tune's own handler would end `fit` as if done)
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    connect(study, **options)
    names = store.searcher.objective.names
    schema = results.schema(study.space(), names)
    writer = (
        OpenWriter(study.dir, schema)
        if study.trainable
        else results.ResultWriter(study.dir, schema)
    )
    settings = OwnSettings.of(study) if study.trainable else bound(study)
    if study.scheduler == "pbt":
        settings = dataclasses.replace(settings, snapshots=True)
    name = f"{study.name}-{int(time.time())}-{done}"  # one per fit
    parts = {"writer": writer, "done": done, "progress": Progress(study), "pricer": pricer}
    recorder = Recorder(store, study=study, **parts)
    if pricer is not None:
        pricer.start(name)
    try:  # the pricer's actor ends with the fit, however it ends
        fit = {"function": function, "data": data, "settings": settings, "options": options}
        _tuner(study, recorder, name=name, left=left, **fit).fit()
    finally:
        if pricer is not None:
            pricer.stop()
        writer.flush()
        recorder.show(force=True)
    return recorder.stop


def _tuner(study, recorder, *, name, left, function, data, settings, options):
    """The fit's `tune.Tuner`: `left` trials of `function`, asked of `recorder`."""
    from ray import tune

    metric, mode = study.objectives[0]
    resources = {"cpu": study.cpus_per_trial, "gpu": study.gpus_per_trial}
    tune_config = {"scheduler": make_scheduler(_final_counted(study)), "metric": metric}
    tune_config["mode"] = mode
    tune_config |= {"reuse_actors": True, "max_concurrent_trials": study.parallel}
    if study.scheduler == "pbt":
        members, callback = population(recorder, left)
        callbacks, space = [callback, TrialEvents(recorder)], {"member": tune.grid_search(members)}
        function = member_trainable if function is trainable else function
    else:
        tune_config |= {"search_alg": tune_searcher(recorder), "num_samples": left}
        callbacks, space = [TrialEvents(recorder)], None
    parameters = {"settings": settings}
    if data is not None:  # the built-in trainer: the data and the teacher by reference
        parameters |= {"data": data, "teachers": shipped(study, settings, data)}
    return tune.Tuner(
        tune.with_resources(tune.with_parameters(function, **parameters), resources),
        param_space=space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(
            name=name,
            **storage.tune_storage(study.dir),  # STUDY/ray, or the URI's ray/
            verbose=2 if options["verbose"] else 0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=RETRIES),
        ),
    )


def _told(store) -> int:
    """The trials told: configs refused on price are not trials."""
    with store.locked() as searcher:
        return searcher.trained()


def _final_counted(study: Study) -> Study:
    """A study's own trainable reports `max_t` steps at most, then its final row: one more."""
    options = study.scheduler_options
    if not study.trainable or "max_t" not in options:
        return study
    return dataclasses.replace(study, scheduler_options={**options, "max_t": options["max_t"] + 1})


class OpenWriter(results.ResultWriter):
    """A `ResultWriter` that gives each metric a trainable reports (a row's `metric_names`) a
    float64 column when it first appears; parts written before it read it as null."""

    def add(self, row: dict, *, flush: bool = False) -> None:
        new = [n for n in row.get("metric_names") or () if n not in self.schema.names]
        if new:
            self.flush()
            fields = list(self.schema)
            at = self.schema.get_field_index("records")
            fields[at:at] = [pa.field(name, pa.float64()) for name in dict.fromkeys(new)]
            self.schema = pa.schema(fields)
        super().add(row, flush=flush)
