"""A model paretune did not build (written here, standard layers): measured as deployed,
quantized, distilled from, and filter-pruned through the channels found in its graph."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import trainers
from trainers import prune, quantize
from trainers.distill import Distiller


class Net(nn.Module):
    """What a user writes: convs, norms, pooling, a classifier; forward in its own words."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
        )
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = F.relu(self.features(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        y = F.relu(self.stem(x))
        return self.head((y + self.body(y)).mean((2, 3)))


X = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_measure_counts_a_user_model_as_deployed():
    model = Net()
    costs = trainers.measure(model, X, repeats=3)
    assert set(costs) == {
        "params",
        "macs",
        "size_bytes",
        "packed_bytes",
        "latency_ms",
        "peak_mem_bytes",
    }
    assert costs["params"] == sum(p.numel() for p in model.parameters())
    # conv1 at 8x8, conv2 at 4x4, the head: out_numel * in_channels * kernel
    assert costs["macs"] == 8 * 64 * 9 + 16 * 16 * 8 * 9 + 10 * 16
    assert costs["latency_ms"] > 0 and costs["peak_mem_bytes"] > 0
    eager = trainers.measure(model, X, runtime="torch", repeats=3)
    # the file each runtime ships: ONNX Runtime's ONNX file, torch's stored model
    assert eager["size_bytes"] == eager["packed_bytes"] == costs["packed_bytes"]
    assert costs["size_bytes"] == len(trainers.deploy.runtime_graph(model, X.shape[1:]))


def test_quantization_shrinks_a_user_model_and_keeps_its_answers():
    model = Net().eval()
    before = trainers.measure(model, X, repeats=3)
    reference = model(X)
    hooks = quantize.prepare(model, quantize.QuantSpec(bits=8), act_bits=8)
    quantize.calibrate(model, hooks, X)
    record = quantize.finalize(model, hooks)
    after = trainers.measure(model, X, repeats=3)
    assert record and after["packed_bytes"] < before["packed_bytes"] / 3
    assert after["size_bytes"] < 0.7 * before["size_bytes"]  # a byte a weight, and the graph
    assert after["peak_mem_bytes"] == before["peak_mem_bytes"] // 4  # uint8 activations
    agree = (model(X).argmax(1) == reference.argmax(1)).float().mean()
    assert agree >= 0.8


def test_a_user_model_distills_from_a_wider_user_teacher():
    student, teacher = Net(width=4), Net(width=16)
    distiller = Distiller(
        student, teacher, layer="features.4", teacher_layer="features.4", sample=X
    )
    loss = distiller(X, student(X))
    loss.backward()
    assert loss.item() > 0 and student.features[0].weight.grad is not None
    assert isinstance(distiller.adapter, nn.Conv2d)  # 8 student channels to 32 teacher ones


def test_filter_pruning_follows_a_user_models_graph():
    model = Net()
    groups = trainers.prune_groups(model)
    assert [(g.out, g.norm, g.inp) for g in groups] == [
        (["features.0"], ["features.1"], ["features.4"]),
        (["features.4"], ["features.5"], ["head"]),
    ]
    prune.prune(model, ratio=0.5)
    assert model.features[4].weight.shape == (8, 4, 3, 3) and model.head.weight.shape == (10, 8)
    assert model(X).shape == (32, 10)
    assert trainers.measure(model, X, repeats=3)["macs"] == 4 * 64 * 9 + 8 * 16 * 4 * 9 + 80


def test_filter_pruning_refuses_a_residual_naming_the_layer():
    model = Residual()
    with pytest.raises(ValueError, match=r"cannot handle layer 'stem' \(Conv2d\) of Residual: "):
        trainers.prune_groups(model)
    assert not hasattr(model, "prune_groups")
    maps = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))  # output: channels
    with pytest.raises(ValueError, match="layer '2' .*its channels are the model's output"):
        trainers.prune_groups(maps)
