import dataclasses

import pytest

from tests.trainers.conftest import SMALL_CHAIN, SMALL_MLP, never_trained
from trainers import (
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
from trainers.compress_keys import split_config
from trainers.store import load
from trainers.train import evaluate

FAST = {"epochs": 2, "finetune_epochs": 1, "qat_epochs": 1, "teacher_epochs": 1}


def _arch(arch):
    return {f"arch.{k}": v for k, v in arch.items()}


def test_full_trial_reports_each_epoch_and_saves(tmp_path, data):
    config = _arch(SMALL_CHAIN) | {
        "train.lr": 0.01,
        "train.optimizer": "adamw",
        "compress.prune": True,
        "compress.prune_ratio": 0.5,
        "compress.prune_criterion": "gradient",
        "compress.quantize": True,
        "compress.weight_bits": 4,
        "compress.act_bits": 8,
        "compress.quant_scheme": "linear",
        "compress.quant_granularity": "per_channel",
        "compress.quant_mode": "qat",
        "compress.distill": True,
        "compress.distill_weight": 0.5,
        "compress.distill_temperature": 3.0,
        "compress.distill_loss": "kl",
    }
    rows = []
    flat = FAST | {"cache_dir": str(tmp_path), "save_path": str(tmp_path / "m.npz")}
    settings = TrialSettings.from_flat(flat)
    result = run_trial(config, rows.append, settings=settings)
    assert [r["phase"] for r in rows] == ["train", "train", "finetune", "qat"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert result["status"] == "completed" and 0 <= result["test_acc"] <= 100
    assert [r["step"] for r in result["records"]] == ["prune", "quantize", "deploy"]
    assert result["macs"] > 0 and result["latency_ms"] > 0 and result["params"] > 0
    model, _ = load(tmp_path / "m.npz")
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result["torch_val_acc"])
    again = run_trial(config, settings=settings)
    assert again["val_acc"] == result["val_acc"]  # seeded, and the cached teacher is the same


def test_estimate_matches_the_trained_model():
    config = _arch(SMALL_CHAIN) | {"compress.prune": True, "compress.prune_ratio": 0.5}
    config |= {"compress.quantize": True, "compress.weight_bits": 6}
    settings = TrialSettings.from_flat(FAST)
    estimate = estimate_cost(config, settings, in_shape=(1, 8, 8), num_classes=10)
    result = run_trial(config, settings=settings)
    for key in ("params", "macs", "size_bytes", "packed_bytes"):
        assert estimate[key] == result[key]


def test_infeasible_config_is_rejected_untrained(monkeypatch):
    import trainers.trial

    monkeypatch.setattr(trainers.trial, "train_phase", never_trained)
    rows = []
    result = run_trial(
        _arch(SMALL_MLP),
        rows.append,
        settings=TrialSettings.from_flat({"constraints": {"params": 1000}}),
    )
    assert not rows
    assert result["status"] == "infeasible" and result["violations"]["params"] > 0


def test_a_priced_trial_measures_its_latency_again_before_training(monkeypatch):
    """The study's price is judged as given, and the trial times its model before training too
    (with its own repeats), in every report: a trial stopped at a rung is a calibration pair."""
    import trainers.trial

    timed = []
    real = trainers.trial.estimate_cost
    monkeypatch.setattr(
        trainers.trial, "estimate_cost", lambda *a, **k: timed.append(k["repeats"]) or real(*a, **k)
    )
    flat = FAST | {"constraints": {"latency_ms": 1e6}, "latency_repeats": 7}
    settings = TrialSettings.from_flat(flat)
    rows = []
    result = run_trial(_arch(SMALL_MLP), rows.append, settings=settings, costs={"latency_ms": 2.0})
    assert timed == [7]
    measured = {r["start_latency_ms"] for r in rows}
    assert len(measured) == 1 and measured.pop() == result["start_latency_ms"] > 0
    over = run_trial(_arch(SMALL_MLP), settings=settings, costs={"latency_ms": 2e6})
    assert over["status"] == "infeasible" and over["latency_ms"] == 2e6  # the price judged
    tight = dataclasses.replace(settings, cost=CostSettings(constraints={"latency_ms": 1e-9}))
    fits = run_trial(_arch(SMALL_MLP), settings=tight, costs={"latency_ms": 1e-12})
    assert fits["start_latency_ms"] > 1e-9 and fits["val_acc"] is not None  # trained all the same
    plain = []
    run_trial(_arch(SMALL_MLP), plain.append, settings=TrialSettings.from_flat(FAST))
    assert "start_latency_ms" not in plain[0]  # no latency bound: nothing measured before


def test_flat_keys_go_to_their_groups():
    def latency(model, in_shape, **_):
        return 1.0

    settings = TrialSettings.from_flat(
        {
            "dataset": "numpy",
            "data_path": "x.npz",
            "epochs": 3,
            "freeze": ("stem.",),
            "qat": {"lr": 0.1},
            "stage_ratios": {"s0": 0.5},
            "act_range": "percentile",
            "teacher_arch": {"layers": 1},
            "teacher_width": 3.0,
            "teacher_epochs": 8,
            "distill_layer": "blocks",
            "cache_dir": "/tmp/c",
            "latency_repeats": 4,
            "latency_source": latency,
            "runtime": "torch",
            "model": "mlp",
            "seed": 7,
            "snapshots": True,
        }
    )
    assert settings.data == DataSettings(dataset="numpy", path="x.npz")
    assert settings.schedule == Schedule(epochs=3, freeze=("stem.",), qat={"lr": 0.1})
    assert settings.compression == CompressionSettings(
        stage_ratios={"s0": 0.5}, act_range="percentile"
    )
    assert settings.teacher == TeacherSettings(
        arch={"layers": 1}, width=3.0, epochs=8, distill_layer="blocks", cache_dir="/tmp/c"
    )
    assert settings.cost == CostSettings(latency_repeats=4, latency_source=latency, runtime="torch")
    assert (settings.model, settings.seed, settings.snapshots) == ("mlp", 7, True)
    assert TrialSettings.from_flat({}) == TrialSettings()


def test_unknown_flat_key_is_named_with_a_hint():
    with pytest.raises(ValueError, match=r"'teacher_epoch' \(did you mean 'teacher_epochs'\?\)"):
        TrialSettings.from_flat({"teacher_epoch": 8})
    with pytest.raises(ValueError, match=r"'schedule'.*allowed: \[.*'epochs'"):
        TrialSettings.from_flat({"schedule": Schedule()})  # a group is not a flat key


def test_every_flat_key_round_trips():
    flat = TrialSettings().to_flat()
    assert set(flat) == FLAT_KEYS and len(FLAT_KEYS) == 30
    changed = {key: _another(value, i) for i, (key, value) in enumerate(sorted(flat.items()))}
    changed |= {"runtime": "torch", "precision": "bf16"}  # choices: another allowed value
    changed |= {"finetune_epochs": 101, "qat_epochs": 102}  # counts (None: a share of epochs)
    settings = TrialSettings.from_flat(changed)
    assert settings.to_flat() == changed
    assert TrialSettings.from_flat(settings.to_flat()) == settings


def _another(value, i: int):
    """A value of `value`'s kind that no other key gets (`i` differs per key)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return type(value)(value + i + 1)
    if isinstance(value, str):
        return f"{value}-{i}"
    if isinstance(value, tuple):
        return (f"layer{i}",)
    return {"key": i}  # a mapping, or anything where the default is None


@pytest.mark.parametrize(
    "key, value, wanted",
    [
        ("epochs", "one", "a whole number >= 0"),
        ("epochs", -1, "a whole number >= 0"),
        ("epochs", True, "a whole number >= 0"),
        ("teacher_width", "wide", "a number"),
        ("finetune", 0.1, "a mapping"),
        ("freeze", "blocks", "a list"),
        ("snapshots", 1, "true or false"),
    ],
)
def test_a_flat_key_of_the_wrong_kind_is_named(key, value, wanted):
    with pytest.raises(ValueError, match=f"trial setting '{key}' must be {wanted}"):
        TrialSettings.from_flat({key: value})


def test_a_config_splits_into_its_parts():
    config = {"arch.w": 8, "depth": 2, "train.lr": 0.1, "compress.prune": True}
    assert split_config(config) == ({"w": 8, "depth": 2}, {"lr": 0.1}, {"prune": True})


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="prefixes allowed"):
        run_trial({"model.width": 3})
    with pytest.raises(ValueError, match="allowed"):
        run_trial(
            _arch(SMALL_MLP), settings=TrialSettings(cost=CostSettings(constraints={"flops": 1}))
        )


def test_nan_loss_fails_the_trial():
    with pytest.raises(FloatingPointError, match="loss"):
        run_trial(
            _arch(SMALL_MLP) | {"train.lr": 1e30},
            settings=TrialSettings(schedule=Schedule(epochs=2)),
        )


def test_training_resumes_from_a_snapshot_exactly(data):
    import torch

    from trainers.models import build_model
    from trainers.train import TrainSettings, train

    def fresh():
        torch.manual_seed(0)
        return build_model("mlp", SMALL_MLP, in_shape=(1, 8, 8), num_classes=10)

    settings = TrainSettings(epochs=4, lr=0.01)
    straight = fresh()
    train(straight, data, settings)
    snapshots = []
    first = fresh()
    train(first, data, settings, snapshots=True, report=snapshots.append)
    resumed = fresh()
    rows = []
    train(resumed, data, settings, resume=snapshots[1]["snapshot"], report=rows.append)
    assert [r["step"] for r in rows] == [3, 4]
    for key, value in straight.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[key])
    faster = fresh()
    train(faster, data, settings.but(lr=0.05), resume=snapshots[1]["snapshot"])
    assert not torch.allclose(faster.classifier.weight, resumed.classifier.weight)


def test_frozen_layers_stay_fixed(data):
    import torch

    from trainers.models import build_model
    from trainers.train import TrainSettings, train

    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    stem = model.stem[0].weight.detach().clone()
    head = model.classifier.weight.detach().clone()
    train(model, data, TrainSettings(epochs=1, freeze=("stem.",)))
    assert torch.equal(model.stem[0].weight, stem)
    assert not torch.equal(model.classifier.weight, head)
    assert model.stem[0].weight.requires_grad  # unfrozen again afterwards
