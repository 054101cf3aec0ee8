"""Real trials with the compression knobs of issue 15: weight pruning, neuron pruning, binary
weights; and their validation before training."""

import pytest
import torch

from tests.trainers.conftest import SMALL_CHAIN, SMALL_MLP, never_trained
from trainers import TrialSettings, run_trial
from trainers import store as stored
from trainers.quantize import quantized_layers
from trainers.sparsity import sparsity_of
from trainers.train import evaluate

FAST = {"epochs": 2, "finetune_epochs": 1, "qat_epochs": 1}


def _arch(arch):
    return {f"arch.{k}": v for k, v in arch.items()}


def _run(tmp_path, config, arch=SMALL_CHAIN):
    rows = []
    settings = TrialSettings.from_flat(FAST | {"save_path": str(tmp_path / "m.npz")})
    result = run_trial(_arch(arch) | config, rows.append, settings=settings)
    model, description = stored.load(tmp_path / "m.npz")
    return result, rows, model, description


def test_weight_pruning_with_int8_trains_masked_and_saves(tmp_path, data):
    config = {
        "compress.weight_prune": True,
        "compress.weight_sparsity": 0.8,
        "compress.weight_prune_scope": "lamp",
        "compress.quantize": True,
        "compress.weight_bits": 8,
        "compress.act_bits": 8,
        "compress.quant_mode": "qat",
    }
    result, rows, model, description = _run(tmp_path, config)
    assert [r["phase"] for r in rows] == ["train", "train", "finetune", "qat"]
    assert [r["step"] for r in result["records"][:-1]] == ["weight_prune", "quantize"]
    assert result["status"] == "completed"
    assert sparsity_of(model) == pytest.approx(0.8, abs=1e-3)
    for layer in quantized_layers(model).values():
        assert not layer.weight[~layer.weight_mask].any()
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result["torch_val_acc"])
    unpruned = {k: v for k, v in config.items() if not k.startswith("compress.weight_")}
    dense = run_trial(_arch(SMALL_CHAIN) | unpruned, settings=TrialSettings.from_flat(FAST))
    assert (result["macs"], result["params"]) == (dense["macs"], dense["params"])  # zeros stay
    # a 1-bit mask and 20% of the 8-bit codes: 2.6 bits a weight instead of 8 (sizes by hand
    # in test_sparsity.py); here per-channel pairs and biases weigh as much as the weights
    assert stored.stored_bytes(model) < 0.7 * dense["packed_bytes"]


def test_neuron_pruning_shrinks_the_mlp(tmp_path, data):
    config = {
        "compress.neuron_prune": True,
        "compress.neuron_ratio": 0.5,
        "compress.neuron_criterion": "activation",
    }
    result, rows, model, _ = _run(tmp_path, config, arch=SMALL_MLP)
    assert [r["phase"] for r in rows] == ["train", "train", "finetune"]
    assert [r["step"] for r in result["records"][:-1]] == ["neuron_prune"]
    assert [model.features[i].out_features for i in (1, 3)] == [16, 16]
    dense = run_trial(_arch(SMALL_MLP), settings=TrialSettings.from_flat(FAST))
    assert result["params"] < 0.6 * dense["params"] and result["macs"] < 0.6 * dense["macs"]
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result["torch_val_acc"])


def test_binary_weights_keep_the_end_layers_at_8_bits(tmp_path, data):
    config = {
        "compress.prune": True,
        "compress.prune_ratio": 0.25,
        "compress.quantize": True,
        "compress.weight_bits": 1,
        "compress.act_bits": 32,
        "compress.quant_mode": "qat",
    }
    result, rows, model, description = _run(tmp_path, config)
    assert [r["phase"] for r in rows] == ["train", "train", "finetune", "qat"]
    record = result["records"][-2]  # the last: the deploy record
    assert (record["bits"], record["scheme"], record["per_channel"]) == (1, "binary", True)
    assert set(record["layer_specs"]) == {"stem.0", "classifier"}
    middle = quantized_layers(model)["blocks.1.expand.0"].weight
    assert all(channel.abs().unique().numel() == 1 for channel in middle)  # ±scale per channel
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result["torch_val_acc"])
    all_binary, _, model, _ = _run(tmp_path, config | {"compress.first_last_bits": 1})
    assert all_binary["records"][-2]["layer_specs"] == {}
    stem = quantized_layers(model)["stem.0"].weight
    assert all(channel.abs().unique().numel() == 1 for channel in stem)


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"compress.weight_prune": True, "compress.weight_sparsity": 1.0},
            r"weight_sparsity 1.0: allowed \[0, 1\)",
        ),
        (
            {"compress.weight_prune": True, "compress.weight_sparsity": 0.5}
            | {"compress.weight_prune_scope": "random"},
            r"weight_prune_scope 'random': allowed \['lamp', 'layer', 'global'\]",
        ),
        ({"compress.weight_prune": True}, "compress.weight_sparsity is missing"),
        (
            {"compress.neuron_prune": True, "compress.neuron_ratio": 0.9}
            | {"compress.neuron_criterion": "apoz"},
            r"neuron_criterion 'apoz': allowed \['activation', 'l1'\]",
        ),
        (
            {"compress.neuron_prune": True, "compress.neuron_ratio": -0.5},
            r"neuron_ratio -0.5: allowed a number in \[0, 1\)",
        ),
        ({"compress.quantize": True, "compress.weight_bits": 0}, "weight_bits 0.*2 to 16"),
        ({"compress.quantize": True, "compress.weight_bits": 2.5}, "weight_bits 2.5"),
        (
            {"compress.quantize": True, "compress.weight_bits": 1}
            | {"compress.quant_scheme": "log"},
            r"weight_bits 1 with the log scheme: allowed 2 to 16 \(1 is the binary scheme\)",
        ),
        (
            {"compress.quantize": True, "compress.weight_bits": 1}
            | {"compress.first_last_bits": 32},
            "first_last_bits 32: allowed 1 to 16",
        ),
        ({"compress.quantize": True, "compress.quant_mode": "fp8"}, "quant_mode 'fp8'"),
        ({"compress.prune": True, "compress.prune_ratio": 1.5}, "prune_ratio 1.5"),
    ],
)
def test_bad_knobs_are_named_before_training(config, message, monkeypatch):
    import trainers.trial

    monkeypatch.setattr(trainers.trial, "train_phase", never_trained)
    rows = []
    with pytest.raises(ValueError, match=message):
        run_trial(_arch(SMALL_MLP) | config, rows.append, settings=TrialSettings.from_flat(FAST))
    assert not rows


def test_a_switched_off_technique_ignores_its_knobs():
    config = {"compress.weight_prune": False, "compress.weight_sparsity": 2.0}
    result = run_trial(_arch(SMALL_MLP) | config, settings=TrialSettings.from_flat(FAST))
    assert [r["step"] for r in result["records"]] == ["deploy"] and torch.isfinite(
        torch.tensor(result["val_acc"])
    )
