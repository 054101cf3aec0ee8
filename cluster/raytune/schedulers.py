"""Ray Tune's schedulers from a study, and population-based training's population."""

from __future__ import annotations

from cluster.raytune.recorder import Recorder
from cluster.study.config import SCHEDULERS, ConfigError, Study
from search.base import Exhausted


def make_scheduler(study: Study):
    from ray.tune import schedulers

    options = dict(study.scheduler_options)
    steps = max_steps(study)
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


def max_steps(study: Study) -> int:
    """The most training iterations (epoch reports) one trial makes."""
    schedule = study.trial_settings().schedule
    return schedule.epochs + schedule.finetune_epochs + schedule.qat_epochs + 1


def population(recorder: Recorder, size: int) -> tuple[list[dict], object]:
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
            member = trial.config["member"]
            if trial.trial_id not in recorder.ids:
                recorder.adopt(trial.trial_id, member["id"], member["config"])
            self.running[trial.trial_id] = dict(member["config"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            recorder.result(trial.trial_id, result, config=self.running.get(trial.trial_id))

        def on_trial_complete(self, iteration, trials, trial, **info):
            config = self.running.pop(trial.trial_id, None)
            recorder.complete(trial.trial_id, trial.last_result, error=False, config=config)

        def on_trial_error(self, iteration, trials, trial, **info):
            config = self.running.pop(trial.trial_id, None)
            recorder.complete(trial.trial_id, trial.last_result, error=True, config=config)

    return members, Record()
