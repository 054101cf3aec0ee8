"""Deployed truth: for every compression kind, the ONNX file `paretune export` writes from a
trial's stored model is the file its row measured: its predictions on the test split give the
row's `test_acc` exactly, its bytes are the row's `size_bytes`, its sha256 the `deploy`
record's; the estimate before training sizes the same file; QAT ships at its trained ranges."""

import hashlib

import numpy as np
import onnx
import onnxruntime
import pytest

from tests.trainers.conftest import SMALL_CHAIN
from trainers import TrialSettings, estimate_cost, run_trial, store
from trainers.export import export_model

QUANT = {"compress.quantize": True, "compress.weight_bits": 8, "compress.act_bits": 8}
KINDS = {
    "int8 ptq per channel": QUANT,
    "int8 qat": QUANT | {"compress.quant_mode": "qat"},
    "int8 per tensor": QUANT | {"compress.quant_granularity": "per_tensor"},
    "4-bit log": QUANT | {"compress.weight_bits": 4, "compress.quant_scheme": "log"},
    "4-bit linear, 16-bit activations": QUANT
    | {"compress.weight_bits": 4, "compress.act_bits": 16},
    "4-bit linear, 4-bit activations": QUANT | {"compress.weight_bits": 4, "compress.act_bits": 4},
    "binary": {"compress.quantize": True, "compress.weight_bits": 1, "compress.act_bits": 8},
    "filter pruning": {"compress.prune": True, "compress.prune_ratio": 0.5},
    "weight sparsity with int8": QUANT
    | {"compress.weight_prune": True, "compress.weight_sparsity": 0.5},
    "binary with weight sparsity": {
        "compress.quantize": True,
        "compress.weight_bits": 1,
        "compress.weight_prune": True,
        "compress.weight_sparsity": 0.5,
    },
    "none": {},
}
FAST = {"epochs": 1, "latency_repeats": 2, "finetune_epochs": 1, "qat_epochs": 1}
ARCH = {f"arch.{k}": v for k, v in SMALL_CHAIN.items()}


def _accuracy(path, x, y) -> float:
    """What a user measures with ONNX Runtime on the exported file."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return 100.0 * int((logits.argmax(1) == y.numpy()).sum()) / len(y)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_exported_file_is_the_one_the_row_measured(kind, data, tmp_path):
    config = ARCH | KINDS[kind]
    saved = tmp_path / "model.npz"
    settings = TrialSettings.from_flat(FAST | {"save_path": str(saved)})
    row = run_trial(config, settings=settings, data=data)
    assert row["status"] == "completed", row.get("error")
    model, description = store.load(saved)
    out = tmp_path / "model.onnx"
    written = export_model(model, description["in_shape"], out, fmt="onnx")
    assert written == out.stat().st_size == row["size_bytes"]
    assert _accuracy(out, data.x_test, data.y_test) == row["test_acc"]
    assert _accuracy(out, data.x_val, data.y_val) == row["val_acc"]
    deploy = row["records"][-1]
    assert deploy["step"] == "deploy" and deploy["bytes"] == row["size_bytes"]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == deploy["sha256"]
    assert row["torch_test_acc"] is not None and row["score_seconds"] >= 0
    # the estimate before training sizes the same file, from an untrained model of its shape
    estimate = estimate_cost(config, settings, in_shape=data.in_shape, num_classes=10)
    assert estimate["size_bytes"] == row["size_bytes"]


def _codes(path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {
        t.name: onnx.numpy_helper.to_array(t)
        for t in graph.initializer
        if t.name.endswith(".weight.codes")
    }


@pytest.mark.parametrize(
    "extra, levels",
    [
        ({"compress.weight_bits": 4}, 16),
        ({"compress.weight_bits": 3, "compress.quant_scheme": "log"}, 8),
        ({"compress.weight_bits": 1}, 2),
    ],
)
def test_narrow_weights_ship_at_their_own_levels(extra, levels, data, tmp_path):
    saved = tmp_path / "model.npz"
    settings = TrialSettings.from_flat(FAST | {"save_path": str(saved)})
    config = ARCH | QUANT | extra | {"compress.first_last_bits": extra["compress.weight_bits"]}
    run_trial(config, settings=settings, data=data)
    model, description = store.load(saved)
    export_model(model, description["in_shape"], tmp_path / "m.onnx", fmt="onnx")
    codes = _codes(tmp_path / "m.onnx")
    assert codes and all(c.dtype in (np.uint8, np.int8) for c in codes.values())
    assert 2 <= max(len(np.unique(c)) for c in codes.values()) <= levels


def test_qat_ships_at_its_trained_ranges(data, tmp_path):
    """The QAT model and its file agree but for float rounding, which moves a 4-bit activation
    at a level's edge to the next level: a handful of the 359 test digits."""
    settings = TrialSettings.from_flat({**FAST, "epochs": 3, "qat_epochs": 2})
    config = ARCH | QUANT | {"compress.quant_mode": "qat", "compress.act_bits": 4}
    row = run_trial(config, settings=settings, data=data)
    assert row["test_acc"] > 30
    assert abs(row["test_acc"] - row["torch_test_acc"]) <= 2.0
    assert abs(row["val_acc"] - row["torch_val_acc"]) <= 2.0


def test_the_file_does_not_depend_on_training_only_state():
    """A supernet's recalibrated batch norms (momentum None) export as the stored model's."""
    import torch

    from trainers import deploy

    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.BatchNorm2d(4)]  # not folded
    model = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(144, 10))
    graph = deploy.runtime_graph(model, (1, 8, 8))
    model[2].momentum = None
    assert deploy.runtime_graph(model, (1, 8, 8)) == graph


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 40)])
def test_int8_chain_runs_every_conv_on_integer_kernels(in_shape, tmp_path):
    """Residual additions are quantized (both inputs, one code per tensor and range), so ONNX
    Runtime fuses every conv, projections included, into `QLinearConv` and adds in integers."""
    import torch

    from trainers import deploy, quantize
    from trainers.models import build_model

    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=in_shape, num_classes=10).eval()
    hooks = quantize.prepare(model, quantize.QuantSpec(8), act_bits=8)
    quantize.calibrate(model, hooks, torch.randn(64, *in_shape))
    quantize.finalize(model, hooks)
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(deploy.runtime_graph(model, in_shape), options)
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    convs = sum(isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d) for m in model.modules())
    assert ops.count("QLinearConv") == convs and "Conv" not in ops and "FusedConv" not in ops
    assert "QLinearAdd" in ops
