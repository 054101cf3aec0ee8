"""`paretune export`: a trial of a real (one-trial) study written as ONNX and TorchScript,
reloaded, and checked against the trial's row; what each format carries; bad requests named."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from cluster.cli.commands import main
from cluster.cli.export import export_trial
from cluster.raytune import runner
from cluster.study import results
from cluster.study.config import Study
from tests.trainers.conftest import SMALL_CHAIN
from trainers import build_model, deploy, export, quantize

STUDY = {
    "name": "exported",
    "arch": "chain",
    "arch_options": {"stages": 2},
    "fixed": {f"arch.{k}": v for k, v in SMALL_CHAIN.items()},
    "train": {"lr": [0.01, 0.03]},
    "compress": {"quantize": True, "act_bits": 8, "quant_mode": "ptq"},
    "searcher": "random",
    "scheduler": "fifo",
    "trials": 1,
    "parallel": 1,
    "trial": {"epochs": 2, "latency_repeats": 3},
}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A one-trial study on digits: a small chain quantized to int8, run on Ray as any study
    (the session's Ray when `tests/cluster` started it, else one of 2 CPUs for this module)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    folder = tmp_path_factory.mktemp("export") / "study"
    try:
        runner.run(Study.from_dict({**STUDY, "dir": str(folder)}))
        yield folder
    finally:
        if started:
            ray.shutdown()


def test_a_trials_int8_model_exports_as_the_file_its_row_measured(
    study_dir, data, tmp_path, capsys
):
    row = results.load(study_dir).to_pylist()[0]
    assert row["status"] == "completed" and row["val_acc"] > 30  # it learned something
    out = tmp_path / "model.onnx"
    assert main(["export", str(study_dir), "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "is the one trial 0 measured" in printed and f"test_acc {row['test_acc']:.6g}" in printed
    assert f"latency_ms {row['latency_ms']:.6g}" in printed
    graph = out.read_bytes()
    ops = {node.op_type for node in onnx.load_from_string(graph).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # activations at the trained ranges
    assert len(graph) == row["size_bytes"]
    assert deploy.onnx_accuracy(graph, data.x_val, data.y_val) == row["val_acc"]
    assert deploy.onnx_accuracy(graph, data.x_test, data.y_test) == row["test_acc"]
    given = json.loads((tmp_path / "model.onnx.json").read_text())["input"]
    assert given["shape"] == ["batch", 1, 8, 8]
    raw = data.x_train * given["std"] + given["mean"]  # back to digits' pixel values, 0 to 16
    assert torch.allclose(raw, raw.round(), atol=1e-4) and raw.min() == 0 and raw.max() == 16


def test_a_file_that_is_not_the_measured_one_is_refused(study_dir, tmp_path, monkeypatch):
    from trainers import deploy_graph

    monkeypatch.setattr(
        deploy_graph, "canonical", lambda graph: setattr(graph, "doc_string", "another")
    )
    with pytest.raises(ValueError, match="is not the one it measured"):
        export_trial(study_dir, "0", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_trials_model_exports_as_torchscript_with_the_rows_accuracy(study_dir, data, tmp_path):
    row = results.load(study_dir).to_pylist()[0]
    out = tmp_path / "model.bin"
    assert main(["export", str(study_dir), "0", "--out", str(out), "--format", "torchscript"]) == 0
    extra = {"paretune.json": ""}
    model = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["paretune.json"])["input"]["std"] == pytest.approx(data.std)
    with torch.no_grad():
        accuracy = 100.0 * (model(data.x_val).argmax(1) == data.y_val).float().mean().item()
    assert accuracy == pytest.approx(row["torch_val_acc"], abs=1e-4)  # the model as evaluated


def test_bad_requests_are_named(study_dir, tmp_path, capsys):
    def error(*args) -> str:
        assert main(["export", str(study_dir), *args]) == 2
        return capsys.readouterr().err

    assert "has no trial '7'; trials: 0" in error("7", "--out", str(tmp_path / "m.onnx"))
    assert "name it .onnx or .pt, or give --format" in error("0", "--out", str(tmp_path / "m"))
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["export", str(study_dir), "0", "--out", "m.onnx", "--format", "tflite"])
    models = study_dir / "models"
    shutil.move(models, tmp_path / "kept")
    try:
        assert "no stored model for trial 0" in error("0", "--out", str(tmp_path / "m.onnx"))
    finally:
        shutil.move(tmp_path / "kept", models)
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "0", "--out", "m.onnx"]) == 2
    assert "no results under" in capsys.readouterr().err


def test_formats_carry_the_model_as_pruned_and_quantized(data, tmp_path):
    torch.manual_seed(0)
    model = build_model("chain", SMALL_CHAIN, in_shape=data.in_shape, num_classes=10).eval()
    hooks = quantize.prepare(model, quantize.QuantSpec(8), act_bits=16)  # 16-bit: in float ops
    quantize.calibrate(model, hooks, data.x_train[:128])
    quantize.finalize(model, hooks)
    with torch.no_grad():
        expected = model(data.x_val).numpy()
    assert "activations in float" in export.carries(model, "onnx")
    export.export_model(model, data.in_shape, tmp_path / "m.onnx", fmt="onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: data.x_val.numpy()})[0]
    assert np.allclose(got, expected, atol=1e-3)  # float kernels, 16-bit rounding in the graph
    export.export_model(model, data.in_shape, tmp_path / "m.pt", fmt="torchscript")
    with torch.no_grad():
        traced = torch.jit.load(str(tmp_path / "m.pt"))(data.x_val).numpy()
    assert np.array_equal(traced, expected)  # exactly the evaluated model, rounding included
    assert export.format_of("a.PT") == "torchscript" and export.format_of("x", "onnx") == "onnx"
    with pytest.raises(ValueError, match=r"format 'tflite' is not allowed; allowed: \['onnx'"):
        export.format_of("a.onnx", "tflite")


def test_a_warm_trial_is_exported_from_the_study_that_ran_it(study_dir, tmp_path):
    from cluster.study import warm
    from cluster.study.resume import make_searcher, prepare_dir

    seeded = Study.from_dict(
        {**STUDY, "dir": str(tmp_path / "new"), "warm_start": [str(study_dir)]}
    )
    folder = prepare_dir(seeded, resume=False)
    row = warm.seed(seeded, make_searcher(seeded), folder, None).to_pylist()[0]
    assert (row["trial"], row["warm_from"], row["warm_trial"]) == ("0", str(study_dir), "0")
    assert not (folder / "models").exists()
    assert main(["export", str(folder), "0", "--out", str(tmp_path / "m.pt")]) == 0
    direct = tmp_path / "direct.pt"
    assert main(["export", str(study_dir), "0", "--out", str(direct)]) == 0
    x = torch.zeros(2, 1, 8, 8)
    assert torch.equal(torch.jit.load(str(tmp_path / "m.pt"))(x), torch.jit.load(str(direct))(x))
