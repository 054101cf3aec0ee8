"""The distillation teacher of a study: trained once, before its trials start, by a Ray task
with a trial's resources; the driver keeps it in the study's cache folder and ships it to every
trial through Ray's object store (`tune.with_parameters`, as the data)."""

from __future__ import annotations

import tempfile

import numpy as np
import ray

from spaces.util import write_atomic
from trainers.compress_keys import split_config
from trainers.distill import cached_teacher, teacher_file
from trainers.models import model_name
from trainers.phases import cache_folder, teacher_plan
from trainers.settings import DEFAULT_CHAIN

DISTILL = "compress.distill"


def shipped(study, settings, data) -> dict[str, bytes]:
    """`{file name: state_dict bytes}` of the teacher the study's distilling trials use, for
    `cluster.raytune.trainable` to place in its node's teacher cache; trained once (a resumed
    study finds it in `STUDY/cache`). Empty when no trial distills, or when each trial's teacher
    is its own architecture (no `teacher_arch`, a model other than a chain: trained in its
    trial, cached on its node, `trainers.phases.teacher`)."""
    arch = _student(study.space(), settings)
    if arch is None:
        return {}
    name = model_name(arch, settings.model)
    if settings.teacher.arch is None and name != "chain":
        return {}
    path = teacher_file(teacher_plan(arch, name, data, settings)[0], cache_folder(settings))
    if not path.exists():
        task = _train.options(num_cpus=study.cpus_per_trial, num_gpus=study.gpus_per_trial)
        blob = ray.get(task.remote(arch, name, settings, data))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, blob)
    return {path.name: path.read_bytes()}


def _student(space, settings) -> dict | None:
    """A student architecture of the space (the teacher depends on its model only), or None
    when the space does not distill."""
    if DISTILL not in space.params:
        return None
    return split_config(space.sample(np.random.default_rng(0)))[0] or DEFAULT_CHAIN


@ray.remote
def _train(arch: dict, name: str, settings, data) -> bytes:
    """The teacher of `teacher_plan`, trained on this worker's device, as saved bytes."""
    from trainers.train import resolve_device

    device = resolve_device(settings.device)
    key, build, fit, _ = teacher_plan(arch, name, data.to(device), settings)
    with tempfile.TemporaryDirectory(prefix="paretune-teacher-") as folder:
        cached_teacher(key, lambda: build(device), fit, folder)
        return teacher_file(key, folder).read_bytes()
