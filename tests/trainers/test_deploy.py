"""Costs as deployed: the runtime's graph (int8 for a quantized model), timed after quantization,
sized as stored; the runtime key checked; a model the runtime cannot export fails its trial."""

import math

import grpc
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from cluster.remote import device
from cluster.study.config import ConfigError, Study
from tests.trainers.conftest import SMALL_CHAIN
from trainers import TrialSettings, deploy, estimate_cost, quantize, run_trial
from trainers.cost import deployed_latency
from trainers.models import MODELS, build_model
from trainers.train import TrainSettings, evaluate, train

INT8 = {"compress.quantize": True, "compress.weight_bits": 8, "compress.act_bits": 8}
FAST = {"epochs": 1, "latency_repeats": 4}


def _arch(arch):
    return {f"arch.{k}": v for k, v in arch.items()}


def _ops(graph: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(graph).graph.node}


class _Timed:
    """A latency source that keeps every graph it is given and times it in ONNX Runtime."""

    def __init__(self):
        self.graphs = []

    def __call__(self, model, in_shape, *, onnx, **timing):
        self.graphs.append(onnx)
        return deploy.onnx_latency(onnx, in_shape, **timing)


def test_int8_onnx_keeps_accuracy(data):
    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    train(model, data, TrainSettings(epochs=3))
    reference = evaluate(model, data.x_test, data.y_test)
    fp32 = deploy.runtime_graph(model, data.in_shape)
    assert deploy.onnx_accuracy(fp32, data.x_test, data.y_test) == pytest.approx(reference)
    hooks = quantize.prepare(model, quantize.QuantSpec(8, per_channel=True), act_bits=8)
    quantize.calibrate(model, hooks, data.x_train[:256])
    quantize.finalize(model, hooks)
    int8 = deploy.runtime_graph(model, data.in_shape)
    assert deploy.onnx_accuracy(int8, data.x_test, data.y_test) >= reference - 2
    assert deploy.onnx_latency(int8, data.in_shape, repeats=3) > 0


def test_a_4_bit_trial_is_timed_on_its_own_codes_and_sized_as_its_file(tmp_path, data):
    timed = _Timed()
    config = _arch(SMALL_CHAIN) | INT8 | {"compress.weight_bits": 4}
    flat = FAST | {"latency_source": timed, "save_path": str(tmp_path / "m.npz")}
    result = run_trial(config, settings=TrialSettings.from_flat(flat))
    assert result["status"] == "completed" and len(timed.graphs) == 1
    graph = timed.graphs[0]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(graph)
    # the trial's own weights: at most 2**4 levels per filter, a byte each
    model = onnx.load_from_string(graph)
    codes = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith(".codes")]
    assert codes and all(c.dtype == np.uint8 and len(np.unique(c)) <= 16 for c in codes)
    # the graph that was timed was scored: the row's accuracy is its own
    assert deploy.onnx_accuracy(graph, data.x_test, data.y_test) == result["test_acc"]
    assert result["size_bytes"] == len(graph)
    # packed_bytes is the storage trainers.store writes (packed 4-bit codes), headers aside
    with np.load(tmp_path / "m.npz") as stored:
        payload = sum(stored[k].nbytes for k in stored.files if k != "description")
    assert result["packed_bytes"] == payload


def test_a_float_trial_is_timed_on_a_float_graph():
    timed = _Timed()
    settings = TrialSettings.from_flat(FAST | {"latency_source": timed})
    result = run_trial(_arch(SMALL_CHAIN), settings=settings)
    assert result["latency_ms"] > 0 and "Conv" in _ops(timed.graphs[0])
    assert not {"QLinearConv", "QuantizeLinear"} & _ops(timed.graphs[0])


@pytest.mark.parametrize(
    "act_bits, kernels", [(4, "int8"), (8, "int8"), (16, "fp32"), (32, "fp32")]
)
def test_what_each_activation_width_runs_as(act_bits, kernels):
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    assert deploy.kernels(model) == "fp32"
    hooks = quantize.prepare(model, quantize.QuantSpec(4), act_bits=act_bits)
    quantize.calibrate(model, hooks, torch.randn(16, 1, 8, 8))
    quantize.finalize(model, hooks)
    assert deploy.kernels(model) == kernels
    graph = deploy.runtime_graph(model, (1, 8, 8))
    assert ("QuantizeLinear" in _ops(graph)) == (kernels == "int8")


def test_the_runtime_gets_the_model_without_its_activation_fake_quantizers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    x = torch.randn(8, 1, 8, 8)
    hooks = quantize.prepare(model, quantize.QuantSpec(8), act_bits=2)
    quantize.calibrate(model, hooks, x)
    quantize.finalize(model, hooks)
    copy = deploy.float_copy(model)
    assert deploy.activation_bits(copy) == 32 and deploy.activation_bits(model) == 2
    functional = nn.functional
    with torch.no_grad():
        plain = functional.relu(functional.conv2d(x, model[0].weight, model[0].bias))
        plain = functional.linear(plain.flatten(1), model[3].weight, model[3].bias)
        assert torch.equal(copy(x), plain) and not torch.equal(model(x), plain)


def test_estimate_cost_times_the_same_graph_as_the_trial():
    arch = _arch(SMALL_CHAIN)
    estimated, trained = _Timed(), _Timed()
    settings = TrialSettings.from_flat(FAST | {"latency_source": estimated})
    cost = estimate_cost(arch | INT8, settings, in_shape=(1, 8, 8), num_classes=10)
    run_trial(arch | INT8, settings=TrialSettings.from_flat(FAST | {"latency_source": trained}))
    assert _ops(estimated.graphs[0]) == _ops(trained.graphs[0])
    assert cost["size_bytes"] == len(estimated.graphs[0]) == len(trained.graphs[0])


def test_the_torch_runtime_times_eager_float_kernels():
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    seen = []

    def source(model, in_shape, *, onnx, **timing):
        seen.append((model, onnx))
        return 1.0

    assert deployed_latency(model, (1, 8, 8), runtime="torch", source=source) == 1.0
    assert isinstance(seen[0][0], nn.Module) and seen[0][1] is None
    before = torch.get_num_threads()
    assert deployed_latency(model, (1, 8, 8), runtime="torch", repeats=3, threads=1) > 0
    assert torch.get_num_threads() == before


def test_the_runtime_key_is_checked_and_passed_on(tmp_path):
    with pytest.raises(ConfigError, match=r"deploy: 'tflite' is not allowed.*\['onnxruntime'"):
        Study.from_dict({"deploy": "tflite"})
    with pytest.raises(ConfigError, match="deploy: expected str"):
        Study.from_dict({"deploy": 8})
    with pytest.raises(ConfigError, match="trial: unknown key 'runtime'"):
        Study.from_dict({"trial": {"runtime": "torch"}})  # the study's `deploy` sets it
    with pytest.raises(ValueError, match=r"trial setting 'runtime': 'tvm' is not allowed"):
        TrialSettings.from_flat({"runtime": "tvm"})
    assert Study().trial_settings().cost.runtime == "onnxruntime"
    study = Study.from_dict({"deploy": "torch", "dir": str(tmp_path)})
    assert study.trial_settings().cost.runtime == "torch"


class _Cumulative(nn.Module):
    """Trains, but has no ONNX form: ONNX has no cumulative maximum."""

    def __init__(self, arch, *, in_shape, num_classes):
        super().__init__()
        self.classifier = nn.Linear(math.prod(in_shape), num_classes)

    def forward(self, x):
        return self.classifier(torch.cummax(x.flatten(1), dim=1).values)


def test_a_model_the_runtime_cannot_export_fails_its_trial_with_the_reason(monkeypatch):
    monkeypatch.setitem(MODELS, "cumulative", _Cumulative)
    settings = TrialSettings.from_flat(FAST | {"model": "cumulative"})
    result = run_trial({}, settings=settings)
    assert result["status"] == "failed" and result["latency_ms"] is None
    assert result["val_acc"] > 10 and result["params"] > 0  # trained and kept
    assert "DeployError" in result["error"] and "aten::cummax" in result["error"]
    torch_settings = TrialSettings.from_flat(FAST | {"model": "cumulative", "runtime": "torch"})
    assert run_trial({}, settings=torch_settings)["status"] == "completed"


@pytest.fixture
def device_server():
    server, port = device.serve(queue_limit=2)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_a_device_server_times_the_deployed_onnx(device_server):
    source = device.RemoteLatency(device_server, retry_s=5.0)
    timing = {"batch_size": 8, "repeats": 3, "threads": 1}
    with pytest.raises(grpc.RpcError, match="not an ONNX model"):
        source(nn.Linear(64, 10), (1, 8, 8), onnx=b"not a graph", **timing)
    settings = TrialSettings.from_flat(FAST | {"latency_source": source})
    result = run_trial(_arch(SMALL_CHAIN) | INT8, settings=settings)
    assert result["status"] == "completed" and result["latency_ms"] > 0
