import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.trainers.conftest import SMALL_CHAIN
from trainers import store
from trainers.models import build_model
from trainers.prune import prune, prune_neurons
from trainers.quantize import QuantSpec, calibrate, end_layers, finalize, prepare, quantized_layers
from trainers.sparsity import (
    apply_record,
    lamp_scores,
    magnitude_masks,
    prune_weights,
    release,
    sparsity_of,
)
from trainers.train import TrainSettings, train

DESCRIPTION = {"model": "chain", "arch": SMALL_CHAIN, "in_shape": [1, 8, 8], "num_classes": 10}


def _chain():
    torch.manual_seed(0)
    return build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)


def _masked(model):
    return {n: m for n, m in quantized_layers(model).items() if hasattr(m, "weight_mask")}


def test_layer_scope_has_exactly_the_sparsity_asked():
    model = _chain()
    record = prune_weights(model, sparsity=0.7, scope="layer")
    layers = _masked(model)
    assert set(layers) == set(quantized_layers(model))
    for name, layer in layers.items():
        zeros = math.floor(0.7 * layer.weight.numel())
        assert int((~layer.weight_mask).sum()) == zeros == record["layers"][name]["zeros"]
        assert int((layer.weight == 0).sum()) == zeros  # nothing kept is exactly zero here
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(math.floor(0.7 * m.weight.numel()) for m in layers.values())
    assert sparsity_of(model) == zeros / total


@pytest.mark.parametrize("scope", ["global", "lamp"])
def test_global_scopes_hit_the_total(scope):
    model = _chain()
    prune_weights(model, sparsity=0.9, scope=scope)
    layers = _masked(model).values()
    total = sum(m.weight.numel() for m in layers)
    zeros = sum(int((~m.weight_mask).sum()) for m in layers)
    assert zeros == math.floor(0.9 * total)
    if scope == "lamp":  # LAMP keeps every layer's largest weight
        assert all(m.weight_mask.any() for m in layers)


def test_masks_keep_the_largest_by_hand():
    a = torch.tensor([0.1, -3.0, 2.0, 0.5])
    b = torch.tensor([[1.0, -0.2], [0.3, 4.0]])
    masks = magnitude_masks({"a": a, "b": b}, sparsity=0.5, scope="layer")
    assert masks["a"].tolist() == [False, True, True, False]
    assert masks["b"].tolist() == [[True, False], [False, True]]
    masks = magnitude_masks({"a": a, "b": b}, sparsity=0.5, scope="global")  # 4 of 8 go
    assert masks["a"].tolist() == [False, True, True, False]  # 0.1, 0.5 go; then 0.2, 0.3
    assert masks["b"].tolist() == [[True, False], [False, True]]
    # LAMP: w^2 over the sum of the squares at least as large: [1, 4, 9] -> [1/14, 4/13, 1]
    scores = lamp_scores(torch.tensor([2.0, -1.0, 3.0]))
    assert scores.tolist() == pytest.approx([4 / 13, 1 / 14, 1.0])


def test_masks_survive_training_and_qat(data):
    model = _chain()
    train(model, data, TrainSettings(epochs=1))
    prune_weights(model, sparsity=0.8, scope="lamp")
    masks = {n: m.weight_mask.clone() for n, m in _masked(model).items()}
    before = {n: m.weight.detach().clone() for n, m in _masked(model).items()}
    for optimizer in ("sgd", "adamw"):  # momentum, weight decay: the masked weights stay zero
        train(model, data, TrainSettings(epochs=1, optimizer=optimizer, lr=0.05))
        for name, layer in _masked(model).items():
            assert not layer.weight[~masks[name]].any()
    assert any(not torch.equal(m.weight, before[n]) for n, m in _masked(model).items())
    release(model)
    hooks = prepare(model, QuantSpec(4, per_channel=True), act_bits=8)
    calibrate(model, hooks, data.x_train[:128])
    train(model, data, TrainSettings(epochs=1, optimizer="sgd", lr=0.01))
    finalize(model, hooks)
    for name, layer in _masked(model).items():
        assert torch.equal(layer.weight_mask, masks[name])
        assert not layer.weight[~masks[name]].any()
    assert sparsity_of(model) == pytest.approx(0.8, abs=1e-4)


def test_record_replays_on_a_fresh_model(data):
    model = _chain()
    filters = prune(model, ratio=0.25)
    record = json.loads(json.dumps(prune_weights(model, sparsity=0.6)))  # plain JSON
    train(model, data, TrainSettings(epochs=1, optimizer="sgd", lr=0.05))
    release(model)
    fresh = _chain()
    from trainers.prune import apply_record as apply_filters

    apply_filters(fresh, filters)
    apply_record(fresh, record)
    fresh.load_state_dict(model.state_dict())
    model.eval(), fresh.eval()
    assert torch.equal(model(data.x_val[:16]), fresh(data.x_val[:16]))
    for name, layer in _masked(model).items():
        assert torch.equal(dict(fresh.named_modules())[name].weight_mask, layer.weight_mask)


def _tiny(spec=None, *, sparsity=0.6):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 7))
    prune_weights(model, sparsity=sparsity, scope="layer")
    release(model)
    if spec is not None:
        finalize(model, prepare(model, spec))
    return model


@pytest.mark.parametrize(
    "spec, expected",
    [
        # 70 weights, 42 masked, 28 kept: a 9-byte bitmask, then the kept ones
        (None, 9 + 4 * 28 + 4 * 7),  # float32 values; the 7 biases float32
        (QuantSpec(8), 9 + 28 + 8 + 4 * 7),  # 8-bit codes, one (offset, step) pair
        (QuantSpec(4, per_channel=True), 9 + 14 + 8 * 7 + 4 * 7),  # 4-bit, a pair per row
        (QuantSpec(1, "binary", per_channel=True), 9 + 4 + 8 * 7 + 4 * 7),  # ceil(28 / 8) = 4
    ],
)
def test_bitmask_plus_values_by_hand(tmp_path, spec, expected):
    model = _tiny(spec)
    assert store.stored_bytes(model) == expected
    raw, floats = store._payload(model)
    assert raw.nbytes + floats.nbytes == expected


def test_binary_codes_pack_eight_per_byte():
    model = nn.Sequential(nn.Linear(25, 3))
    finalize(model, prepare(model, QuantSpec(1, "binary", per_channel=True)))
    assert store.weight_bytes(model[0]) == math.ceil(75 / 8) + 8 * 3


def _compressed(data, spec, *, ends=None, act_bits=8, qat=True):
    model = _chain()
    train(model, data, TrainSettings(epochs=1))
    records = [prune(model, ratio=0.25), prune_neurons(model, ratio=0.25, x=data.x_train[:256])]
    records.append(prune_weights(model, sparsity=0.75, scope="lamp"))
    train(model, data, TrainSettings(epochs=1, optimizer="sgd", lr=0.05))
    release(model)
    if spec is None:
        return model, records
    overrides = {n: QuantSpec(ends, per_channel=True) for n in end_layers(model)} if ends else None
    hooks = prepare(model, spec, act_bits=act_bits, overrides=overrides)
    calibrate(model, hooks, data.x_train[:128])
    if qat:
        train(model, data, TrainSettings(epochs=1, optimizer="sgd", lr=0.01))
    records.append(finalize(model, hooks))
    return model, records


@pytest.mark.parametrize(
    "spec, ends",
    [
        (None, None),
        (QuantSpec(8), None),
        (QuantSpec(4, "linear", True), None),
        (QuantSpec(3, "log"), None),
        (QuantSpec(1, "binary", True), 8),
    ],
)
def test_store_round_trips_a_weight_pruned_quantized_model_exactly(tmp_path, data, spec, ends):
    model, records = _compressed(data, spec, ends=ends)
    path = tmp_path / "model.npz"
    size = store.save(path, model, description={**DESCRIPTION, "records": records})
    loaded, description = store.load(path)
    model.eval()
    assert torch.equal(loaded(data.x_val[:64]), model(data.x_val[:64]))
    state, again = model.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys()
    floats = [k for k, v in state.items() if v.is_floating_point() or v.dtype == torch.bool]
    assert all(torch.equal(state[k], again[k]) for k in floats)  # weights, masks, biases
    last = "quantize" if spec else "weight_prune"
    assert [r["step"] for r in description["records"]][-1] == last
    # the JSON description (the records, every activation range) and zip headers
    assert 0 < size - store.stored_bytes(model) < 3000
    with np.load(path) as arrays:  # three arrays, no pickle
        assert sorted(arrays.files) == ["bytes", "description", "floats"]


def test_binary_ends_stay_at_8_bits(data):
    model, records = _compressed(data, QuantSpec(1, "binary", True), ends=8, qat=False)
    first, last = end_layers(model)
    assert records[-1]["layer_specs"] == {
        name: {"bits": 8, "scheme": "linear", "per_channel": True} for name in (first, last)
    }
    layers = quantized_layers(model)
    for name, layer in layers.items():
        levels = [len(w[m].abs().unique()) for w, m in zip(layer.weight, layer.weight_mask)]
        if name in (first, last):
            assert max(levels) > 2  # 8-bit codes
        else:
            assert max(levels) == 1  # every kept weight of a channel is +scale or -scale


def test_first_layout_files_still_load(tmp_path, data):
    model = _chain()
    pruned = prune(model, ratio=0.25)
    hooks = prepare(model, QuantSpec(4, per_channel=True), act_bits=8)
    calibrate(model, hooks, data.x_train[:128])
    quantized = finalize(model, hooks)
    arrays = {  # what `save` wrote before layout 2
        f"pairs/{n}": np.array([p["offset"], p["step"]], np.float32)
        for n, p in quantized["layers"].items()
    }
    lean = {k: v for k, v in quantized.items() if k not in ("layers", "layer_specs")}
    text = json.dumps({**DESCRIPTION, "records": [pruned, lean]})
    arrays["description"] = np.frombuffer(text.encode(), dtype=np.uint8)
    from trainers.quant_codes import weight_codes

    for name, codes in weight_codes(model).items():
        arrays[f"codes/{name}"] = codes
    for name, tensor in model.state_dict().items():
        if name.removesuffix(".weight") not in quantized["layers"] and tensor.is_floating_point():
            arrays[f"float/{name}"] = tensor.numpy()
    np.savez(tmp_path / "old.npz", **arrays)
    loaded, _ = store.load(tmp_path / "old.npz")
    model.eval()
    assert torch.allclose(loaded(data.x_val[:32]), model(data.x_val[:32]), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sparsity": 1.0}, r"weight_sparsity 1.0: allowed \[0, 1\)"),
        ({"sparsity": -0.1}, "weight_sparsity"),
        ({"sparsity": "0.5"}, "weight_sparsity"),
        ({"sparsity": 0.5, "scope": "random"}, r"weight_prune_scope 'random': allowed \['lamp'"),
        ({"sparsity": 0.5, "layers": ["nowhere"]}, "nowhere"),
    ],
)
def test_bad_weight_pruning_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_weights(_chain(), **kwargs)
