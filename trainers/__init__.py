"""Trainers: datasets, model builders, training, compression and hardware cost (torch)."""

from trainers.data import DATASETS, Dataset, load_dataset
from trainers.models import MODELS, build_model, infer_model
from trainers.trial import (
    DEFAULT_CHAIN,
    FLAT_KEYS,
    CompressionSettings,
    CostSettings,
    DataSettings,
    Schedule,
    TeacherSettings,
    TrialSettings,
    estimate_cost,
    run_trial,
)
from trainers.usermodel import measure, prune_groups

__all__ = [
    "DATASETS",
    "DEFAULT_CHAIN",
    "FLAT_KEYS",
    "MODELS",
    "CompressionSettings",
    "CostSettings",
    "DataSettings",
    "Dataset",
    "Schedule",
    "TeacherSettings",
    "TrialSettings",
    "build_model",
    "estimate_cost",
    "infer_model",
    "load_dataset",
    "measure",
    "prune_groups",
    "run_trial",
]
