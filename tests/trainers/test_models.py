import copy

import pytest
import torch

from tests.trainers.conftest import OPTIONS, SMALL
from trainers.cost import count_macs
from trainers.models import MODELS, build_model, infer_model
from trainers.prune import prune
from trainers.train import TrainSettings, train


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_trains_and_prunes(name, data):
    model = build_model(
        name, SMALL[name], in_shape=(1, 8, 8), num_classes=10, options=OPTIONS[name]
    )
    assert infer_model(SMALL[name]) == name
    assert model(data.x_val[:4]).shape == (4, 10)
    before = copy.deepcopy(model.state_dict())
    train(model, data, TrainSettings(epochs=1, batch_size=256))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    macs = count_macs(model, (1, 8, 8))
    record = prune(model, ratio=0.5)
    assert record["groups"] and not record["skipped"]
    assert model(data.x_val[:4]).shape == (4, 10)
    assert count_macs(model, (1, 8, 8)) < 0.6 * macs
    train(model, data, TrainSettings(epochs=1, batch_size=256))


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="cannot tell the model"):
        infer_model({"depth": 3})
    with pytest.raises(ValueError, match="allowed"):
        build_model("resnet", {}, in_shape=(1, 8, 8), num_classes=10)


def test_chain_macs_by_hand():
    arch = {"s0_depth": 1, "s0_width": 4, "s0_kernel": 3, "s0_expand": 2}
    model = build_model("chain", arch, in_shape=(1, 8, 8), num_classes=10)
    stem = 64 * 4 * 1 * 9  # 8x8 outputs, 4 filters, 1 input channel, 3x3
    expand = 64 * 8 * 4  # 1x1, 4 -> 8
    depthwise = 64 * 8 * 9  # 3x3 depthwise over 8 channels
    project = 64 * 4 * 8  # 1x1, 8 -> 4
    assert count_macs(model, (1, 8, 8)) == stem + expand + depthwise + project + 4 * 10
