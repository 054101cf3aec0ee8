"""A study's configuration: read from YAML or TOML, validated before anything starts."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

import yaml

import search
import spaces
from cluster.study import checks
from cluster.study.errors import ConfigError, check_keys
from cluster.study.narrow import held, narrowed
from cluster.study.warm import sources as warm_sources
from spaces import Space
from spaces.util import did_you_mean
from trainers.settings import (
    COST_METRICS,
    DATASETS,
    EMBEDDED,
    FLAT_KEYS,
    MEASURED_AT_START,
    METRICS,
    RUNTIMES,
    TrialSettings,
)

SCHEDULERS = ("fifo", "asha", "moasha", "hyperband", "median", "pbt")
ARCHS = {"chain": spaces.chain, "nb201": spaces.nb201, "mlp": spaces.mlp}
_TEXT = ("name", "dir", "arch", "searcher", "scheduler", "dataset", "latency", "deploy")
_NULLABLE = (*checks.FILE_KEYS, "trainable")
_MAPPINGS = ("arch_options", "searcher_options", "constraints", "scheduler_options", "trial")
KINDS = {  # what each key of a file holds (those `_NULLABLE` may also be null)
    **dict.fromkeys(_TEXT + _NULLABLE, str),
    **dict.fromkeys(("trials", "parallel", "seed"), int),
    **dict.fromkeys(("cpus_per_trial", "gpus_per_trial", "latency_retry_s"), (int, float)),
    **dict.fromkeys(_MAPPINGS + ("fixed", "space"), Mapping),
}


def _typed(where: str, value, kind, *, positive: bool = False):
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: expected {names}, got {value!r}{checks.number_hint(value)}")
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
    train: Mapping | bool = False  # True: spaces.training(); a mapping: only these ranges
    compress: Mapping | bool = False  # True: spaces.compression(); a mapping: only these knobs
    searcher: str = "bo"
    searcher_options: Mapping = field(default_factory=dict)
    seed: int = 0
    objectives: tuple[tuple[str, str], ...] = (("val_acc", "max"),)
    constraints: Mapping[str, float] = field(default_factory=dict)
    scheduler: str = ""  # left out: moasha with several objectives, else asha (`__post_init__`)
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
    latency_retry_s: float = 60.0  # how long a trial waits for an unreachable device server
    deploy: str = "onnxruntime"  # the runtime costs are measured on: trainers.deploy.RUNTIMES
    fixed: Mapping = field(default_factory=dict)  # {"arch.s0_width": 32}: held, never searched
    trainable: str | None = None  # "package.module:function": the user's own (cluster.study.custom)
    trainable_path: str | None = None  # imported from here first (default: the study file's folder)
    search_space: Mapping = field(default_factory=dict)  # a file's `space:`, with a trainable
    warm_start: tuple[str, ...] = ()  # earlier study folders seeding the searcher (study.warm)
    calibrate_from: tuple[str, ...] = ()  # earlier study folders seeding the price calibration

    def __post_init__(self):
        if not self.scheduler:  # ranks on every objective: ASHA would rank on the first alone
            default = "moasha" if len(self.objectives) > 1 else "asha"
            object.__setattr__(self, "scheduler", default)

    @classmethod
    def from_dict(cls, raw: Mapping, *, here: bool = True) -> Study:
        allowed = {f.name for f in fields(cls)} - {"search_space"} | {"space"}
        check_keys("study", raw, allowed)
        values = {("search_space" if k == "space" else k): v for k, v in raw.items()}
        if values.get("searcher") == "darts":  # a scheduler would stop the supernet
            values.setdefault("scheduler", "fifo")
        for key, kind in KINDS.items():  # the file's names (`space`, not `search_space`)
            if key in raw and not (raw[key] is None and key in _NULLABLE):
                _typed(key, raw[key], kind, positive=key in ("trials", "parallel"))
        if "objectives" in values:
            values["objectives"] = _objectives(values["objectives"])
        for key in [key for key in ("warm_start", "calibrate_from") if key in values]:
            values[key] = warm_sources(values[key], key)
        for key in checks.FILE_KEYS:  # from the cwd (`read` takes a file's from its folder)
            if isinstance(values.get(key), str):
                values[key] = str(Path(values[key]).expanduser().resolve())
        study = cls(**values)
        study.validate(here=here)  # here: the files a run on this machine needs exist
        return study

    def validate(self, *, here: bool = True) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("searcher", self.searcher, search.SEARCHERS)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("dataset", self.dataset, DATASETS)
        _choice("deploy", self.deploy, RUNTIMES)
        if self.dataset not in EMBEDDED:
            if not self.data_path:
                raise ConfigError(f"dataset {self.dataset!r} needs data_path")
            if here and not Path(self.data_path).expanduser().exists():
                raise ConfigError(f"data_path {self.data_path!r} does not exist")
        check_keys("trial", self.trial, FLAT_KEYS - _OWNED)
        try:
            self.trial_settings()
        except ValueError as error:  # a `trainers.settings.SettingError` says its value
            hint = checks.number_hint(getattr(error, "value", None))
            raise ConfigError(f"trial: {error}{hint}") from error
        allowed = [m for m in METRICS if m not in MEASURED_AT_START.values()]  # no result: a check
        for metric, _ in self.objectives:
            if metric not in allowed and not self.trainable:
                hint = did_you_mean(metric, allowed)
                raise ConfigError(
                    f"objectives: unknown metric {metric!r}{hint}; allowed: {allowed}"
                )
        if not self.trainable:  # a trainable's constraints may bound any metric it reports
            check_keys("constraints", self.constraints, COST_METRICS)
        for key, value in self.constraints.items():
            _typed(f"constraints.{key}", value, (int, float), positive=True)
        try:
            options = search.searcher_options(self.searcher)
        except ValueError as error:
            raise ConfigError(str(error)) from error
        check_keys(f"searcher_options ({self.searcher})", self.searcher_options, options)
        if self.searcher == "darts" and (self.arch not in ("nb201", "chain") or self.trainable):
            raise ConfigError(f"searcher darts: arch must be nb201 or chain, got {self.arch!r}")
        if self.searcher == "darts" and self.scheduler != "fifo":  # it would stop the supernet
            raise ConfigError(f"searcher darts: scheduler must be fifo, got {self.scheduler!r}")
        if self.latency != "local" and not re.fullmatch(r"remote://[^\s:/]+:\d+", self.latency):
            raise ConfigError(f"latency: 'local' or 'remote://host:port', got {self.latency!r}")
        if here and self.latency_token_file and not Path(self.latency_token_file).exists():
            raise ConfigError(f"latency_token_file {self.latency_token_file!r} does not exist")
        if self.gpus_per_trial < 0 or self.cpus_per_trial <= 0:
            raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
        if self.trainable and here:  # importable here
            from cluster.study import custom

            custom.check(self)
        space = self.space()  # checks arch_options and train ranges
        if self.scheduler == "pbt" and not any(k.startswith("train.") for k in space.params):
            raise ConfigError("scheduler pbt perturbs training hyperparameters: set train")

    def check_data(self):
        """The dataset (`trainers.data.Dataset`), loaded once, here: a bad file, or data of a
        rank the model does not take, fails before any trial starts; trials get it by reference."""
        from trainers.data import load_dataset
        from trainers.models import check_input

        model = self.trial.get("model", "auto")
        try:
            data = load_dataset(self.dataset, self.data_path)
            check_input(self.arch if model == "auto" else model, data.in_shape)
        except (ValueError, OSError) as error:
            raise ConfigError(f"dataset {self.dataset!r}: {error}") from error
        return data

    def space(self) -> Space:
        if self.trainable:
            from cluster.study.custom import parse_space

            return held(parse_space(self.search_space), self.fixed)
        checks.check_options(self.arch, ARCHS[self.arch], self.arch_options)
        try:
            arch = ARCHS[self.arch](**self.arch_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"arch_options for {self.arch!r}: {error}") from error
        parts = {"arch": arch}
        for section, full in (("train", spaces.training), ("compress", spaces.compression)):
            values = getattr(self, section)
            if values is True:
                parts[section] = full()
            elif isinstance(values, Mapping) and values:
                parts[section] = narrowed(section, full(), values)
            elif values not in (False, None, {}):
                raise ConfigError(f"{section}: true, false or a mapping of ranges, got {values!r}")
        return held(Space.combine(parts), self.fixed)

    def trial_settings(self) -> TrialSettings:
        """The study's `trial` section with the keys the study owns, parsed once (`validate`
        does); its latency source is bound where the trial runs
        (`cluster.raytune.trainable.bound`)."""
        return self._settings

    @cached_property
    def _settings(self) -> TrialSettings:
        return TrialSettings.from_flat(
            {
                **self.trial,
                "runtime": self.deploy,
                "dataset": self.dataset,
                "data_path": self.data_path,
                "constraints": dict(self.constraints),
                "seed": self.seed,
                "cache_dir": str(Path(self.dir).resolve() / "cache"),
                "save_dir": str(Path(self.dir).resolve() / "models"),  # for `paretune export`
            }
        )

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["objectives"] = [list(o) for o in self.objectives]
        values["space"] = values.pop("search_space")
        return json.loads(json.dumps(values))


_OWNED = {"dataset", "data_path", "constraints", "seed", "cache_dir", "latency_source", "runtime"}
_OWNED |= {"save_dir"}  # the trial keys the study sets (runtime: its deploy; save_dir: DIR/models)


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{key}: {value!r} is not allowed{did_you_mean(value, allowed)}; "
            f"allowed: {sorted(allowed)}"
        )


def _objectives(raw) -> tuple[tuple[str, str], ...]:
    items = list(raw.items()) if isinstance(raw, Mapping) else raw
    pairs = []
    for item in items if isinstance(items, list | tuple) else [items]:
        if isinstance(item, Mapping):
            item = (item.get("metric"), item.get("mode", "max"))
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ConfigError(f"objectives: each {{metric: max or min}} or a pair, got {item!r}")
        metric, mode = item
        if mode not in ("max", "min"):
            raise ConfigError(f"objectives.{metric}: mode must be 'max' or 'min', got {mode!r}")
        pairs.append((metric, mode))
    if not pairs:
        raise ConfigError("objectives: at least one, e.g. {val_acc: max}")
    return tuple(pairs)


def read(path: str | Path) -> Study:
    """A study from a `.yaml`/`.yml`/`.toml` file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"study file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else checks.parse_yaml(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from error
    if not raw:
        raise ConfigError(
            f"study file {str(path)!r} is empty: name what to search (e.g. `arch: chain`, "
            "`train: true`), or run `paretune run` with no file for the default study"
        )
    if isinstance(raw, Mapping) and "trainable" in raw:  # importable from the file's folder
        raw = {"trainable_path": ".", **raw}
    if isinstance(raw, Mapping):  # relative paths from the file's folder
        raw = checks.from_folder(raw, path.resolve().parent)
    return Study.from_dict(raw)
