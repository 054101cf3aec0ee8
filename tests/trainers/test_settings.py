"""The torch-free settings: read without torch, epochs as a user reads them, the steps a trial
reports, and a trial judged by its final measured costs."""

import subprocess
import sys

import pytest

from tests.trainers.conftest import SMALL_MLP
from trainers import TrialSettings, run_trial
from trainers.settings import SettingError, max_steps

PRUNED = {f"arch.{k}": v for k, v in SMALL_MLP.items()} | {
    "compress.neuron_prune": True,
    "compress.neuron_ratio": 0.25,
}


def test_reading_the_settings_loads_no_torch():
    code = "import sys, trainers.settings; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_epochs_0_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="'epochs' must be a whole number >= 1"):
        TrialSettings.from_flat({"epochs": 0})


@pytest.mark.parametrize(
    ("flat", "finetune", "qat", "steps"),
    [
        ({"epochs": 1}, 1, 1, 1 + 1 + 1 + 1),
        ({"epochs": 2}, 1, 1, 2 + 1 + 1 + 1),
        ({}, 8, 4, 15 + 8 + 4 + 1),  # the defaults of old: 15, 8 and 4
        ({"epochs": 30}, 16, 8, 30 + 16 + 8 + 1),
        ({"epochs": 2, "finetune_epochs": 5, "qat_epochs": 0}, 5, 0, 2 + 5 + 0 + 1),
    ],
)
def test_fine_tuning_and_qat_epochs_are_a_share_of_epochs_unless_given(flat, finetune, qat, steps):
    schedule = TrialSettings.from_flat(flat).schedule
    assert (schedule.finetune_count, schedule.qat_count) == (finetune, qat)
    assert max_steps(TrialSettings.from_flat(flat), compress=True) == steps
    assert max_steps(TrialSettings.from_flat(flat), compress=False) == schedule.epochs + 1


@pytest.mark.parametrize("key", ["finetune_epochs", "qat_epochs"])
@pytest.mark.parametrize("value", [-1, "2", 1.5, True, {"epochs": 2}])
def test_a_bad_finetune_or_qat_epochs_is_refused_when_the_settings_are_built(key, value):
    with pytest.raises(SettingError, match=f"'{key}' must be a whole number >= 0") as error:
        TrialSettings.from_flat({key: value})
    assert (error.value.key, error.value.value) == (key, value)  # a study file's hint reads it


def test_one_epoch_of_a_pruned_trial_is_about_one_epoch_in_all():
    rows = []
    run_trial(PRUNED, rows.append, settings=TrialSettings.from_flat({"epochs": 1}))
    assert [r["phase"] for r in rows] == ["train", "finetune"]


def _latency(model, in_shape, *, batch_size, repeats, threads, onnx):
    """Fast for the estimate before training (a quarter of the repeats), slow after it."""
    return 1.0 if repeats < 8 else 50.0


def test_a_trained_model_over_a_bound_is_infeasible_with_its_accuracy_kept():
    flat = {"epochs": 1, "latency_repeats": 8, "latency_source": _latency}
    flat["constraints"] = {"latency_ms": 10.0}
    result = run_trial(PRUNED, settings=TrialSettings.from_flat(flat))
    assert result["status"] == "infeasible"
    assert result["violations"] == {"latency_ms": pytest.approx(4.0)}  # (50 - 10) / 10
    assert 0 <= result["val_acc"] <= 100 and 0 <= result["test_acc"] <= 100
    assert result["latency_ms"] == 50.0 and result["params"] > 0 and result["records"]
    fits = run_trial(PRUNED, settings=TrialSettings.from_flat(flat | {"constraints": {}}))
    assert fits["status"] == "completed" and "violations" not in fits
