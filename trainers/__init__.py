"""Trainers: datasets, model builders, training, compression and hardware cost (torch)."""

from trainers.data import DATASETS, Dataset, load_dataset
from trainers.models import MODELS, build_model, infer_model
from trainers.trial import DEFAULT_CHAIN, TrialSettings, estimate_cost, run_trial

__all__ = [
    "DATASETS",
    "DEFAULT_CHAIN",
    "MODELS",
    "Dataset",
    "TrialSettings",
    "build_model",
    "estimate_cost",
    "infer_model",
    "load_dataset",
    "run_trial",
]
