import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from cluster import cli
from cluster.cli import plot
from cluster.study import results
from cluster.study.config import Study

ROOT = Path(__file__).resolve().parents[2]


def test_plot_writes_the_front_and_best_so_far(tmp_path):
    study = Study.from_dict(
        {
            "arch": "mlp",
            "compress": False,
            "train": False,
            "dir": str(tmp_path),
            "objectives": {"val_acc": "max", "latency_ms": "min"},
        }
    )
    (tmp_path / "study.json").write_text(json.dumps(study.to_dict()))
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    start = datetime.now(UTC)
    for i, (acc, ms) in enumerate([(90, 3.0), (95, 5.0), (80, 1.0), (97, 9.0)]):
        writer.add(
            {
                "trial": str(i),
                "status": "completed",
                "final": True,
                "val_acc": acc,
                "latency_ms": ms,
                "size_bytes": 1000 * ms,
                "macs": 10 * ms,
                "time": start + timedelta(seconds=i),
                "config": {"arch.layers": 1},
            }
        )
    writer.flush()
    assert cli.main(["plot", str(tmp_path)]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == [
        "best-so-far.png",
        "front-latency_ms.png",
        "front-macs.png",
        "front-size_bytes.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in (tmp_path / "plots").glob("*.png"))


def test_the_front_tells_compressed_trials_draws_the_bound_and_edges_an_outlier(tmp_path):
    study = Study.from_dict(
        {
            "arch": "mlp",
            "compress": {"quantize": [False, True]},
            "train": False,
            "dir": str(tmp_path),
            "objectives": {"val_acc": "max"},
            "constraints": {"latency_ms": 4.0},
        }
    )
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    trials = [(90, 3.0, False), (95, 5.0, False), (93, 1.0, True), (97, 2.5, True)]
    trials += [(10.0, 2.0, False), (92, 4.5, True)]  # a diverged trial: chance accuracy
    for i, (acc, ms, quantized) in enumerate(trials):
        config = {"arch.layers": 1, "compress.quantize": quantized}
        row = {"trial": str(i), "status": "completed", "final": True, "config": config}
        writer.add(row | {"val_acc": acc, "latency_ms": ms, "time": datetime.now(UTC)})
    writer.add({"trial": "9", "status": "failed", "final": True, "val_acc": 0.0, "latency_ms": 900})
    writer.flush()
    layout = plot.front_layout(results.load(tmp_path), study, "latency_ms")
    assert sorted(layout["compressed"]) == [(1.0, 93), (2.5, 97), (4.5, 92)]
    assert sorted(layout["uncompressed"]) == [(2.0, 10.0), (3.0, 90), (5.0, 95)]
    assert layout["front"] == [(1.0, 93), (2.5, 97)] and layout["bound"] == 4.0
    low, high = layout["ylim"]
    assert 85 < low < 90 and 97 < high < 98 and layout["off_axis"] == 1  # 10% left on the edge
    assert (
        layout["xlim"][0] <= 1.0 and layout["xlim"][1] >= 5.0
    )  # the failed trial's 900 ms is not drawn


def test_the_cluster_example_study_is_valid(tmp_path):
    raw = yaml.safe_load((ROOT / "examples" / "cifar10-gpu.yaml").read_text())
    study = Study.from_dict({**raw, "data_path": str(tmp_path), "dir": str(tmp_path / "s")})
    assert study.gpus_per_trial == 0.25 and study.arch == "nb201"
    assert study.trial_settings().model_options == {"channels": 16, "cells": 5}
    cluster = yaml.safe_load((ROOT / "examples" / "ray-cluster.yaml").read_text())
    assert {"head", "gpu-worker"} <= set(cluster["available_node_types"])
