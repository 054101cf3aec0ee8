"""One trial: a joint config in; a trained, pruned, quantized, distilled and measured model out."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from spaces.util import did_you_mean
from trainers import prune as pruning
from trainers import quantize, sparsity, store
from trainers.cost import count_macs, count_params, deployed_latency, size_bytes
from trainers.data import Dataset, load_dataset
from trainers.deploy import check_runtime
from trainers.distill import Distiller, cached_teacher
from trainers.export import model_file
from trainers.memory import peak_mem_bytes
from trainers.models import FEATURE_LAYERS, build_model, infer_model
from trainers.train import TrainSettings, evaluate, resolve_device, train

# The default chain model of the benchmarks and of a trial given no architecture.
DEFAULT_CHAIN = {
    "s0_depth": 1,
    "s0_width": 32,
    "s0_kernel": 3,
    "s0_expand": 3,
    "s1_depth": 2,
    "s1_width": 64,
    "s1_kernel": 3,
    "s1_expand": 6,
    "s2_depth": 2,
    "s2_width": 128,
    "s2_kernel": 3,
    "s2_expand": 6,
}
COST_METRICS = ("params", "macs", "size_bytes", "latency_ms", "peak_mem_bytes")


@dataclass(frozen=True)
class DataSettings:
    """The dataset a trial trains on (`trainers.load_dataset(dataset, path)`)."""

    dataset: str = "digits"
    path: str | None = None


@dataclass(frozen=True)
class Schedule:
    """Epochs and optimizer of each training phase: training (its optimizer is searched), the
    fine-tuning after pruning and quantization-aware training."""

    epochs: int = 15
    finetune_epochs: int = 8
    finetune: Mapping = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.05})
    freeze: tuple[str, ...] = ()  # parameter-name prefixes fine-tuning keeps fixed
    qat_epochs: int = 4
    qat: Mapping = field(default_factory=lambda: {"optimizer": "sgd", "lr": 0.01})


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
    epochs: int = 15
    distill_layer: str | None = None  # default: the model's feature layer
    cache_dir: str | None = None  # default: ~/.cache/paretune


@dataclass(frozen=True)
class CostSettings:
    """The cost limits that reject a config before training, and how latency is measured: on
    `runtime` (`trainers.deploy.RUNTIMES`), as that runtime runs the compressed model."""

    constraints: Mapping[str, float] = field(default_factory=dict)
    latency_batch: int = 64
    latency_threads: int = 1
    latency_repeats: int = 20
    latency_source: Callable | None = None  # `f(model, in_shape, *, batch_size, repeats,
    # threads, onnx) -> ms` measuring elsewhere (a device server; `onnx`: the runtime's graph
    # as bytes under onnxruntime, else None); None measures here
    runtime: str = "onnxruntime"  # a study's `deploy` key

    def __post_init__(self):
        check_runtime(self.runtime, key="trial setting 'runtime'")


@dataclass(frozen=True)
class TrialSettings:
    """Everything about a trial that is not searched: the model builder, the data, the epochs,
    the compression steps, the teacher, the cost limits, the device, where the model is saved.
    A study file's `trial:` section names them flat (`FLAT_KEYS`); `from_flat` groups them."""

    model: str = "auto"
    model_options: Mapping = field(default_factory=dict)
    data: DataSettings = field(default_factory=DataSettings)
    schedule: Schedule = field(default_factory=Schedule)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    cost: CostSettings = field(default_factory=CostSettings)
    device: str = "auto"
    seed: int = 0
    save_path: str | None = None
    save_dir: str | None = None  # a study's models: `trainers.export.model_file(save_dir, config)`
    snapshots: bool = False  # training reports carry model and optimizer state (for PBT)

    @classmethod
    def from_flat(cls, flat: Mapping) -> TrialSettings:
        """Settings from flat keys (`{"epochs": 3, "teacher_epochs": 8}`), each put in its
        group; an unknown key raises `ValueError` naming it and the allowed ones."""
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
    places = {f.name: (None, f.name) for f in fields(TrialSettings) if f.name not in _GROUPS}
    for group, kind in _GROUPS.items():
        for f in fields(kind):
            key = _FLAT_NAMES.get((group, f.name), f.name)
            assert key not in places, f"flat trial key {key!r} is ambiguous"
            places[key] = (group, f.name)
    return places


_PLACES = _places()  # flat key -> (group, field); group None is TrialSettings itself
FLAT_KEYS = frozenset(_PLACES)  # the keys of a study file's `trial:` section
_DEFAULTS = TrialSettings().to_flat()


def _typed(key: str, value, default):
    """`value` checked against the kind of `default` (a count is a whole number >= 0, a
    tuple may come as a list); a default of None takes anything."""
    if default is None:
        return value
    if isinstance(default, tuple) and isinstance(value, list | tuple):
        return tuple(value)
    kind = type(default) if type(default) in _KINDS else Mapping
    accepted = int | float if kind is float else kind
    if (
        not isinstance(value, accepted)
        or (isinstance(value, bool) and kind is not bool)
        or (kind is int and value < 0)
    ):
        raise ValueError(f"trial setting {key!r} must be {_KINDS[kind]}, got {value!r}")
    return value


_KINDS = {
    bool: "true or false",
    int: "a whole number >= 0",
    float: "a number",
    str: "text",
    tuple: "a list",
    Mapping: "a mapping",
}


def split_config(config: Mapping) -> tuple[dict, dict, dict]:
    """`(arch, train, compress)` from `arch.`/`train.`/`compress.` keys; a config without
    prefixes is all architecture."""
    parts = {"arch": {}, "train": {}, "compress": {}}
    for key, value in config.items():
        head, _, rest = key.partition(".")
        if rest and head in parts:
            parts[head][rest] = value
        elif rest:
            raise ValueError(f"config key {key!r}: prefixes allowed are {sorted(parts)}")
        else:
            parts["arch"][key] = value
    return parts["arch"], parts["train"], parts["compress"]


def _quant_spec(compress: Mapping) -> quantize.QuantSpec:
    """`weight_bits` 1 is binary (its scheme `binary`, per channel unless asked otherwise)."""
    bits = compress.get("weight_bits", 8)
    return quantize.QuantSpec(
        bits,
        compress.get("quant_scheme", "binary" if bits == 1 else "linear"),
        compress.get("quant_granularity", "per_channel") == "per_channel",
    )


def _end_bits(compress: Mapping) -> int:
    """The bits of the first and last layers: `first_last_bits`, by default 8 for binary weights
    and `weight_bits` otherwise."""
    bits = compress.get("weight_bits", 8)
    ends = compress.get("first_last_bits", 8 if bits == 1 else bits)
    if isinstance(ends, bool) or not isinstance(ends, int) or not 1 <= ends <= 16:
        raise ValueError(f"first_last_bits {ends!r}: allowed 1 to 16")
    return ends


def _quant_overrides(model: nn.Module, compress: Mapping) -> dict[str, quantize.QuantSpec]:
    """`quantize.prepare`'s overrides: the end layers at `_end_bits` (linear, per channel)."""
    ends = _end_bits(compress)
    if ends == _quant_spec(compress).bits:
        return {}
    spec = quantize.QuantSpec(ends, "binary" if ends == 1 else "linear", per_channel=True)
    return {name: spec for name in quantize.end_layers(model)}


def _needed(compress: Mapping, key: str, switch: str):
    if key not in compress:
        raise ValueError(f"compress.{switch} is on but compress.{key} is missing")
    return compress[key]


def _check_compress(compress: Mapping, compression: CompressionSettings) -> None:
    """Every switched-on step's knobs, checked before training: a value not allowed raises a
    `ValueError` naming its key and the allowed values."""
    if compress.get("prune"):
        if compression.stage_ratios is None:
            pruning.check_ratio("prune_ratio", _needed(compress, "prune_ratio", "prune"))
        criterion = compress.get("prune_criterion", "l1")
        if criterion not in pruning.CRITERIA:
            raise ValueError(f"prune_criterion {criterion!r}: allowed {list(pruning.CRITERIA)}")
    if compress.get("neuron_prune"):
        ratio = _needed(compress, "neuron_ratio", "neuron_prune")
        pruning.check_neurons(ratio=ratio, criterion=compress.get("neuron_criterion", "activation"))
    if compress.get("weight_prune"):
        share = _needed(compress, "weight_sparsity", "weight_prune")
        sparsity.check(sparsity=share, scope=compress.get("weight_prune_scope", "lamp"))
    if compress.get("quantize"):
        _quant_spec(compress)
        _end_bits(compress)
        if compress.get("quant_mode", "ptq") not in ("ptq", "qat"):
            raise ValueError(f"quant_mode {compress['quant_mode']!r}: allowed ['ptq', 'qat']")


def _prune_ratio(compress: Mapping, compression: CompressionSettings):
    return compression.stage_ratios or float(compress["prune_ratio"])


def _model_name(arch: Mapping, settings: TrialSettings) -> str:
    return infer_model(arch) if settings.model == "auto" else settings.model


def estimate_cost(config: Mapping, settings: TrialSettings, *, in_shape, num_classes: int):
    """`params`, `macs`, `size_bytes`, `latency_ms` and `peak_mem_bytes` known before training:
    the untrained model built, pruned to its final shapes, quantized to its final storage and
    timed as trained ones are (on the runtime's graph, int8 activations calibrated on random
    inputs). Takes a fraction of a second to a second."""
    arch, _, compress = split_config(config)
    arch = arch or DEFAULT_CHAIN
    name = _model_name(arch, settings)
    model = build_model(
        name, arch, in_shape=in_shape, num_classes=num_classes, options=settings.model_options
    )
    _final_shapes(model, compress, settings.compression)
    model = model.to(resolve_device(settings.device))
    inputs = torch.randn(64, *in_shape, generator=torch.Generator().manual_seed(0))
    inputs = inputs.to(resolve_device(settings.device))
    if compress.get("quantize"):
        act_bits = int(compress.get("act_bits", 32))
        overrides = _quant_overrides(model, compress)
        hooks = quantize.prepare(
            model, _quant_spec(compress), act_bits=act_bits, overrides=overrides
        )
        quantize.calibrate(model, hooks, inputs)
        quantize.finalize(model, hooks)
    cost = settings.cost
    repeats = max(3, cost.latency_repeats // 4)
    latency = _latency(model, in_shape, cost, repeats=repeats, calibration=inputs)
    return {
        "params": count_params(model),
        "macs": count_macs(model, in_shape),
        "size_bytes": size_bytes(model),
        "latency_ms": latency,
        "peak_mem_bytes": peak_mem_bytes(model, in_shape),
    }


def _latency(model, in_shape, cost: CostSettings, *, repeats: int, calibration) -> float:
    """As deployed: after quantization, on `cost.runtime` (`trainers.cost.deployed_latency`)."""
    return deployed_latency(
        model,
        in_shape,
        runtime=cost.runtime,
        calibration=calibration,
        batch_size=cost.latency_batch,
        repeats=repeats,
        threads=cost.latency_threads,
        source=cost.latency_source,
    )


def violations(cost: Mapping, constraints: Mapping[str, float]) -> dict[str, float]:
    """Each limited cost over its limit, by its relative excess `(cost - limit) / limit`, the
    unit `search.Objective.violations` uses (empty when the config fits)."""
    unknown = sorted(set(constraints) - set(COST_METRICS))
    if unknown:
        raise ValueError(f"constraints {unknown}: allowed {list(COST_METRICS)}")
    return {
        k: (cost[k] - limit) / max(abs(limit), 1e-12)
        for k, limit in constraints.items()
        if cost[k] > limit
    }


def _teacher_arch(arch: Mapping, name: str, teacher: TeacherSettings) -> Mapping:
    return teacher.arch or (DEFAULT_CHAIN if name == "chain" else arch)


def _teacher(arch: Mapping, data: Dataset, settings: TrialSettings, device) -> nn.Module:
    teacher_name = infer_model(arch)
    options = {**settings.model_options, "width_mult": settings.teacher.width}
    fit_settings = TrainSettings(epochs=settings.teacher.epochs, seed=settings.seed)
    key = {
        "arch": arch,
        "options": options,
        "data": [data.name, list(data.in_shape), len(data.x_train)],
        "train": repr(fit_settings),
    }
    cache = Path(settings.teacher.cache_dir or Path.home() / ".cache" / "paretune")

    def build():
        torch.manual_seed(settings.seed)
        return build_model(
            teacher_name,
            arch,
            in_shape=data.in_shape,
            num_classes=data.num_classes,
            options=options,
        ).to(device)

    teacher = cached_teacher(key, build, lambda m: train(m, data, fit_settings), cache)
    teacher.layer = settings.teacher.distill_layer or FEATURE_LAYERS[teacher_name]
    return teacher


@dataclass(frozen=True)
class _Run:
    """One trial under way: its model and what each of its training phases shares."""

    model: nn.Module
    name: str  # the model's builder
    data: Dataset
    settings: TrialSettings
    base: TrainSettings  # the searched training hyperparameters, for the training phase
    compress: Mapping  # the searched `compress.` keys
    teacher: nn.Module | None  # None: no distillation
    report: Callable[[dict], None] | None


def _distiller(run: _Run) -> Distiller | None:
    if run.teacher is None:
        return None
    torch.manual_seed(run.settings.seed)  # the adapter's initial weights
    return Distiller(
        run.model,
        run.teacher,
        layer=run.settings.teacher.distill_layer or FEATURE_LAYERS[run.name],
        teacher_layer=run.teacher.layer,
        sample=run.data.x_train[:2],
        weight=float(run.compress.get("distill_weight", 1.0)),
        temperature=float(run.compress.get("distill_temperature", 4.0)),
        loss=run.compress.get("distill_loss", "mse"),
    )


def _train_phase(run: _Run, tune: TrainSettings, *, phase: str, steps: int, **resumable) -> int:
    """`steps`: the first step's number; returns the next phase's."""
    distill = _distiller(run)
    try:
        train(
            run.model,
            run.data,
            tune,
            report=run.report,
            extra_loss=distill,
            phase=phase,
            first_step=steps,
            **resumable,
        )
    finally:
        if distill is not None:
            distill.close()
    return steps + tune.epochs


def run_trial(
    config: Mapping,
    report: Callable[[dict], None] | None = None,
    *,
    settings: TrialSettings | None = None,
    resume: dict | None = None,
) -> dict:
    """Build, train, prune and fine-tune, quantize (PTQ, or QAT), distill throughout, measure.
    `report(row)` after every epoch (`step`, `phase`, `epoch`, `train_loss`, `val_acc`). Returns
    `val_acc`, `test_acc` (percent), `latency_ms`, `size_bytes`, `macs`, `params`,
    `peak_mem_bytes`, `status`
    (`completed`; `infeasible` with `violations` when the cost known beforehand breaks
    `settings.cost.constraints`, untrained; `failed` with `error` and every other metric when
    the latency could not be measured: a device server lost, a model the runtime cannot export)
    and `records` (one JSON record per compression step). Costs are those of the model as
    `settings.cost.runtime` runs it (`trainers.deploy`), timed after quantization.
    With `settings.snapshots`, each training epoch's report carries a `"snapshot"`;
    `resume` continues training from one (population-based training swaps weights this way)."""
    settings = settings or TrialSettings()
    if "supernet" in config:  # a `search.darts` supernet: trains it, measures what it derives
        from trainers.supernet_trial import run_supernet

        result = run_supernet(config, report, settings=settings)
        # the study records the trial under the architecture its final metrics measure
        result["trained_with"] = {**config, **result.pop("derived")}
        return result
    started = time.perf_counter()
    arch, train_config, compress = split_config(config)
    _check_compress(compress, settings.compression)
    arch = arch or DEFAULT_CHAIN
    name = _model_name(arch, settings)
    data = load_dataset(settings.data.dataset, settings.data.path)
    shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    if settings.cost.constraints:
        cost = estimate_cost(config, settings, **shape)
        over = violations(cost, settings.cost.constraints)
        if over:
            elapsed = time.perf_counter() - started
            return {"status": "infeasible", "violations": over, **cost, "train_seconds": elapsed}
    device = resolve_device(settings.device)
    data = data.to(device)
    torch.manual_seed(settings.seed)
    model = build_model(name, arch, **shape, options=settings.model_options).to(device)
    base = TrainSettings.from_config(
        train_config, epochs=settings.schedule.epochs, seed=settings.seed
    )
    teacher = None
    if compress.get("distill"):
        teacher = _teacher(_teacher_arch(arch, name, settings.teacher), data, settings, device)
    run = _Run(model, name, data, settings, base, compress, teacher, report)
    steps = _train_phase(
        run, base, phase="train", steps=1, snapshots=settings.snapshots, resume=resume
    )
    records, steps = _prune(run, steps)
    if compress.get("quantize"):
        records.append(_quantize(run, steps))
    try:  # timed as deployed: after quantization, on the runtime's graph
        calibration = data.x_train[: settings.compression.calibration_samples]
        repeats = settings.cost.latency_repeats
        latency = _latency(
            model, data.in_shape, settings.cost, repeats=repeats, calibration=calibration
        )
        failure = None
    except Exception as error:  # a device server lost, a model the runtime cannot export
        latency, failure = None, f"latency not measured: {type(error).__name__}: {error}"
    result = {
        "status": "completed" if failure is None else "failed",
        "val_acc": evaluate(model, data.x_val, data.y_val),
        "test_acc": evaluate(model, data.x_test, data.y_test),
        "latency_ms": latency,
        "size_bytes": size_bytes(model),
        "macs": count_macs(model, data.in_shape),
        "params": count_params(model),
        "peak_mem_bytes": peak_mem_bytes(model, data.in_shape),
        "records": records,
        "train_seconds": time.perf_counter() - started,
    }
    if failure is not None:
        result["error"] = failure
    paths = [Path(p) for p in (settings.save_path,) if p]
    if settings.save_dir:  # a study keeps every trial's model for `paretune export`
        paths.append(model_file(settings.save_dir, config))
        paths[-1].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        description = {
            "model": name,
            "arch": arch,
            "options": dict(settings.model_options),
            "records": records,
            **shape,
        }
        store.save(path, model, description=description)
    return result


def _prune_model(
    model: nn.Module, compress: Mapping, compression: CompressionSettings, *, data=None
) -> list[dict]:
    """The switched-on pruning steps in order: filters, neurons, weights (masks held). `data`
    ranks by the searched criteria; without it (an untrained model) filters and neurons rank by
    L1. Returns their records."""
    records = []
    if compress.get("prune"):
        criterion = compress.get("prune_criterion", "l1") if data is not None else "l1"
        gradients = None
        if criterion == "gradient":
            gradients = pruning.gradient_importance(model, data.x_train, data.y_train)
        ratio = _prune_ratio(compress, compression)
        records.append(pruning.prune(model, ratio=ratio, criterion=criterion, gradients=gradients))
    if compress.get("neuron_prune"):
        criterion = compress.get("neuron_criterion", "activation") if data is not None else "l1"
        x = data.x_train[:512] if data is not None else None
        ratio = compress["neuron_ratio"]
        records.append(pruning.prune_neurons(model, ratio=ratio, criterion=criterion, x=x))
    if compress.get("weight_prune"):
        share, scope = compress["weight_sparsity"], compress.get("weight_prune_scope", "lamp")
        records.append(sparsity.prune_weights(model, sparsity=share, scope=scope))
    return records


def _final_shapes(model: nn.Module, compress: Mapping, compression: CompressionSettings) -> None:
    """For `estimate_cost`: an untrained model pruned to its final shapes and weight counts."""
    _prune_model(model, compress, compression)
    sparsity.release(model)


def _prune(run: _Run, steps: int) -> tuple[list[dict], int]:
    """Prune (`_prune_model`), then fine-tune from step `steps` with the weight masks held, then
    bake them in: the records and the next step (`steps` when nothing is pruned)."""
    records = _prune_model(run.model, run.compress, run.settings.compression, data=run.data)
    if not records:
        return records, steps
    schedule = run.settings.schedule
    tune = run.base.but(
        epochs=schedule.finetune_epochs, freeze=tuple(schedule.freeze), **schedule.finetune
    )
    steps = _train_phase(run, tune, phase="finetune", steps=steps)
    sparsity.release(run.model)
    return records, steps


def _quantize(run: _Run, steps: int) -> dict:
    """Quantize, with quantization-aware training from step `steps` in `qat` mode."""
    compress, compression = run.compress, run.settings.compression
    act_bits = int(compress.get("act_bits", 32))
    hooks = quantize.prepare(
        run.model,
        _quant_spec(compress),
        act_bits=act_bits,
        act_range=compression.act_range,
        overrides=_quant_overrides(run.model, compress),
    )
    quantize.calibrate(run.model, hooks, run.data.x_train[: compression.calibration_samples])
    mode = compress.get("quant_mode", "ptq")
    if mode not in ("ptq", "qat"):
        raise ValueError(f"quant_mode {mode!r}: allowed ['ptq', 'qat']")
    if mode == "qat":
        schedule = run.settings.schedule
        _train_phase(
            run, run.base.but(epochs=schedule.qat_epochs, **schedule.qat), phase="qat", steps=steps
        )
    record = quantize.finalize(run.model, hooks)
    record["mode"] = mode
    return record
