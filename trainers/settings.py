"""What a trial is told, with no torch: the settings groups and their flat study-file keys, the
dataset, runtime and metric names, the defaults, the steps a trial reports and the bounds check.
Reading a study (the dashboard, the study service, `paretune results`) imports only this."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

from spaces.util import did_you_mean

EPOCHS = 15  # training epochs of a trial, of a teacher and of `trainers.train.TrainSettings`
LATENCY_REPEATS = 20  # timed batches of a latency measurement
FINETUNE_SHARE = 8 / 15  # fine-tuning epochs after pruning, as a share of `epochs`
QAT_SHARE = 4 / 15  # quantization-aware training epochs, as a share of `epochs`
DATASETS = ("digits", "mnist1d", "numpy", "folder", "cifar10")  # `trainers.load_dataset`'s
EMBEDDED = ("digits", "mnist1d")  # the datasets that need no path
RUNTIMES = ("onnxruntime", "torch")  # what latency is measured on (`trainers.deploy`)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # training's autocast (`trainers.device.precision`)
# The knob each compression switch cannot do without (it has no default): `check_compress`
# refuses a switch on without it, and a study's `compress:` section brings it with the switch.
SWITCH_NEEDS = {
    "prune": "prune_ratio",
    "neuron_prune": "neuron_ratio",
    "weight_prune": "weight_sparsity",
}
COST_METRICS = ("params", "macs", "size_bytes", "latency_ms", "peak_mem_bytes")
# Every metric a trial row may hold, in the results' column order: `val_acc` and `test_acc`
# are the deployed model's (`trainers.outcome.final_result`), `torch_*` the PyTorch model's;
# `size_bytes` is the deployed file's, `packed_bytes` paretune's packed storage.
METRICS = ("val_acc", "test_acc", "latency_ms", "size_bytes", "torch_val_acc", "torch_test_acc")
METRICS += ("packed_bytes", "score_seconds", "macs", "params", "peak_mem_bytes", "train_loss")
METRICS += ("train_seconds", "start_latency_ms")
# A cost's column measured by its trial before training (every epoch's report carries it): a
# trial stopped at a rung is thus a pair of price and measurement, what `search.calibrate` reads.
MEASURED_AT_START = {"latency_ms": "start_latency_ms"}
# The default chain model of the benchmarks and of a trial given no architecture.
DEFAULT_CHAIN = {"s0_depth": 1, "s0_width": 32, "s0_kernel": 3, "s0_expand": 3}
DEFAULT_CHAIN |= {"s1_depth": 2, "s1_width": 64, "s1_kernel": 3, "s1_expand": 6}
DEFAULT_CHAIN |= {"s2_depth": 2, "s2_width": 128, "s2_kernel": 3, "s2_expand": 6}


def check_runtime(runtime: str, *, key: str = "runtime") -> None:
    """Raise `ValueError` naming `key` and the allowed runtimes unless `runtime` is one."""
    if runtime not in RUNTIMES:
        raise ValueError(f"{key}: {runtime!r} is not allowed; allowed: {list(RUNTIMES)}")


@dataclass(frozen=True)
class DataSettings:
    """The dataset a trial trains on (`trainers.load_dataset(dataset, path)`)."""

    dataset: str = "digits"
    path: str | None = None


@dataclass(frozen=True)
class Schedule:
    """Epochs and optimizer of each training phase: training (its optimizer is searched), the
    fine-tuning after pruning and quantization-aware training. `epochs` is the whole budget's
    scale: fine-tuning and QAT default (None) to `FINETUNE_SHARE` and `QAT_SHARE` of it, at
    least 1 each (8 and 4 of 15); a number given is kept."""

    epochs: int = EPOCHS
    finetune_epochs: int | None = None
    finetune: Mapping = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.05})
    freeze: tuple[str, ...] = ()  # parameter-name prefixes fine-tuning keeps fixed
    qat_epochs: int | None = None
    qat: Mapping = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.01})

    def __post_init__(self):
        _count("epochs", self.epochs, least=1, why=" (a trial trains at least one epoch)")
        for key in ("finetune_epochs", "qat_epochs"):
            if getattr(self, key) is not None:
                _count(key, getattr(self, key), why=", or left out for a share of 'epochs'")

    @property
    def finetune_count(self) -> int:
        """The fine-tuning epochs after pruning."""
        return _share(self.finetune_epochs, self.epochs, FINETUNE_SHARE)

    @property
    def qat_count(self) -> int:
        """The quantization-aware training epochs."""
        return _share(self.qat_epochs, self.epochs, QAT_SHARE)


def _share(given: int | None, epochs: int, share: float) -> int:
    """`given`, or when None `share` of `epochs` (at least 1)."""
    return max(1, round(epochs * share)) if given is None else given


class SettingError(ValueError):
    """A trial setting not allowed: the message names `key` and what it allows; `value` is
    what was given (a study file's reader adds its hint on quoted numbers)."""

    def __init__(self, message: str, *, key: str, value):
        super().__init__(message)
        self.key, self.value = key, value


def _count(key: str, value, *, least: int = 0, why: str = "") -> int:
    """`value`, unless it is not a whole number >= `least` (a `SettingError` naming `key`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        message = f"trial setting {key!r} must be a whole number >= {least}{why}, got {value!r}"
        raise SettingError(message, key=key, value=value)
    return value


@dataclass(frozen=True)
class CompressionSettings:
    """How pruning and quantization run, beyond the searched `compress.` keys."""

    stage_ratios: Mapping[str, float] | None = None  # per-stage prune ratios over prune_ratio
    calibration_samples: int = 256
    act_range: str = "minmax"


@dataclass(frozen=True)
class TeacherSettings:
    """The distillation teacher: trained once per architecture and cached in `cache_dir`."""

    arch: Mapping | None = None  # default: DEFAULT_CHAIN for chains, else the student's
    width: float = 2.0
    epochs: int = EPOCHS
    distill_layer: str | None = None  # default: the model's feature layer
    cache_dir: str | None = None  # default: ~/.cache/paretune


@dataclass(frozen=True)
class CostSettings:
    """The cost limits a trial is judged by (before training, and on its final measurement),
    and how latency is measured: on `runtime` (`RUNTIMES`), as that runtime runs the
    compressed model."""

    constraints: Mapping[str, float] = field(default_factory=dict)
    latency_batch: int = 64
    latency_threads: int = 1
    latency_repeats: int = LATENCY_REPEATS
    latency_source: Callable | None = None  # `f(model, in_shape, *, batch_size, repeats,
    # threads, onnx) -> ms` measuring elsewhere (a device server; `onnx`: the runtime's graph
    # as bytes under onnxruntime, else None); None measures here
    runtime: str = "onnxruntime"  # a study's `deploy` key

    def __post_init__(self):
        check_runtime(self.runtime, key="trial setting 'runtime'")

    def timing(self) -> dict:
        """`trainers.measure`'s keywords (`runtime`, `batch_size`, `repeats`, `threads`,
        `source`): the one place the settings' names meet the measuring functions'."""
        return {
            "runtime": self.runtime,
            "batch_size": self.latency_batch,
            "repeats": self.latency_repeats,
            "threads": self.latency_threads,
            "source": self.latency_source,
        }


@dataclass(frozen=True)
class TrialSettings:
    """Everything about a trial that is not searched, named flat by a study's `trial:` section
    (`FLAT_KEYS`; `from_flat` groups them), but for the trial's `gpus_per_trial` (None outside
    Ray) and GPU ids, set where it starts (`trainers.device`)."""

    model: str = "auto"
    model_options: Mapping = field(default_factory=dict)
    data: DataSettings = field(default_factory=DataSettings)
    schedule: Schedule = field(default_factory=Schedule)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    cost: CostSettings = field(default_factory=CostSettings)
    device: str = "auto"
    precision: str = "auto"
    gpu_share: float | None = field(default=None, metadata={"flat": False})
    gpu_ids: tuple[str, ...] = field(default=(), metadata={"flat": False})
    seed: int = 0
    save_path: str | None = None
    save_dir: str | None = None  # a study's models: `trainers.export.model_file(save_dir, config)`
    snapshots: bool = False  # training reports carry model and optimizer state (for PBT)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            message = f"trial setting 'precision' {self.precision!r}: allowed {list(PRECISIONS)}"
            raise SettingError(message, key="precision", value=self.precision)

    @classmethod
    def from_flat(cls, flat: Mapping) -> TrialSettings:
        """Settings from flat keys (`{"epochs": 3, "teacher_epochs": 8}`), each put in its
        group; an unknown key or a value not allowed raises `ValueError` naming it."""
        top, groups = {}, {group: {} for group in _GROUPS}
        for key, value in flat.items():
            if key not in _PLACES:
                raise ValueError(
                    f"unknown trial setting {key!r}{did_you_mean(key, FLAT_KEYS)}; "
                    f"allowed: {sorted(FLAT_KEYS)}"
                )
            group, name = _PLACES[key]
            (groups[group] if group else top)[name] = _typed(key, value, _DEFAULTS[key])
        return cls(**top, **{group: _GROUPS[group](**kw) for group, kw in groups.items()})

    def to_flat(self) -> dict:
        """The flat keys `from_flat` reads, each with its value."""
        return {
            key: getattr(getattr(self, group) if group else self, name)
            for key, (group, name) in _PLACES.items()
        }


_GROUPS = {
    "data": DataSettings,
    "schedule": Schedule,
    "compression": CompressionSettings,
    "teacher": TeacherSettings,
    "cost": CostSettings,
}
# Flat keys that are not the field's own name: the group alone would not say what they are.
_FLAT_NAMES = {
    ("data", "path"): "data_path",
    ("teacher", "arch"): "teacher_arch",
    ("teacher", "width"): "teacher_width",
    ("teacher", "epochs"): "teacher_epochs",
}


def _places() -> dict[str, tuple[str | None, str]]:
    top = [f.name for f in fields(TrialSettings) if f.metadata.get("flat", True)]
    places = {name: (None, name) for name in top if name not in _GROUPS}
    for group, kind in _GROUPS.items():
        for f in fields(kind):
            key = _FLAT_NAMES.get((group, f.name), f.name)
            assert key not in places, f"flat trial key {key!r} is ambiguous"
            places[key] = (group, f.name)
    return places


_PLACES = _places()  # flat key -> (group, field); group None is TrialSettings itself
FLAT_KEYS = frozenset(_PLACES)  # the keys of a study file's `trial:` section
_DEFAULTS = TrialSettings().to_flat()
_KINDS = {
    bool: "true or false",
    int: "a whole number >= 0",
    float: "a number",
    str: "text",
    tuple: "a list",
    Mapping: "a mapping",
}


def _typed(key: str, value, default):
    """`value` checked against the kind of `default` (a count is a whole number >= 0, a
    tuple may come as a list); a default of None takes anything (its group checks it)."""
    if default is None:
        return value
    if isinstance(default, tuple) and isinstance(value, list | tuple):
        return tuple(value)
    kind = type(default) if type(default) in _KINDS else Mapping
    if kind is int:
        return _count(key, value)
    accepted = int | float if kind is float else kind
    if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
        message = f"trial setting {key!r} must be {_KINDS[kind]}, got {value!r}"
        raise SettingError(message, key=key, value=value)
    return value


def max_steps(settings: TrialSettings, *, compress: bool) -> int:
    """The most reports one trial makes: its training epochs, fine-tuning and QAT epochs
    where it compresses (`compress`), and its final row."""
    schedule = settings.schedule
    phases = schedule.finetune_count + schedule.qat_count if compress else 0
    return schedule.epochs + phases + 1


def violations(cost: Mapping, constraints: Mapping[str, float]) -> dict[str, float]:
    """Each limited cost over its limit, by its relative excess `(cost - limit) / limit`, the
    unit `search.Objective.violations` uses (empty when the config fits). A cost not measured
    (None or absent) breaks no bound."""
    unknown = sorted(set(constraints) - set(COST_METRICS))
    if unknown:
        raise ValueError(f"constraints {unknown}: allowed {list(COST_METRICS)}")
    return {
        k: (cost[k] - limit) / max(abs(limit), 1e-12)
        for k, limit in constraints.items()
        if cost.get(k) is not None and cost[k] > limit
    }
