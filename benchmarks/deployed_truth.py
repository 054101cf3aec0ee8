"""Deployed truth (issue 34): per compression kind, the accuracy of the file that ships (scored
in ONNX Runtime, the row's `test_acc`) against the PyTorch model's (`torch_test_acc`), the
file's bytes against paretune's packed ones, and what scoring on the runtime costs a trial.

    python -W ignore -m benchmarks.deployed_truth [--seeds 5] [--epochs 15] [--out PATH]

Each kind is one `trainers.run_trial` per seed on MNIST-1D (`trainers.load_dataset("mnist1d")`,
3,200 training signals, 1,000 test) with a 1-D chain (stages 16/32/64, kernel 5, expand 3),
`--epochs` epochs of training and the schedule's default fine-tuning and QAT epochs. Reported
per kind, mean and standard deviation over seeds: `test_acc` (the deployed file's),
`torch_test_acc`, their difference, `size_bytes` (the file), `packed_bytes`, `latency_ms`
and `score_seconds` (scoring validation and test on the timed session); the share of the
trial's `train_seconds` that scoring took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from trainers import TrialSettings, run_trial
from trainers.data import load_dataset

ARCH = {
    "s0_depth": 1,
    "s0_width": 16,
    "s0_kernel": 5,
    "s0_expand": 1,
    "s1_depth": 1,
    "s1_width": 32,
    "s1_kernel": 5,
    "s1_expand": 3,
    "s2_depth": 1,
    "s2_width": 64,
    "s2_kernel": 5,
    "s2_expand": 3,
}
INT8 = {"compress.quantize": True, "compress.weight_bits": 8, "compress.act_bits": 8}
KINDS = {
    "fp32": {},
    "int8 PTQ, per channel": INT8,
    "int8 PTQ, per tensor": INT8 | {"compress.quant_granularity": "per_tensor"},
    "int8 QAT": INT8 | {"compress.quant_mode": "qat"},
    "4-bit linear QAT": INT8 | {"compress.weight_bits": 4, "compress.quant_mode": "qat"},
    "4-bit log QAT": INT8
    | {"compress.weight_bits": 4, "compress.quant_scheme": "log", "compress.quant_mode": "qat"},
    "4-bit activations QAT": INT8 | {"compress.act_bits": 4, "compress.quant_mode": "qat"},
    "binary QAT": INT8 | {"compress.weight_bits": 1, "compress.quant_mode": "qat"},
    "filters pruned 50%": {"compress.prune": True, "compress.prune_ratio": 0.5},
    "weights pruned 70%": {"compress.weight_prune": True, "compress.weight_sparsity": 0.7},
}
COLUMNS = ("test_acc", "torch_test_acc", "size_bytes", "packed_bytes", "latency_ms")


def run_kind(config: dict, data, *, seeds: int, epochs: int) -> dict:
    """Each seed's row, and the mean and deviation of each column and of the difference."""
    rows = []
    for seed in range(seeds):
        settings = TrialSettings.from_flat({"epochs": epochs, "seed": seed})
        arch = {f"arch.{k}": v for k, v in ARCH.items()}
        row = run_trial(arch | config, settings=settings, data=data)
        keys = (*COLUMNS, "score_seconds", "train_seconds", "status")
        rows.append({k: row.get(k) for k in keys})
    summary = {"seeds": rows}
    for key in (*COLUMNS, "score_seconds"):
        values = [r[key] for r in rows if r[key] is not None]
        summary[key] = _spread(values)
    gaps = [r["test_acc"] - r["torch_test_acc"] for r in rows]
    summary["deployed_minus_torch"] = _spread(gaps)
    summary["score_share"] = _spread([r["score_seconds"] / r["train_seconds"] for r in rows])
    return summary


def _spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std}


def table(results: dict) -> str:
    """The Markdown table the README quotes."""
    lines = [
        "| kind | deployed test_acc | PyTorch test_acc | deployed - PyTorch | size_bytes "
        "(file) | packed_bytes | latency_ms | scoring s/trial |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in results.items():
        cells = [f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f}" for k in ("test_acc", "torch_test_acc")]
        gap = s["deployed_minus_torch"]
        cells.append(f"{gap['mean']:+.2f} ± {gap['std']:.2f}")
        cells += [f"{s[k]['mean']:,.0f}" for k in ("size_bytes", "packed_bytes")]
        cells += [f"{s['latency_ms']['mean']:.3f}", f"{s['score_seconds']['mean']:.3f}"]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--kinds", nargs="*", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--out", default="benchmarks/out/deployed_truth.json")
    args = parser.parse_args()
    data = load_dataset("mnist1d")
    started, results = time.perf_counter(), {}
    for kind in args.kinds:
        results[kind] = run_kind(KINDS[kind], data, seeds=args.seeds, epochs=args.epochs)
        print(f"{kind}: done at {time.perf_counter() - started:.0f} s", flush=True)
    print(table(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
