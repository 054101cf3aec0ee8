import json

import pytest
import torch
from torch import nn

from tests.trainers.conftest import OPTIONS, SMALL, SMALL_CHAIN
from trainers.cost import count_macs
from trainers.models import MODELS, PruneGroup, build_model
from trainers.prune import (
    activation_importance,
    apply_record,
    gradient_importance,
    neuron_groups,
    prune,
    prune_neurons,
)


def _chain(arch=None):
    torch.manual_seed(0)
    return build_model("chain", arch or SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)


def test_pruned_shapes_and_macs_by_hand():
    arch = {"s0_depth": 1, "s0_width": 4, "s0_kernel": 3, "s0_expand": 2}
    model = _chain(arch)
    record = prune(model, ratio=0.5)
    block = model.blocks[0]
    # stem group 4 -> 2 channels (stem, the residual block's output, the classifier's input);
    # hidden group 8 -> 4 (expand filters, depthwise, project's input)
    assert model.stem[0].weight.shape == (2, 1, 3, 3) and model.stem[1].num_features == 2
    assert block.expand[0].weight.shape == (4, 2, 1, 1)
    assert block.depthwise[0].weight.shape == (4, 1, 3, 3) and block.depthwise[0].groups == 4
    assert block.project[0].weight.shape == (2, 4, 1, 1) and block.project[1].num_features == 2
    assert model.classifier.weight.shape == (10, 2)
    assert count_macs(model, (1, 8, 8)) == 64 * (2 * 9 + 4 * 2 + 4 * 9 + 2 * 4) + 2 * 10
    assert [g["channels"] for g in record["groups"]] == [4, 8]


def test_l1_keeps_the_largest_filters():
    model = _chain({"s0_depth": 1, "s0_width": 4, "s0_kernel": 3, "s0_expand": 2})
    with torch.no_grad():
        expand = model.blocks[0].expand[0].weight
        expand.copy_(torch.arange(8.0).view(8, 1, 1, 1).expand_as(expand) % 5)
        model.blocks[0].depthwise[0].weight.zero_()
    record = prune(model, ratio=0.5)  # |w| per filter: 0 1 2 3 4 0 1 2
    hidden = next(g for g in record["groups"] if g["group"].endswith("hidden"))
    assert hidden["keep"] == [2, 3, 4, 7]
    assert model.blocks[0].expand[0].weight[:, 0].flatten().tolist() == [2, 3, 4, 2]


def test_record_replays_on_a_fresh_model(data):
    model = _chain()
    record = prune(model, ratio={"s0": 0.25, "s1": 0.5})
    fresh = _chain()
    apply_record(fresh, record)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(model(data.x_val[:8]), fresh(data.x_val[:8]))
    stages = {g["group"]: g for g in record["groups"]}
    assert "stem" not in stages or stages["stem"]["channels"] - len(stages["stem"]["keep"]) == 2


def test_residual_additions_stay_consistent(data):
    model = _chain()
    prune(model, ratio=0.6)
    residual = [b for b in model.blocks if b.residual]
    for block in residual:
        entry = block.expand[0] if block.expand is not None else block.depthwise[0]
        assert block.project[0].out_channels == entry.in_channels
    assert [b.project[0].out_channels for b in residual] == [4, 7]  # 8 - 4, 16 - 9
    assert model(data.x_val[:3]).shape == (3, 10)  # any inconsistency breaks an addition


def test_gradient_criterion(data):
    model = _chain()
    with pytest.raises(ValueError, match="gradient_importance"):
        prune(model, ratio=0.5, criterion="gradient")
    scores = gradient_importance(model, data.x_train, data.y_train, batches=2)
    assert scores["stem.0"].shape == (8,) and (scores["stem.0"] >= 0).all()
    prune(model, ratio=0.5, criterion="gradient", gradients=scores)
    assert model.stem[0].out_channels == 4


def test_unsafe_groups_are_skipped_and_recorded():
    model = _chain()
    model.prune_groups.append(PruneGroup("ghost", "s9", out=["nowhere.0"]))
    model.grouped = nn.Conv2d(4, 4, 3, groups=2)
    model.prune_groups.append(PruneGroup("grouped", "s9", out=["grouped"]))
    record = prune(model, ratio=0.5)
    assert [s["group"] for s in record["skipped"]] == ["ghost", "grouped"]
    assert "not in the model" in record["skipped"][0]["reason"]


def test_bad_ratio_and_criterion():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune(_chain(), ratio=1.0)
    with pytest.raises(ValueError, match=r"prune_criterion 'l3': allowed"):
        prune(_chain(), ratio=0.5, criterion="l3")


def _mlp(layers=2, width=32):
    torch.manual_seed(0)
    return build_model(
        "mlp", {"layers": layers, "width": width}, in_shape=(1, 8, 8), num_classes=10
    )


def test_neuron_pruning_removes_rows_and_the_next_columns(data):
    model = _mlp()
    record = prune_neurons(model, ratio=0.25, x=data.x_train[:256])
    assert model.features[1].weight.shape == (24, 64) and model.features[1].bias.shape == (24,)
    assert model.features[3].weight.shape == (24, 24)
    assert model.classifier.weight.shape == (10, 24)  # the classes stay
    assert [g["channels"] for g in record["groups"]] == [32, 32] and record[
        "step"
    ] == "neuron_prune"
    fresh = _mlp()
    apply_record(fresh, json.loads(json.dumps(record)))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(model(data.x_val[:8]), fresh(data.x_val[:8]))


def test_activation_importance_by_hand():
    model = _mlp(layers=1, width=4)
    with torch.no_grad():
        model.features[1].weight.zero_()
        model.features[1].bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))  # activations 1 2 3 4
        model.classifier.weight.zero_()
        model.classifier.weight[0] = torch.tensor([4.0, 1.0, 1.0, 1.0])  # column norms 4 1 1 1
    groups = neuron_groups(model)
    scores = activation_importance(model, groups, torch.zeros(5, 1, 8, 8))
    assert scores["hidden0"].tolist() == [4.0, 2.0, 3.0, 4.0]  # E|a_j| * ||W[:, j]||
    record = prune_neurons(model, ratio=0.5, x=torch.zeros(5, 1, 8, 8))
    assert record["groups"][0]["keep"] == [0, 3]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_builder_prunes_the_neurons_its_linear_layers_read(name, data):
    torch.manual_seed(0)
    model = build_model(
        name, SMALL[name], in_shape=(1, 8, 8), num_classes=10, options=OPTIONS[name]
    )
    width = model.classifier.in_features
    record = prune_neurons(model, ratio=0.5, x=data.x_train[:128])
    assert record["groups"] and not record["skipped"]
    assert model.classifier.in_features == width - width // 2
    assert model.classifier.out_features == 10
    assert model(data.x_val[:4]).shape == (4, 10)
    fresh = build_model(
        name, SMALL[name], in_shape=(1, 8, 8), num_classes=10, options=OPTIONS[name]
    )
    apply_record(fresh, record)
    fresh.load_state_dict(model.state_dict())


def test_bad_neuron_pruning_is_named(data):
    with pytest.raises(ValueError, match=r"neuron_ratio 1.0: allowed a number in \[0, 1\)"):
        prune_neurons(_mlp(), ratio=1.0, x=data.x_train[:8])
    with pytest.raises(
        ValueError, match=r"neuron_criterion 'apoz': allowed \['activation', 'l1'\]"
    ):
        prune_neurons(_mlp(), ratio=0.5, criterion="apoz")
    with pytest.raises(ValueError, match="inputs x"):
        prune_neurons(_mlp(), ratio=0.5)
    l1 = _mlp()
    prune_neurons(l1, ratio=0.5, criterion="l1")
    assert l1.classifier.in_features == 16
