"""Ray Tune's schedulers from a study, and population-based training's population."""

from __future__ import annotations

import inspect
import math

import numpy as np
from ray import tune
from ray.tune import schedulers

from cluster.raytune.moasha import MOASHA
from cluster.raytune.recorder import Recorder
from cluster.study.config import SCHEDULERS, ConfigError, Study
from search.errors import Exhausted
from spaces.util import did_you_mean
from trainers.settings import max_steps as trial_steps

# Every scheduler counts training iterations: one per epoch report (and one for the final row),
# so `grace_period`, `perturbation_interval` and `max_t` are in epochs, never Ray's seconds.
TIME_ATTR = "training_iteration"


class HyperBand(schedulers.AsyncHyperBandScheduler):
    """Asynchronous HyperBand (Li et al., "A system for massively parallel hyperparameter
    tuning", 2020): successive halving in HyperBand's brackets, each trial drawn into one from
    the study's seed, and a trial below its rung's cutoff stopped at once. Ray's synchronous
    `HyperBandScheduler` pauses trials until a whole bracket reaches a rung: a searcher that
    proposes one trial per free slot never fills a bracket, and a paused trial is stopped with
    no result or restarted from scratch."""

    def __init__(self, *, seed: int, **options):
        super().__init__(**options)
        self.rng = np.random.default_rng(seed)

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)  # checks metric and mode
        sizes = np.array([len(bracket._rungs) for bracket in self._brackets])
        weights = np.exp(sizes - sizes.max())  # Ray's: more trials to more rungs
        pick = self.rng.choice(len(sizes), p=weights / weights.sum())
        self._trial_info[trial.trial_id] = self._brackets[pick]


class Median(schedulers.MedianStoppingRule):
    """The median stopping rule that stops and never pauses: Ray's pauses a trial to let a
    waiting one run while too few trials reached its epoch, and our trials keep no checkpoint
    to continue from."""

    def _on_insufficient_samples(self, tune_controller, trial, time):
        return schedulers.TrialScheduler.CONTINUE


class PopulationBasedTraining(schedulers.PopulationBasedTraining):
    """Population-based training that exploits and explores at training epochs only: there a
    trial has just left a snapshot, and its score is its training accuracy. A fine-tuning or
    final report measures a compressed model, and cloning a trial that finished training
    restarts it to repeat another trial's end."""

    def on_trial_result(self, tune_controller, trial, result):
        if result.get("phase") != "train":
            return schedulers.TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class Record(tune.Callback):
    """Population-based training's reports and completions, to the runner's `Recorder` under
    each trial's first id (PBT clones configs, ids included, between trials)."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.running: dict[str, dict] = {}  # the config each trial (re)started with

    def on_trial_start(self, iteration, trials, trial, **info):
        member = trial.config["member"]
        if trial.trial_id not in self.recorder.ids:
            self.recorder.adopt(trial.trial_id, member["id"], member["config"])
        self.running[trial.trial_id] = dict(member["config"])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        config = self.running.get(trial.trial_id)
        self.recorder.result(trial.trial_id, result, config=config)

    def on_trial_complete(self, iteration, trials, trial, **info):
        config = self.running.pop(trial.trial_id, None)
        self.recorder.complete(trial.trial_id, trial.last_result, error=False, config=config)

    def on_trial_error(self, iteration, trials, trial, **info):
        config = self.running.pop(trial.trial_id, None)
        self.recorder.complete(trial.trial_id, trial.last_result, error=True, config=config)


def check_scheduler(study: Study) -> None:
    """Build the study's scheduler once, so an option it does not take fails before anything
    runs or is written: a `ConfigError` naming the option, the closest one, and the allowed."""
    classes = {
        "asha": schedulers.ASHAScheduler,
        "hyperband": schedulers.AsyncHyperBandScheduler,
        "median": schedulers.MedianStoppingRule,
        "pbt": schedulers.PopulationBasedTraining,
        "moasha": MOASHA,
    }
    where = f"scheduler_options ({study.scheduler})"
    kind = classes.get(study.scheduler)
    owned = {"metric", "mode", "objectives", "constraints"}  # the study's own
    allowed = set(inspect.signature(kind).parameters) - owned if kind else set()
    for key in study.scheduler_options:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown option {key!r}{did_you_mean(key, allowed)}; "
                f"allowed: {sorted(allowed)}"
            )
    try:
        make_scheduler(study)
    except ConfigError:
        raise
    except (TypeError, ValueError, AssertionError) as error:  # Ray checks with assert
        raise ConfigError(f"{where}: {error}") from error


def make_scheduler(study: Study):
    options = {"time_attr": TIME_ATTR, **study.scheduler_options}
    if study.scheduler == "fifo":
        return schedulers.FIFOScheduler()
    if study.scheduler in ("asha", "hyperband", "moasha"):
        options.setdefault("max_t", max_steps(study))
        if study.scheduler == "moasha":
            bounds = {"constraints": dict(study.constraints)}
            return MOASHA(objectives=study.objectives, **bounds, **options)
        if study.scheduler == "asha":
            return schedulers.ASHAScheduler(**options)
        grace = options.setdefault("grace_period", 1)
        factor = options.setdefault("reduction_factor", 3)
        rungs = math.log(options["max_t"] / grace) / math.log(factor)
        options.setdefault("brackets", int(rungs + 1e-9) + 1)  # HyperBand's s_max + 1
        return HyperBand(seed=study.seed, **options)
    if study.scheduler == "median":
        options.setdefault("grace_period", 2)
        return Median(**options)
    if study.scheduler == "pbt":
        options.setdefault("perturbation_interval", 2)
        # trials run as population members: their config sits under member.config
        flat = options.pop("hyperparam_mutations", None) or _mutations(study.space())
        options["hyperparam_mutations"] = {"member": {"config": flat}}
        return PopulationBasedTraining(**options)
    raise ConfigError(f"scheduler {study.scheduler!r}: allowed {list(SCHEDULERS)}")


def _mutations(space) -> dict:
    """What population-based training may perturb: the unconditional training
    hyperparameters (architecture and compression keys stay as cloned)."""
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


def max_steps(study: Study) -> int:
    """The most training iterations one trial makes: its epoch reports (fine-tuning and
    quantization-aware training only where the study compresses) and its final row."""
    return trial_steps(study.trial_settings(), compress=bool(study.compress))


def population(recorder: Recorder, size: int) -> tuple[list[dict], Record]:
    """Population-based training takes no search algorithm (Ray refuses one): the searcher
    proposes the whole population up front, Tune runs it as a grid of `{"id", "config"}`, and a
    `Record` callback records its reports and completions."""
    members = []
    with recorder.store.locked():
        for _ in range(size):
            try:
                trial = recorder.priced_ask()  # claimed, its refusals written
            except Exhausted:
                break
            if trial is None:
                break
            members.append({"id": trial.id, "config": dict(trial.config)})
    return members, Record(recorder)
