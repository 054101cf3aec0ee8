import copy
import re

import pytest
import torch
from torch import nn

from tests.trainers.conftest import OPTIONS, SMALL, SMALL_CHAIN
from trainers import TrialSettings, quantize, run_trial
from trainers.cost import count_macs, count_params, deployed_latency, packed_bytes
from trainers.data import load_dataset
from trainers.memory import peak_mem_bytes
from trainers.models import IN_RANKS, MODELS, build_model, infer_model
from trainers.prune import prune
from trainers.store import load
from trainers.train import TrainSettings, evaluate, train

# every builder on every dataset of a rank it takes: digits (1, 8, 8), MNIST-1D (1, 40)
DATASETS = {3: "digits", 2: "mnist1d"}
CASES = [(n, DATASETS[r]) for n in sorted(MODELS) for r in IN_RANKS[n] if r in DATASETS]


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_every_model_builds_trains_and_prunes(name, dataset):
    data = load_dataset(dataset)
    model = build_model(
        name, SMALL[name], in_shape=data.in_shape, num_classes=10, options=OPTIONS[name]
    )
    assert infer_model(SMALL[name]) == name
    assert model(data.x_val[:4]).shape == (4, 10)
    before = copy.deepcopy(model.state_dict())
    train(model, data, TrainSettings(epochs=1, batch_size=256))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    macs = count_macs(model, data.in_shape)
    record = prune(model, ratio=0.5)
    assert record["groups"] and not record["skipped"]
    assert model(data.x_val[:4]).shape == (4, 10)
    assert count_macs(model, data.in_shape) < 0.6 * macs
    train(model, data, TrainSettings(epochs=1, batch_size=256))


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="cannot tell the model"):
        infer_model({"depth": 3})
    with pytest.raises(ValueError, match="allowed"):
        build_model("resnet", {}, in_shape=(1, 8, 8), num_classes=10)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 64)])
def test_chain_macs_by_hand(in_shape):
    arch = {"s0_depth": 1, "s0_width": 4, "s0_kernel": 3, "s0_expand": 2}
    model = build_model("chain", arch, in_shape=in_shape, num_classes=10)
    # 64 positions either way (8x8, or a length of 64); a 3x3 kernel has 9 taps, a 1-D one 3
    taps = 9 if len(in_shape) == 3 else 3
    stem = 64 * 4 * 1 * taps  # 4 filters, 1 input channel
    expand = 64 * 8 * 4  # 1x1, 4 -> 8
    depthwise = 64 * 8 * taps  # depthwise over 8 channels
    project = 64 * 4 * 8  # 1x1, 8 -> 4
    assert count_macs(model, in_shape) == stem + expand + depthwise + project + 4 * 10


def test_a_1d_chain_is_built_of_1d_layers():
    model = build_model("chain", SMALL_CHAIN, in_shape=(2, 40), num_classes=10)
    kinds = {type(m) for m in model.modules()}
    assert {nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d} <= kinds
    assert not kinds & {nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d}
    assert model.stem[0].weight.shape == (8, 2, 3)  # 8 filters over 2 channels, 3 taps
    assert model(torch.zeros(5, 2, 40)).shape == (5, 10)


@pytest.mark.parametrize(
    ("name", "in_shape", "takes"),
    [
        ("nb201", (1, 40), "(channels, height, width)"),
        ("chain", (40,), "(channels, length) or (channels, height, width)"),
        ("mlp", (1, 1, 8, 8), "(features,) or (channels, length) or (channels, height, width)"),
    ],
)
def test_data_of_the_wrong_rank_is_named(name, in_shape, takes):
    message = f"model '{name}' takes samples of shape {takes}; the data's samples have shape "
    with pytest.raises(ValueError, match=re.escape(message + str(in_shape))):
        build_model(name, SMALL[name], in_shape=in_shape, num_classes=10)


def test_a_trial_of_nb201_on_1d_data_is_named():
    config = {f"arch.{k}": v for k, v in SMALL["nb201"].items()}
    settings = TrialSettings.from_flat({"dataset": "mnist1d", "epochs": 1})
    with pytest.raises(ValueError, match=r"'nb201' takes .* have shape \(1, 40\)"):
        run_trial(config, settings=settings)


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
@pytest.mark.parametrize("name", ["chain", "mlp"])
def test_compression_and_every_cost_in_1d_and_2d(name, dataset):
    data = load_dataset(dataset)
    torch.manual_seed(0)
    model = build_model(name, SMALL[name], in_shape=data.in_shape, num_classes=10)
    train(model, data, TrainSettings(epochs=2, batch_size=128))
    base = copy.deepcopy(model)
    prune(model, ratio=0.5)
    if name == "chain":  # the stem's 8 filters halved, its kernel the data's rank
        assert model.stem[0].weight.shape == (4, 1, *[3] * (len(data.in_shape) - 1))
    train(model, data, TrainSettings(epochs=1, batch_size=128, optimizer="sgd", lr=0.05))
    pruned = copy.deepcopy(model)
    hooks = quantize.prepare(model, quantize.QuantSpec(8, per_channel=True), act_bits=8)
    quantize.calibrate(model, hooks, data.x_train[:256])
    quantize.finalize(model, hooks)
    with torch.no_grad():  # int8 weights and activations predict as the float model does
        same = model.eval()(data.x_test).argmax(1) == pruned.eval()(data.x_test).argmax(1)
    assert same.float().mean() > 0.9
    shape = data.in_shape
    assert count_params(model) < 0.5 * count_params(base)
    assert count_macs(model, shape) < 0.6 * count_macs(base, shape)
    assert packed_bytes(model) < 0.2 * packed_bytes(base)  # a quarter of the params at 1 byte
    assert peak_mem_bytes(model, shape) < peak_mem_bytes(base, shape) / 4  # uint8, pruned
    timing = {"batch_size": 16, "repeats": 3}
    assert deployed_latency(model, shape, **timing) > 0  # its QDQ graph in ONNX Runtime
    assert deployed_latency(base, shape, **timing) > 0


@pytest.mark.slow
def test_a_full_trial_on_1d_data(tmp_path):
    config = {f"arch.{k}": v for k, v in SMALL_CHAIN.items()} | {
        "compress.prune": True,
        "compress.prune_ratio": 0.5,
        "compress.prune_criterion": "gradient",
        "compress.quantize": True,
        "compress.weight_bits": 4,
        "compress.act_bits": 8,
        "compress.quant_mode": "qat",
        "compress.distill": True,
    }
    flat = {
        "dataset": "mnist1d",
        "epochs": 2,
        "finetune_epochs": 1,
        "qat_epochs": 1,
        "teacher_epochs": 1,
        "teacher_arch": SMALL_CHAIN,
        "latency_repeats": 3,
        "constraints": {"params": 10**6},  # the costs are estimated before training too
        "cache_dir": str(tmp_path),
        "save_path": str(tmp_path / "m.npz"),
    }
    result = run_trial(config, settings=TrialSettings.from_flat(flat))
    assert result["status"] == "completed" and result["test_acc"] > 20
    assert result["latency_ms"] > 0 and result["macs"] > 0 and result["size_bytes"] > 0
    model, _ = load(tmp_path / "m.npz")
    data = load_dataset("mnist1d")
    assert evaluate(model, data.x_val, data.y_val) == pytest.approx(result["torch_val_acc"])
