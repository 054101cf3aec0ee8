"""MNIST-1D: test accuracy of fixed models of every builder that takes 1-D inputs.

    python -m benchmarks.mnist1d [--seeds 3] [--epochs 60] [--out benchmarks/out/mnist1d.json]

Each model is trained `--epochs` epochs (AdamW, lr 3e-3, weight decay 1e-4, cosine schedule,
batch 64: `trainers.train`'s defaults) on the 3,200 training signals of `trainers.load_dataset(
"mnist1d")` per seed; accuracy is on the standard 1,000 test signals. Prints a Markdown table
with each model's parameters, MACs and peak activation memory (float32, batch 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from trainers.cost import count_macs, count_params
from trainers.data import load_dataset
from trainers.memory import peak_mem_bytes
from trainers.models import build_model
from trainers.train import TrainSettings, evaluate, train


def _chain(widths, *, kernel, expand, depths) -> dict:
    stages = {}
    for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
        stages |= {f"s{i}_width": width, f"s{i}_depth": depth, f"s{i}_kernel": kernel}
        stages[f"s{i}_expand"] = 1 if i == 0 else expand
    return stages


# (label, builder, architecture): from a linear-ish MLP to 1-D MobileNet-style chains
MODELS = [
    ("MLP 1 x 32", "mlp", {"layers": 1, "width": 32}),
    ("MLP 2 x 100", "mlp", {"layers": 2, "width": 100}),
    ("chain 8/16, k5", "chain", _chain([8, 16], kernel=5, expand=3, depths=[1, 1])),
    ("chain 16/32, k5", "chain", _chain([16, 32], kernel=5, expand=3, depths=[1, 2])),
    ("chain 16/32/64, k5", "chain", _chain([16, 32, 64], kernel=5, expand=3, depths=[1, 2, 2])),
]


def run(label: str, builder: str, arch: dict, *, seed: int, epochs: int, data) -> dict:
    torch.manual_seed(seed)
    model = build_model(builder, arch, in_shape=data.in_shape, num_classes=data.num_classes)
    start = time.perf_counter()
    train(model, data, TrainSettings(epochs=epochs, seed=seed))
    return {
        "model": label,
        "seed": seed,
        "test_acc": evaluate(model, data.x_test, data.y_test),
        "val_acc": evaluate(model, data.x_val, data.y_val),
        "params": count_params(model),
        "macs": count_macs(model, data.in_shape),
        "peak_mem_bytes": peak_mem_bytes(model, data.in_shape),
        "train_seconds": time.perf_counter() - start,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | params | MACs | peak memory (fp32) | test accuracy | sd | per seed | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, _, _ in MODELS:
        runs = [r for r in rows if r["model"] == label]
        if not runs:
            continue
        acc = [r["test_acc"] for r in runs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        seconds = statistics.fmean(r["train_seconds"] for r in runs)
        lines.append(
            f"| {label} | {runs[0]['params']:,} | {runs[0]['macs']:,} | "
            f"{runs[0]['peak_mem_bytes'] / 1024:.1f} KiB | {statistics.fmean(acc):.2f}% | "
            f"{sd:.2f} | {' '.join(f'{a:.1f}' for a in acc)} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--only", default=None, help="a model's label; default: all")
    parser.add_argument("--out", default="benchmarks/out/mnist1d.json")
    args = parser.parse_args(argv)
    data = load_dataset("mnist1d")
    rows = []
    for label, builder, arch in MODELS:
        if args.only and label != args.only:
            continue
        for seed in range(args.seeds):
            rows.append(run(label, builder, arch, seed=seed, epochs=args.epochs, data=data))
            print(f"{label} seed {seed}: {rows[-1]['test_acc']:.1f}%", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
