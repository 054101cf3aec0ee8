"""Deployed truth per epoch: where the model that ships differs from the PyTorch module being
trained (quantization-aware training), the epoch reports a scheduler decides on carry the
deployed graph's validation accuracy as `val_acc` and the PyTorch figure as `torch_val_acc`;
fp32 epochs and the `torch` runtime keep the PyTorch figure."""

import pytest

from tests.trainers.conftest import SMALL_CHAIN
from trainers import TrialSettings, run_trial

ARCH = {f"arch.{k}": v for k, v in SMALL_CHAIN.items()}
QAT = {"compress.quantize": True, "compress.weight_bits": 4, "compress.act_bits": 4}
QAT |= {"compress.quant_mode": "qat"}
FAST = {"epochs": 2, "latency_repeats": 2, "finetune_epochs": 1, "qat_epochs": 2}
PLAIN_KEYS = {"step", "phase", "epoch", "train_loss", "val_acc"}


def _trial(config, data, **flat):
    reports = []
    settings = TrialSettings.from_flat(FAST | flat)
    row = run_trial(ARCH | config, reports.append, settings=settings, data=data)
    assert row["status"] == "completed", row.get("error")
    return row, reports


def test_qat_epochs_report_the_deployed_graphs_accuracy(data):
    row, reports = _trial(QAT, data)
    qat = [r for r in reports if r["phase"] == "qat"]
    assert len(qat) == 2 and all(set(r) == PLAIN_KEYS | {"torch_val_acc"} for r in qat)
    # nothing changes after the last QAT epoch: its report is the final result's figures
    assert qat[-1]["val_acc"] == row["val_acc"]
    assert qat[-1]["torch_val_acc"] == row["torch_val_acc"]
    assert all(set(r) == PLAIN_KEYS for r in reports if r["phase"] != "qat")


@pytest.mark.parametrize(
    "config, flat",
    [
        ({}, {}),  # plain fp32 training
        ({"compress.weight_prune": True, "compress.weight_sparsity": 0.5}, {}),  # masks
        ({"compress.prune": True, "compress.prune_ratio": 0.5}, {}),  # filters
        (QAT, {"runtime": "torch"}),  # the torch runtime runs the PyTorch model
    ],
)
def test_fp32_epochs_and_the_torch_runtime_keep_the_pytorch_figure(config, flat, data):
    _, reports = _trial(config, data, **flat)
    assert reports and all(set(r) == PLAIN_KEYS for r in reports)


def test_fp32_epochs_pay_no_export(data, monkeypatch):
    """Only QAT epochs build a graph before the final one."""
    from trainers import phases

    calls = []
    monkeypatch.setattr(phases, "scored_graph", lambda *a, **k: calls.append(1) or ({}, None))
    _trial({"compress.prune": True, "compress.prune_ratio": 0.5}, data)
    assert calls == []
