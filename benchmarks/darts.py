"""Gradient-based NAS (`searcher: darts`) against random architectures and `bo`, same training.

    python -m benchmarks.darts [--seeds 5] [--first-seed 0] [--quick] [--out F.json]
    python -m benchmarks.darts --report F.json [G.json ...]   # one table from several runs

Two tasks: the NAS-Bench-201 cell on digits (2-D) and the chain on MNIST-1D (1-D). Per seed:
20 random architectures of the space are trained as ordinary trials (`trainers.run_trial`,
`--epochs` epochs); the latency bound is their median deployed latency (ONNX Runtime, 1
thread). Then each variant (`darts`, `gdas`) trains its supernet (`--supernet-epochs`) with
the cost term off and on (weight `--cost-weight`, penalty above the bound), and the architecture
it derives is trained as those trials are. `bo` searches the same space, trial after trial,
for as long as the gdas search (supernet plus derived trial) took. Reported per task and
variant: the derived architecture's test accuracy against the random median and `bo`'s best
(by validation accuracy), whether its latency meets the bound (cost on / off), its skip and
none edges (NB201), the supernet's wall time against one ordinary trial, and the memory one
training step holds (parameters plus the activations kept for backward, batch 64) for the
supernet against one sampled network. `--quick`: one seed, 3 random architectures, 1 epoch,
256 training samples for the supernet.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import search
import spaces
from trainers.data import load_dataset
from trainers.models import build_model
from trainers.supernet import build_supernet
from trainers.trial import TrialSettings, run_trial

TASKS = {"nb201-digits": ("digits", spaces.nb201), "chain-mnist1d": ("mnist1d", spaces.chain)}
VARIANTS = ("darts", "gdas")


def _trial(config: dict, settings: TrialSettings) -> dict:
    started = time.perf_counter()
    result = run_trial(dict(config), settings=settings)
    return {
        "config": config,
        "val_acc": result["val_acc"],
        "test_acc": result["test_acc"],
        "latency_ms": result["latency_ms"],
        "seconds": time.perf_counter() - started,
    }


def _supernet(space, settings, args, *, seed, variant, cost_weight, bound) -> dict:
    searcher = search.create(
        "darts",
        space,
        metric="val_acc",
        seed=seed,
        constraints={"latency_ms": bound},
        variant=variant,
        epochs=args.supernet_epochs,
        cost_weight=cost_weight,
        samples=args.samples,
    )
    config = dict(searcher.ask().config)
    started = time.perf_counter()
    result = run_trial(config, settings=settings)
    seconds = time.perf_counter() - started
    derived = {k: v for k, v in result["trained_with"].items() if k in space.params}
    if not derived:
        raise RuntimeError(f"the {variant} supernet trial derived no architecture: {result}")
    trained = _trial(derived, settings)
    ops = list(derived.values())
    return {
        "variant": variant,
        "cost_weight": cost_weight,
        "supernet_seconds": seconds,
        "derived": trained,
        "meets_bound": trained["latency_ms"] <= bound,
        "skip": ops.count("skip_connect"),
        "none": ops.count("none"),
        "expected_cost": result["records"][0]["expected_cost"],
        "probabilities": result["records"][0]["probabilities"],  # to derive again offline
        "cost_table": result["records"][0]["cost_table"],
        "derive_checks": result["records"][0]["derive_checks"],  # table vs measured
    }


def _bo(space, settings, *, seed, seconds) -> dict:
    searcher = search.create("bo", space, metric="val_acc", seed=seed)
    started, best = time.perf_counter(), None
    while time.perf_counter() - started < seconds:
        trial = searcher.ask()
        row = _trial(trial.config, settings)
        searcher.tell(trial.id, {"val_acc": row["val_acc"]})
        if best is None or row["val_acc"] > best["val_acc"]:
            best = row
    return {**best, "trials": len(searcher.observations)}


def step_memory(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes one training step holds: parameters plus the activations saved for backward."""
    saved = {}

    def keep(tensor):
        saved[(tensor.data_ptr(), tensor.shape, tensor.stride())] = tensor.nbytes
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long))
    loss.backward()
    return sum(saved.values()) + sum(p.nbytes for p in model.parameters())


def _memory(kind: str, space, data, *, seed: int) -> dict:
    x = data.x_train[:64]
    shape = {"in_shape": data.in_shape, "num_classes": data.num_classes}
    sampled = build_model(kind, space.sample(np.random.default_rng(seed)), **shape)
    sizes = {"sampled": step_memory(sampled, x)}
    for variant in VARIANTS:
        net = build_supernet(kind, space, **shape, mode=variant)
        sizes[variant] = step_memory(net, x)
    return sizes


def run_task(task: str, seed: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"darts-{task}-{seed}-") as folder:  # no checkpoint
        return _task(task, seed, args, folder)  # of an earlier run shortens a supernet


def _task(task: str, seed: int, args, folder: str) -> dict:
    dataset, make_space = TASKS[task]
    space = make_space()
    flat = {"dataset": dataset, "epochs": args.epochs, "seed": seed, "cache_dir": folder}
    settings = TrialSettings.from_flat({**flat, "latency_repeats": 10})
    rng = np.random.default_rng(seed)
    randoms = [_trial(space.sample(rng), settings) for _ in range(args.randoms)]
    bound = statistics.median(r["latency_ms"] for r in randoms)
    runs = [
        _supernet(space, settings, args, seed=seed, variant=v, cost_weight=w, bound=bound)
        for v in VARIANTS
        for w in (0.0, args.cost_weight)
    ]
    gdas = next(r for r in runs if r["variant"] == "gdas" and r["cost_weight"] == 0)
    budget = gdas["supernet_seconds"] + gdas["derived"]["seconds"]
    kind = "nb201" if task.startswith("nb201") else "chain"
    return {
        "task": task,
        "seed": seed,
        "bound_ms": bound,
        "random_median_test_acc": statistics.median(r["test_acc"] for r in randoms),
        "random_median_seconds": statistics.median(r["seconds"] for r in randoms),
        "randoms": randoms,
        "supernets": runs,
        "bo": _bo(space, settings, seed=seed, seconds=budget),
        "memory_bytes": _memory(kind, space, load_dataset(dataset), seed=seed),
    }


def _table(rows: list[dict]) -> str:
    lines = [
        "| task | variant | cost | derived test % | random median % | bo best % | meets bound "
        "| skip / none per seed | supernet s / trial s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        for variant in VARIANTS:
            for on in (False, True):
                runs = [
                    s
                    for r in mine
                    for s in r["supernets"]
                    if s["variant"] == variant and (s["cost_weight"] > 0) == on
                ]
                acc = statistics.median(s["derived"]["test_acc"] for s in runs)
                ratio = statistics.median(
                    s["supernet_seconds"] / r["random_median_seconds"]
                    for r in mine
                    for s in r["supernets"]
                    if s in runs
                )
                collapse = " ".join(f"{s['skip']}/{s['none']}" for s in runs)
                lines.append(
                    f"| {task} | {variant} | {'on' if on else 'off'} | {acc:.1f} "
                    f"| {statistics.median(r['random_median_test_acc'] for r in mine):.1f} "
                    f"| {statistics.median(r['bo']['test_acc'] for r in mine):.1f} "
                    f"| {sum(s['meets_bound'] for s in runs)}/{len(runs)} "
                    f"| {collapse} "
                    f"| {ratio:.1f} |"
                )
    memory = [f"{r['task']} seed {r['seed']}: {r['memory_bytes']}" for r in rows]
    return "\n".join(lines + ["", "one training step's bytes (batch 64):", *memory])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--supernet-epochs", type=int, default=15)
    parser.add_argument("--randoms", type=int, default=20)
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--cost-weight", type=float, default=5.0)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--first-seed", type=int, default=0, help="seeds start here (0)")
    parser.add_argument("--out", default="benchmarks/out/darts.json")
    parser.add_argument(
        "--report", nargs="+", metavar="JSON", help="print the table of earlier runs' --out files"
    )
    args = parser.parse_args(argv)
    if args.report:
        print(_table([row for f in args.report for row in json.loads(Path(f).read_text())["rows"]]))
        return
    if args.quick:
        args.seeds, args.epochs, args.supernet_epochs = 1, 1, 1
        args.randoms, args.samples = 3, 256
    torch.set_num_threads(1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for task in args.tasks.split(","):
            rows.append(run_task(task, seed, args))  # saved as each finishes: runs take hours
            Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(_table(rows))


if __name__ == "__main__":
    main()
