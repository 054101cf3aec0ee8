"""Trainers: datasets, model builders, training, compression and hardware cost (torch).

Its names load on first use (PEP 562), so `trainers.settings` (the settings, dataset, runtime
and metric names) is read without torch."""

from __future__ import annotations

import importlib

_PLACES = {
    "DATASETS": "trainers.settings",
    "DEFAULT_CHAIN": "trainers.settings",
    "FLAT_KEYS": "trainers.settings",
    "CompressionSettings": "trainers.settings",
    "CostSettings": "trainers.settings",
    "DataSettings": "trainers.settings",
    "Schedule": "trainers.settings",
    "TeacherSettings": "trainers.settings",
    "TrialSettings": "trainers.settings",
    "Dataset": "trainers.data",
    "load_dataset": "trainers.data",
    "MODELS": "trainers.models",
    "build_model": "trainers.models",
    "infer_model": "trainers.models",
    "measure": "trainers.cost",
    "estimate_cost": "trainers.estimate",
    "prune_groups": "trainers.usermodel",
    "run_trial": "trainers.trial",
}
__all__ = sorted(_PLACES)


def __getattr__(name: str):
    if name not in _PLACES:
        raise AttributeError(f"module 'trainers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PLACES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PLACES))
