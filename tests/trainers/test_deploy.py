import pytest
import torch

from tests.trainers.conftest import SMALL_CHAIN
from trainers.models import build_model
from trainers.train import TrainSettings, evaluate, train

pytest.importorskip("onnxruntime")
from trainers import deploy  # noqa: E402


def test_int8_onnx_keeps_accuracy(tmp_path, data):
    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=(1, 8, 8), num_classes=10)
    train(model, data, TrainSettings(epochs=3))
    fp32 = deploy.export_onnx(model, data.in_shape, tmp_path / "m.onnx")
    int8 = deploy.quantize_int8(fp32, data.x_train[:256], tmp_path / "m8.onnx")
    reference = evaluate(model, data.x_test, data.y_test)
    assert deploy.onnx_accuracy(fp32, data.x_test, data.y_test) == pytest.approx(reference)
    assert deploy.onnx_accuracy(int8, data.x_test, data.y_test) >= reference - 2
    assert deploy.onnx_latency(int8, data.in_shape, repeats=3) > 0
