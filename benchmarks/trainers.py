"""Compression on digits with the default chain model, over seeds, in one run.

    python -m benchmarks.trainers [--seeds 5] [--out benchmarks/out/trainers.json]

Per seed: train the fp32 model (15 epochs), then from that same model
  - prune 50% of filters by L1 (ours; Torch-Pruning's L1 too, when installed), fine-tune 8 epochs;
  - int8 post-training quantization (our packed storage; ONNX Runtime's int8 kernels for speed);
  - 4-bit quantization-aware training, and 4-bit linear against log quantization;
and train the student with and without distillation from a 2x wider teacher (trained once).
Prints Markdown tables; accuracy is on the 359 test images, latency at batch 64 on one thread.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from trainers import deploy, quantize
from trainers.cost import count_macs, measure_latency, packed_bytes
from trainers.data import digits
from trainers.distill import Distiller
from trainers.models import build_model
from trainers.prune import prune
from trainers.train import TrainSettings, evaluate, train
from trainers.trial import DEFAULT_CHAIN

EPOCHS, FINETUNE, QAT = 15, 8, 4
FINETUNE_SETTINGS = {"optimizer": "sgd", "lr": 0.05}
QAT_SETTINGS = {"optimizer": "sgd", "lr": 0.01}


def _build(data, seed, width_mult=1.0):
    torch.manual_seed(seed)
    options = {"width_mult": width_mult}
    return build_model(
        "chain", DEFAULT_CHAIN, in_shape=data.in_shape, num_classes=10, options=options
    )


def _acc(model, data):
    return evaluate(model, data.x_test, data.y_test)


def _latency(model, data):
    return measure_latency(model, data.in_shape, batch_size=64, repeats=40, threads=1)


def _torch_pruning(model, data):
    import torch_pruning as tp

    pruner_class = getattr(tp.pruner, "MetaPruner", None) or tp.pruner.BasePruner
    pruner = pruner_class(
        model,
        data.x_train[:2],
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[model.classifier],
    )
    pruner.step()


def pruning(base, data, seed, tool):
    model = copy.deepcopy(base)
    if tool == "paretune":
        prune(model, ratio=0.5, criterion="l1")
    else:
        _torch_pruning(model, data)
    train(model, data, TrainSettings(epochs=FINETUNE, seed=seed, **FINETUNE_SETTINGS))
    return {
        "loss": _acc(base, data) - _acc(model, data),
        "macs": count_macs(model, data.in_shape) / count_macs(base, data.in_shape),
        "speedup": _latency(base, data) / _latency(model, data),
    }


def quantized(base, data, seed, spec, *, act_bits=8, qat=False):
    model = copy.deepcopy(base)
    hooks = quantize.prepare(model, spec, act_bits=act_bits)
    quantize.calibrate(model, hooks, data.x_train[:256])
    if qat:
        train(model, data, TrainSettings(epochs=QAT, seed=seed, **QAT_SETTINGS))
    quantize.finalize(model, hooks)
    return {
        "loss": _acc(base, data) - _acc(model, data),
        "size": packed_bytes(model) / packed_bytes(base),
    }


def onnx_int8(base, data):
    """The int8 file paretune ships (its own calibrated ranges, `deploy.runtime_graph`) on ONNX
    Runtime against the fp32 file."""
    model = copy.deepcopy(base)
    hooks = quantize.prepare(model, quantize.QuantSpec(bits=8), act_bits=8)
    quantize.calibrate(model, hooks, data.x_train[:256])
    quantize.finalize(model, hooks)
    fp32 = deploy.runtime_graph(base, data.in_shape)
    int8 = deploy.runtime_graph(model, data.in_shape)
    fp32_ms = deploy.onnx_latency(fp32, data.in_shape, repeats=40)
    int8_ms = deploy.onnx_latency(int8, data.in_shape, repeats=40)
    return {
        "loss": _acc(base, data) - deploy.onnx_accuracy(int8, data.x_test, data.y_test),
        "speedup_vs_ort_fp32": fp32_ms / int8_ms,
        "speedup_vs_torch_fp32": _latency(base, data) / int8_ms,
    }


def distillation(data, seed, teacher):
    results = {}
    for name in ("without", "with"):
        student = _build(data, seed)
        distill = None
        if name == "with":
            torch.manual_seed(seed)
            distill = Distiller(
                student,
                teacher,
                layer="blocks",
                teacher_layer="blocks",
                sample=data.x_train[:2],
                weight=1.0,
                temperature=4.0,
                loss="mse",
            )
        train(student, data, TrainSettings(epochs=EPOCHS, seed=seed), extra_loss=distill)
        results[name] = _acc(student, data)
    return results


def run_seed(data, seed, teacher, tools):
    base = _build(data, seed)
    train(base, data, TrainSettings(epochs=EPOCHS, seed=seed))
    row = {"fp32_acc": _acc(base, data)}
    for tool in tools:
        row[f"prune_{tool}"] = pruning(base, data, seed, tool)
    row["int8_ptq"] = quantized(base, data, seed, quantize.QuantSpec(8, per_channel=True))
    row["int8_onnx"] = onnx_int8(base, data)
    for scheme in ("linear", "log"):
        spec = quantize.QuantSpec(4, scheme, per_channel=True)
        row[f"w4_{scheme}_ptq"] = quantized(base, data, seed, spec)
        row[f"w4_{scheme}_qat"] = quantized(base, data, seed, spec, qat=True)
    row["distill"] = distillation(data, seed, teacher)
    return row


def _mean(rows, key, field):
    return statistics.fmean(r[key][field] for r in rows)


def table(rows) -> str:
    lines = ["| step | mean accuracy loss (points) | per seed | other |", "|---|---|---|---|"]
    for key in [k for k in rows[0] if isinstance(rows[0][k], dict) and "loss" in rows[0][k]]:
        seeds = " ".join(f"{r[key]['loss']:+.2f}" for r in rows)
        extra = ", ".join(
            f"{f} {_mean(rows, key, f):.3f}x" for f in rows[0][key] if f not in ("loss",)
        )
        lines.append(f"| {key} | {_mean(rows, key, 'loss'):+.2f} | {seeds} | {extra} |")
    fp32 = statistics.fmean(r["fp32_acc"] for r in rows)
    without = [r["distill"]["without"] for r in rows]
    with_ = [r["distill"]["with"] for r in rows]
    lines += [
        "",
        f"fp32 test accuracy: mean {fp32:.2f}%",
        f"distillation, {EPOCHS} epochs: without {statistics.fmean(without):.2f} "
        f"(sd {statistics.stdev(without):.2f}), with {statistics.fmean(with_):.2f} "
        f"(sd {statistics.stdev(with_):.2f}); per seed without {without} with {with_}",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/out/trainers.json")
    args = parser.parse_args(argv)
    data = digits()
    tools = ["paretune"]
    try:
        import torch_pruning  # noqa: F401

        tools.append("torch_pruning")
    except ImportError:
        print("torch-pruning is not installed: its comparison is left out")
    teacher = _build(data, 1000, width_mult=2.0)
    train(teacher, data, TrainSettings(epochs=EPOCHS, seed=1000))
    print(f"teacher (2x wider) test accuracy {_acc(teacher, data):.2f}%", flush=True)
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        rows.append(run_seed(data, seed, teacher, tools))
        print(f"seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
