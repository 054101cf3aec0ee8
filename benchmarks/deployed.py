"""Compression timed as deployed (issue 15): int8 trials against the same model in fp32, each
timed by `trainers.run_trial` itself.

    python -W ignore -m benchmarks.deployed [--seeds 5] [--rounds 3] [--epochs 15] [--out PATH]

Per seed, one fp32 trial of the default chain (`trainers.DEFAULT_CHAIN`) on digits trains the
model and keeps its last snapshot. Trials resumed from that snapshot (they train no further: the
same model) then run the rest of a trial: quantize to int8 (8-bit weights per channel, 8-bit
activations, post-training) or not, and measure. `latency_ms` is what each trial reports: batch
64, one thread, the median of 20 runs after warm-up, on its runtime (`deploy: onnxruntime`, the
default, and `deploy: torch`). The four (runtime, precision) trials run in turn `--rounds`
times and a seed's figure is the median per cell, so a change in the machine's load hits both
sides of a ratio alike. One more int8 trial hands its graph to a latency source that keeps it,
to score the int8 graph ONNX Runtime runs on the test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from trainers import DEFAULT_CHAIN, TrialSettings, deploy, run_trial
from trainers.data import digits
from trainers.trial import estimate_cost

INT8 = {
    "compress.quantize": True,
    "compress.weight_bits": 8,
    "compress.act_bits": 8,
    "compress.quant_granularity": "per_channel",
    "compress.quant_mode": "ptq",
}
CONFIG = {f"arch.{k}": v for k, v in DEFAULT_CHAIN.items()}


class _Kept:
    """A latency source that keeps the runtime's graph and times it as the trial would."""

    def __init__(self):
        self.graph = None

    def __call__(self, model, in_shape, *, onnx, **timing):
        self.graph = onnx
        return deploy.onnx_latency(onnx, in_shape, **timing)


CELLS = (
    ("onnxruntime", "fp32_ms", CONFIG),
    ("onnxruntime", "int8_ms", CONFIG | INT8),
    ("torch", "fp32_ms", CONFIG),
    ("torch", "int8_ms", CONFIG | INT8),
)


def run_seed(data, seed: int, *, epochs: int, rounds: int) -> dict:
    flat = {"seed": seed, "epochs": epochs}
    reports = []
    settings = TrialSettings.from_flat(flat | {"snapshots": True})
    fp32 = run_trial(CONFIG, reports.append, settings=settings)
    trained = reports[-1]["snapshot"]  # after the last epoch
    times = {cell[:2]: [] for cell in CELLS}
    for _ in range(rounds):
        for runtime, name, config in CELLS:
            settings = TrialSettings.from_flat(flat | {"runtime": runtime})
            result = run_trial(config, settings=settings, resume=trained)
            times[runtime, name].append(result["latency_ms"])
            if name == "int8_ms":
                row = {"int8_acc": result["test_acc"], "int8_bytes": result["size_bytes"]}
    row |= {"fp32_acc": fp32["test_acc"], "fp32_bytes": fp32["size_bytes"], "times": {}}
    for (runtime, name), values in times.items():
        row["times"][f"{runtime} {name}"] = values
        row.setdefault(runtime, {})[name] = statistics.median(values)
    for runtime in ("onnxruntime", "torch"):
        row[runtime]["speedup"] = row[runtime]["fp32_ms"] / row[runtime]["int8_ms"]
    kept = _Kept()
    settings = TrialSettings.from_flat(flat | {"latency_source": kept})
    run_trial(CONFIG | INT8, settings=settings, resume=trained)
    row["int8_graph_acc"] = deploy.onnx_accuracy(kept.graph, data.x_test, data.y_test)
    row["int8_graph_bytes"] = len(kept.graph)
    return row | {"estimate_s": estimate_seconds(data, flat, rounds=rounds)}


def estimate_seconds(data, flat: dict, *, rounds: int) -> dict:
    """Seconds `estimate_cost` (the check before training) takes per (runtime, precision)."""
    seconds = {}
    for _ in range(rounds):
        for runtime, name, config in CELLS:
            settings = TrialSettings.from_flat(flat | {"runtime": runtime})
            start = time.perf_counter()
            estimate_cost(config, settings, in_shape=data.in_shape, num_classes=data.num_classes)
            seconds.setdefault(f"{runtime} {name}", []).append(time.perf_counter() - start)
    return {cell: statistics.median(values) for cell, values in seconds.items()}


def table(rows: list[dict]) -> str:
    lines = [
        "| seed | ORT fp32 ms | ORT int8 ms | int8 speed-up | torch fp32 ms | torch int8 ms "
        "| torch speed-up | test acc fp32 / int8 trial / int8 graph |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for seed, r in enumerate(rows):
        ort, eager = r["onnxruntime"], r["torch"]
        lines.append(
            f"| {seed} | {ort['fp32_ms']:.2f} | {ort['int8_ms']:.2f} | {ort['speedup']:.2f}x "
            f"| {eager['fp32_ms']:.2f} | {eager['int8_ms']:.2f} | {eager['speedup']:.2f}x "
            f"| {r['fp32_acc']:.2f} / {r['int8_acc']:.2f} / {r['int8_graph_acc']:.2f} |"
        )
    ort, eager = (
        statistics.median(r[k]["speedup"] for r in rows) for k in ("onnxruntime", "torch")
    )
    first = rows[0]
    lines += [
        "",
        f"median int8 speed-up over fp32, as the trial times it: onnxruntime {ort:.2f}x, "
        f"torch {eager:.2f}x ({len(rows)} seeds)",
        f"size_bytes: fp32 {first['fp32_bytes']:,}, int8 {first['int8_bytes']:,} "
        f"({first['int8_bytes'] / first['fp32_bytes']:.3f}x); the int8 ONNX graph itself "
        f"{first['int8_graph_bytes']:,} bytes",
        "estimate_cost (the check before training), median seconds over seeds: "
        + ", ".join(
            f"{cell} {statistics.median(r['estimate_s'][cell] for r in rows):.2f}"
            for cell in first["estimate_s"]
        ),
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/out/deployed.json")
    args = parser.parse_args(argv)
    data = digits()
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        rows.append(run_seed(data, seed, epochs=args.epochs, rounds=args.rounds))
        speedup = rows[-1]["onnxruntime"]["speedup"]
        print(f"seed {seed}: {speedup:.2f}x in {time.perf_counter() - start:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
