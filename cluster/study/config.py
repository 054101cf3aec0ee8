"""A study's configuration: read from YAML or TOML, validated before anything starts."""

from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

import search
import spaces
from spaces import Float, Space
from spaces.util import did_you_mean
from trainers.data import DATASETS
from trainers.trial import COST_METRICS, FLAT_KEYS, TrialSettings

SCHEDULERS = ("fifo", "asha", "hyperband", "median", "pbt")
ARCHS = {"chain": spaces.chain, "nb201": spaces.nb201, "mlp": spaces.mlp}


class ConfigError(ValueError):
    """A study file that cannot run: the message names the key and what is allowed."""


def _check_keys(where: str, given: Mapping, allowed) -> None:
    if not isinstance(given, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(given).__name__}")
    for key in given:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}; "
                f"allowed: {sorted(allowed)}"
            )


def _typed(where: str, value, kind, *, positive: bool = False):
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return value


@dataclass(frozen=True)
class Study:
    """Everything a study needs; `Study.from_dict` validates a parsed file."""

    name: str = "study"
    dir: str = "studies/study"
    arch: str = "chain"
    arch_options: Mapping = field(default_factory=dict)
    train: Mapping | bool = True  # True: spaces.training(); a mapping: only these ranges
    compress: bool = True
    searcher: str = "bo"
    searcher_options: Mapping = field(default_factory=dict)
    seed: int = 0
    objectives: tuple[tuple[str, str], ...] = (("val_acc", "max"),)
    constraints: Mapping[str, float] = field(default_factory=dict)
    scheduler: str = "asha"
    scheduler_options: Mapping = field(default_factory=dict)
    trials: int = 20
    parallel: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    dataset: str = "digits"
    data_path: str | None = None
    trial: Mapping = field(default_factory=dict)  # trainers.trial.FLAT_KEYS, less _OWNED
    latency: str = "local"  # or remote://host:port: measured on a device server
    latency_token_file: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping) -> Study:
        allowed = {f.name for f in fields(cls)}
        _check_keys("study", raw, allowed)
        values = dict(raw)
        for key in ("name", "dir", "arch", "searcher", "scheduler", "dataset", "latency"):
            if key in values:
                _typed(key, values[key], str)
        for key in ("trials", "parallel", "seed"):
            if key in values:
                _typed(key, values[key], int, positive=key != "seed")
        for key in ("cpus_per_trial", "gpus_per_trial"):
            if key in values:
                _typed(key, values[key], (int, float))
        if "objectives" in values:
            values["objectives"] = _objectives(values["objectives"])
        study = cls(**values)
        study.validate()
        return study

    def validate(self) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("searcher", self.searcher, search.SEARCHERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("dataset", self.dataset, DATASETS)
        if self.dataset != "digits":
            if not self.data_path:
                raise ConfigError(f"dataset {self.dataset!r} needs data_path")
            if not Path(self.data_path).expanduser().exists():
                raise ConfigError(f"data_path {self.data_path!r} does not exist")
        _check_keys("trial", self.trial, FLAT_KEYS - _OWNED)
        _check_keys("constraints", self.constraints, COST_METRICS)
        for key, value in self.constraints.items():
            _typed(f"constraints.{key}", value, (int, float), positive=True)
        try:
            options = search.searcher_options(self.searcher)
        except ValueError as error:
            raise ConfigError(str(error)) from error
        _check_keys(f"searcher_options ({self.searcher})", self.searcher_options, options)
        if self.latency != "local" and not re.fullmatch(r"remote://[^\s:/]+:\d+", self.latency):
            raise ConfigError(f"latency: 'local' or 'remote://host:port', got {self.latency!r}")
        if self.latency_token_file and not Path(self.latency_token_file).exists():
            raise ConfigError(f"latency_token_file {self.latency_token_file!r} does not exist")
        if self.gpus_per_trial < 0 or self.cpus_per_trial <= 0:
            raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
        space = self.space()  # checks arch_options and train ranges
        if self.scheduler == "pbt" and not any(k.startswith("train.") for k in space.params):
            raise ConfigError("scheduler pbt perturbs training hyperparameters: set train")

    def space(self) -> Space:
        try:
            arch = ARCHS[self.arch](**self.arch_options)
        except TypeError as error:
            raise ConfigError(f"arch_options for {self.arch!r}: {error}") from error
        parts = {"arch": arch}
        if self.train is True:
            parts["train"] = spaces.training()
        elif isinstance(self.train, Mapping) and self.train:
            parts["train"] = _train_space(self.train)
        if self.compress:
            parts["compress"] = spaces.compression()
        return Space.combine(parts)

    def trial_settings(self) -> TrialSettings:
        source = None
        if self.latency != "local":
            from cluster.remote.device import RemoteLatency

            token = self.latency_token_file and Path(self.latency_token_file).read_text().strip()
            source = RemoteLatency(self.latency.removeprefix("remote://"), token or None)
        return TrialSettings.from_flat(
            {
                **self.trial,
                "latency_source": source,
                "dataset": self.dataset,
                "data_path": self.data_path,
                "constraints": dict(self.constraints),
                "seed": self.seed,
                "cache_dir": str(Path(self.dir).resolve() / "cache"),
            }
        )

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["objectives"] = [list(o) for o in self.objectives]
        return json.loads(json.dumps(values))


_OWNED = {"dataset", "data_path", "constraints", "seed", "cache_dir", "latency_source"}


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{key}: {value!r} is not allowed{did_you_mean(value, allowed)}; "
            f"allowed: {sorted(allowed)}"
        )


def _objectives(raw) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, Mapping):
        raw = list(raw.items())
    pairs = []
    for item in raw:
        metric, mode = (
            (item["metric"], item.get("mode", "max")) if isinstance(item, Mapping) else item
        )
        if mode not in ("max", "min"):
            raise ConfigError(f"objectives.{metric}: mode must be 'max' or 'min', got {mode!r}")
        pairs.append((str(metric), mode))
    if not pairs:
        raise ConfigError("objectives: at least one, e.g. {val_acc: max}")
    return tuple(pairs)


def _train_space(ranges: Mapping) -> Space:
    """Only the named training hyperparameters, each a `[low, high]` range (log for lr and
    weight_decay) or a fixed value left out of the search."""
    full = spaces.training()
    _check_keys("train", ranges, full.params)
    params = {}
    for key, value in ranges.items():
        if isinstance(value, list | tuple) and len(value) == 2:
            params[key] = Float(float(value[0]), float(value[1]), log=key in ("lr", "weight_decay"))
        else:
            raise ConfigError(f"train.{key}: expected [low, high], got {value!r}")
    return Space(params)


def read(path: str | Path) -> Study:
    """A study from a `.yaml`/`.yml`/`.toml` file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"study file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from error
    return Study.from_dict(raw or {})


def default_study(study_dir: str | None = None) -> Study:
    """The built-in study, in `studies/default-<date>-<time>` unless told: a joint search on
    digits (a small chain, learning rate and weight decay, pruning, quantization, distillation)
    under a latency and size budget, with ASHA."""
    return Study(
        name="default",
        dir=study_dir or time.strftime("studies/default-%Y%m%d-%H%M%S"),
        arch="chain",
        arch_options={"stages": 3, "depth": (1, 2), "widths": (8, 16, 32), "expansions": (1, 3)},
        train={"lr": [3e-4, 3e-2], "weight_decay": [1e-6, 1e-2]},
        searcher="bo",
        searcher_options={"n_initial": 6},
        objectives=(("val_acc", "max"), ("latency_ms", "min")),
        constraints={"size_bytes": 60_000.0, "latency_ms": 5.0},  # measured_default measures
        scheduler="asha",
        scheduler_options={"grace_period": 3, "reduction_factor": 3},
        trials=40,
        parallel=2,
        trial={"epochs": 8, "finetune_epochs": 2, "qat_epochs": 2, "teacher_epochs": 8},
    )


def measured_default(study_dir: str | None = None) -> Study:
    """`default_study` with its budget measured here: a model at most as slow (at batch 64, one
    thread) and as large (fp32 bytes) as the middle model of its space on this CPU."""
    from trainers.cost import measure_latency, size_bytes
    from trainers.models import build_model

    study = default_study(study_dir)
    middle = {}
    for i in range(3):
        middle |= {f"s{i}_depth": 1, f"s{i}_width": 16, f"s{i}_kernel": 5, f"s{i}_expand": 3}
    model = build_model("chain", middle, in_shape=(1, 8, 8), num_classes=10)
    latency = measure_latency(model, (1, 8, 8), batch_size=64, repeats=30)
    budget = {"latency_ms": round(latency, 3), "size_bytes": float(size_bytes(model))}
    return Study.from_dict({**study.to_dict(), "constraints": budget})
