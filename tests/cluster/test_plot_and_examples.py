import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from cluster import cli
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


def test_the_cluster_example_study_is_valid(tmp_path):
    raw = yaml.safe_load((ROOT / "examples" / "cifar10-gpu.yaml").read_text())
    study = Study.from_dict({**raw, "data_path": str(tmp_path), "dir": str(tmp_path / "s")})
    assert study.gpus_per_trial == 0.25 and study.arch == "nb201"
    assert study.trial_settings().model_options == {"channels": 16, "cells": 5}
    cluster = yaml.safe_load((ROOT / "examples" / "ray-cluster.yaml").read_text())
    assert {"head", "gpu-worker"} <= set(cluster["available_node_types"])
