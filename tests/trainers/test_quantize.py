import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trainers.conftest import SMALL_CHAIN
from trainers import cost, store
from trainers.blocks import Add
from trainers.cost import count_params
from trainers.models import build_model
from trainers.prune import prune
from trainers.quant_codes import pack, packed_bytes, unpack
from trainers.quantize import (
    QuantSpec,
    calibrate,
    decode,
    encode,
    fake_quantize,
    finalize,
    fuse_batchnorm,
    prepare,
    quant_params,
)


def _round_trip(x, spec):
    offset, step = quant_params(x, spec)
    codes = encode(x, spec, offset, step)
    return codes, decode(codes, spec, offset, step), offset, step


def test_linear_is_the_classic_formula():
    x = torch.tensor([-1.0, 0.0, 0.3, 2.0])
    codes, _, offset, step = _round_trip(x, QuantSpec(2))
    assert step.item() == pytest.approx(3.0 / 3) and offset.item() == -1.0
    assert codes.tolist() == [0, 1, 1, 3]  # round((x - min) / step)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(2, 16),
    scheme=st.sampled_from(["linear", "symmetric"]),
    seed=st.integers(0, 10_000),
    per_channel=st.booleans(),
)
def test_error_is_at_most_half_a_step(bits, scheme, seed, per_channel):
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    spec = QuantSpec(bits, scheme, per_channel)
    codes, back, _, step = _round_trip(x, spec)
    assert codes.min() >= 0 and codes.max() < 2**bits
    assert ((back - x).abs() <= step / 2 + 1e-12).all()


def test_log_levels_are_powers_of_two():
    x = torch.tensor([1.0, -0.5, 0.26, 0.1, -0.0009, 0.0])
    spec = QuantSpec(4, "log")
    _, back, _, _ = _round_trip(x, spec)
    assert back.tolist() == pytest.approx([1.0, -0.5, 0.25, 0.125, 0.0, 0.0])
    nonzero = back[back != 0].abs()
    assert torch.allclose(torch.log2(nonzero), torch.log2(nonzero).round())


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 12, 16])
def test_packing_is_exact(bits):
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=1001)
    buffer = pack(codes, bits)
    assert buffer.nbytes == math.ceil(1001 * bits / 8) == packed_bytes(1001, bits)
    assert np.array_equal(unpack(buffer, bits, 1001), codes)


def test_two_4bit_codes_per_byte_low_nibble_first():
    assert pack([0x3, 0xA, 0xF], 4).tolist() == [0xA3, 0x0F]


def test_eight_binary_codes_per_byte_first_in_the_low_bit():
    assert pack([1, 0, 0, 0, 0, 0, 0, 1, 1], 1).tolist() == [0x81, 0x01]  # ceil(9 / 8) = 2


def test_binary_weights_are_plus_minus_the_mean_absolute_weight_per_channel():
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    binary = fake_quantize(w, QuantSpec(1, "binary", per_channel=True))
    scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(binary, torch.where(w >= 0, scale, -scale), rtol=1e-6, atol=0)
    for channel in binary:  # exactly two values per channel, +scale and -scale
        assert channel.abs().unique().numel() == 1
    codes, back, offset, step = _round_trip(w, QuantSpec(1, "binary", per_channel=True))
    assert torch.equal(codes, (w >= 0).long()) and torch.equal(back, binary)
    assert torch.equal(step, -2 * offset)  # the pair is (-scale, 2 * scale)
    whole = fake_quantize(w, QuantSpec(1, "binary"))  # per tensor: one scale
    assert torch.allclose(whole.abs(), w.abs().mean().expand_as(w))


def test_binary_scale_and_linear_ranges_count_kept_weights_only():
    w = torch.tensor([[1.0, -2.0, 3.0, 0.5], [-4.0, 0.25, 2.0, 8.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, True, False]])
    binary = fake_quantize(w, QuantSpec(1, "binary", per_channel=True), mask=mask)
    assert binary.tolist() == [[2.0, -2.0, 2.0, 0.0], [-3.0, 0.0, 3.0, 0.0]]
    offset, step = quant_params(w, QuantSpec(2, per_channel=True), mask=mask)
    # the kept minimum of each row, nudged to a whole zero point: round(2 / (5/3)) = 1 step
    assert offset.flatten().tolist() == pytest.approx([-5 / 3, -4.0])
    assert step.flatten().tolist() == pytest.approx([5 / 3, 2.0])  # (3 - -2) / 3; the masked 8
    # would have made the second row's step (8 - -4) / 3


def test_binary_straight_through_gradient_flows():
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    (fake_quantize(x, QuantSpec(1, "binary")) * torch.arange(11.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(11.0))


def test_straight_through_gradient_flows():
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    (fake_quantize(x, QuantSpec(3)) * torch.arange(11.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(11.0))


def test_batchnorm_fusion_keeps_outputs(data):
    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    model.eval()
    expected = model(data.x_val[:16])
    fused = fuse_batchnorm(model)
    assert "stem.0" in fused and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    assert torch.allclose(model(data.x_val[:16]), expected, atol=1e-5)


def _quantized(data, spec, act_bits=8):
    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    pruned = prune(model, ratio=0.25)
    hooks = prepare(model, spec, act_bits=act_bits)
    calibrate(model, hooks, data.x_train[:128])
    return model, pruned, finalize(model, hooks)


def test_size_counts_packed_storage(data):
    torch.manual_seed(0)
    plain = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    floats = sum(b.numel() for n, b in plain.named_buffers() if b.is_floating_point())
    assert cost.packed_bytes(plain) == 4 * (count_params(plain) + floats)
    model, _, record = _quantized(data, QuantSpec(4, per_channel=True))
    expected = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
            weight = module.weight
            expected += math.ceil(weight.numel() * 4 / 8) + 8 * weight.shape[0]
            expected += 4 * module.bias.numel() if module.bias is not None else 0
            expected += 8  # its input quantizer's float32 range, which trainers.store keeps
        if isinstance(module, Add):
            expected += 16  # a residual addition's two input ranges
    assert cost.packed_bytes(model) == expected
    assert set(record["layers"]) >= {"stem.0", "classifier"} and record["act_bits"] == 8


@pytest.mark.parametrize(
    "spec", [QuantSpec(4, "linear", True), QuantSpec(3, "log"), QuantSpec(8, "symmetric")]
)
def test_saved_model_loads_identically(tmp_path, data, spec):
    model, pruned, quantized = _quantized(data, spec)
    description = {
        "model": "chain",
        "arch": SMALL_CHAIN,
        "in_shape": [1, 8, 8],
        "num_classes": 10,
        "records": [pruned, quantized],
    }
    path = tmp_path / "model.npz"
    store.save(path, model, description=description)
    loaded, _ = store.load(path)
    model.eval()
    assert torch.allclose(loaded(data.x_val[:32]), model(data.x_val[:32]), atol=1e-5)


def test_quantization_aware_training_learns_through_fake_quantization(data):
    from trainers.train import TrainSettings, evaluate, train

    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    train(model, data, TrainSettings(epochs=4))
    hooks = prepare(model, QuantSpec(4, per_channel=True), act_bits=8)
    calibrate(model, hooks, data.x_train[:128])
    original = copy.deepcopy(model.stem[0].parametrizations.weight.original.detach())
    train(model, data, TrainSettings(epochs=2, optimizer="sgd", lr=0.01))
    assert not torch.equal(model.stem[0].parametrizations.weight.original, original)
    finalize(model, hooks)
    assert evaluate(model, data.x_val, data.y_val) > 80


def test_bad_specs_are_named():
    with pytest.raises(ValueError, match=r"weight_bits 1 .*allowed 2 to 16 \(1 is the binary"):
        QuantSpec(1)
    with pytest.raises(ValueError, match=r"weight_bits 2 with the binary scheme: allowed \[1\]"):
        QuantSpec(2, "binary")
    with pytest.raises(ValueError, match="weight_bits 17"):
        QuantSpec(17)
    with pytest.raises(ValueError, match="weight_bits True"):
        QuantSpec(True)
    with pytest.raises(ValueError, match=r"quant_scheme 'nonlinear': allowed \["):
        QuantSpec(8, "nonlinear")
    with pytest.raises(ValueError, match="act_bits 1: allowed 2 to 16, or 32"):
        prepare(
            build_model("mlp", {"layers": 1, "width": 4}, in_shape=(4,), num_classes=2),
            QuantSpec(8),
            act_bits=1,
        )


def test_percentile_ranges_ignore_outliers():
    from trainers.quantize import ActQuantizer

    x = torch.cat([torch.linspace(-1, 1, 100_000), torch.tensor([50.0])])
    minmax, percentile = ActQuantizer(8), ActQuantizer(8, method="percentile", percentile=99.9)
    for hook in (minmax, percentile):
        hook(None, (x,))
        hook.freeze()
    assert minmax.hi == 50.0 and percentile.hi == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="allowed"):
        ActQuantizer(8, method="mse")
