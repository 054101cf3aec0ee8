"""Weight pruning and binary weights with the default chain model, over seeds.

    python -W ignore -m benchmarks.compression [--dataset digits|mnist1d] [--seeds 3] [--out PATH]

Per seed: train the fp32 model (15 epochs), then from that same model
  - prune 90% of the weights (LAMP; uniform per layer and global magnitude for comparison),
    fine-tune 8 epochs with the masks held (SGD, lr 0.05), then int8 weights (per tensor) and
    8-bit activations after calibration; each model is saved with `trainers.store` and loaded
    back, and the file is sized;
  - binary weights (per-channel scale, first and last layers 8-bit), quantization-aware
    training for 15 epochs (AdamW, lr 3e-3), activations in float.
Prints Markdown tables: accuracy on the test set (digits: 359 images; MNIST-1D: 1,000 signals,
`Conv1d` chain); sizes as `trainers.store.stored_bytes`
and as the file `trainers.store.save` writes; latency at batch 64 on one thread (torch).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainers import quantize, sparsity, store
from trainers.cost import measure_latency
from trainers.data import load_dataset
from trainers.models import build_model
from trainers.train import TrainSettings, evaluate, train
from trainers.trial import DEFAULT_CHAIN

EPOCHS, FINETUNE, BINARY_QAT = 15, 8, 15
FINETUNE_SETTINGS = {"optimizer": "sgd", "lr": 0.05}
BINARY_SETTINGS = {"optimizer": "adamw", "lr": 3e-3}
SPARSITY = 0.9


def _description(data) -> dict:
    return {"model": "chain", "arch": DEFAULT_CHAIN, "in_shape": list(data.in_shape)} | {
        "num_classes": data.num_classes
    }


def _acc(model, data):
    return evaluate(model, data.x_test, data.y_test)


def _latency(model, data):
    return measure_latency(model, data.in_shape, batch_size=64, repeats=40, threads=1)


def _file(model, records, data) -> int:
    """Bytes of the saved file; the loaded model must give the same test accuracy."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        size = store.save(path, model, description={**_description(data), "records": records})
        loaded, _ = store.load(path)
    if _acc(loaded, data) != _acc(model, data):
        raise AssertionError("the saved model does not load identically")
    return size


def sparse(base, data, seed, scope):
    model = copy.deepcopy(base)
    records = [sparsity.prune_weights(model, sparsity=SPARSITY, scope=scope)]
    train(model, data, TrainSettings(epochs=FINETUNE, seed=seed, **FINETUNE_SETTINGS))
    sparsity.release(model)
    row = {"fp32_acc": _acc(model, data), "fp32_latency": _latency(model, data)}
    hooks = quantize.prepare(model, quantize.QuantSpec(8), act_bits=8)
    quantize.calibrate(model, hooks, data.x_train[:256])
    records.append(quantize.finalize(model, hooks))
    row |= {"acc": _acc(model, data), "stored": store.stored_bytes(model)}
    return row | {"file": _file(model, records, data), "sparsity": sparsity.sparsity_of(model)}


def binary(base, data, seed):
    model = copy.deepcopy(base)
    ends = {n: quantize.QuantSpec(8, per_channel=True) for n in quantize.end_layers(model)}
    spec = quantize.QuantSpec(1, "binary", per_channel=True)
    hooks = quantize.prepare(model, spec, overrides=ends)
    train(model, data, TrainSettings(epochs=BINARY_QAT, seed=seed, **BINARY_SETTINGS))
    record = quantize.finalize(model, hooks)
    row = {"acc": _acc(model, data), "stored": store.stored_bytes(model)}
    return row | {"file": _file(model, [record], data)}


def run_seed(data, seed):
    torch.manual_seed(seed)
    base = build_model("chain", DEFAULT_CHAIN, in_shape=data.in_shape, num_classes=data.num_classes)
    train(base, data, TrainSettings(epochs=EPOCHS, seed=seed))
    row = {"dense": {"acc": _acc(base, data), "stored": store.stored_bytes(base)}}
    row["dense"] |= {"file": _file(base, [], data), "fp32_latency": _latency(base, data)}
    for scope in sparsity.SCOPES:
        row[f"sparse_{scope}"] = sparse(base, data, seed, scope)
    row["binary"] = binary(base, data, seed)
    return row


def _median(rows, key, field):
    return statistics.median(r[key][field] for r in rows)


def table(rows) -> str:
    dense = rows[0]["dense"]
    lines = [
        "| model | median test accuracy | median loss (points) | per seed | stored bytes | file "
        "bytes | file vs dense |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in [k for k in rows[0] if k != "dense"] + ["dense"]:
        losses = [r["dense"]["acc"] - r[key]["acc"] for r in rows]
        lines.append(
            f"| {key} | {_median(rows, key, 'acc'):.2f} | {statistics.median(losses):+.2f} | "
            + " ".join(f"{loss:+.2f}" for loss in losses)
            + f" | {rows[0][key]['stored']:,} | {rows[0][key]['file']:,} | "
            f"{dense['file'] / rows[0][key]['file']:.2f}x smaller |"
        )
    lines += ["", "Weight pruning before int8 (float weights, masks baked in):", ""]
    lines += ["| scope | median fp32 test accuracy | latency vs dense (torch, batch 64) |"]
    lines += ["|---|---|---|"]
    for scope in sparsity.SCOPES:
        key = f"sparse_{scope}"
        speed = [r["dense"]["fp32_latency"] / r[key]["fp32_latency"] for r in rows]
        lines.append(
            f"| {scope} | {_median(rows, key, 'fp32_acc'):.2f} | "
            f"{statistics.median(speed):.2f}x faster |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist1d"), default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="default benchmarks/out/compression[-mnist1d].json")
    args = parser.parse_args(argv)
    args.out = (
        args.out
        or "benchmarks/out/compression"
        + ("" if args.dataset == "digits" else f"-{args.dataset}")
        + ".json"
    )
    torch.set_num_threads(1)
    data = load_dataset(args.dataset)
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        rows.append(run_seed(data, seed))
        print(f"seed {seed} done in {time.perf_counter() - start:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
