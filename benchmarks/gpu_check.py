"""GPU trials done right, checked on a machine with a GPU in a few minutes: the CPU-side
decisions, a 2-trial study at `gpus_per_trial: 0.5` (Ray's assignment, the memory cap, both
trials at once), a mixed-precision trial (and an fp16 one with its scaler), a QAT trial (the
fake-quant level count under CUDA autocast) and one supernet epoch on the GPU. Prints each check
with pass/fail and its time; exits 1 on a failure. Without CUDA it says so, runs the decisions
and exits 0; `--cpu` runs every check on the CPU instead (Ray given a declared GPU).

    python -m benchmarks.gpu_check [--cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = []


def check(name: str, function, *args) -> None:
    start = time.perf_counter()
    try:
        detail = function(*args) or ""
        ok = True
    except Exception as error:  # every check is reported, the script goes on
        detail, ok = f"{type(error).__name__}: {error}", False
    RESULTS.append(ok)
    seconds = time.perf_counter() - start
    print(f"{'pass' if ok else 'FAIL'}  {name:<44} {seconds:6.1f} s  {detail}", flush=True)


def decisions() -> str:
    from trainers.device import decide_device, memory_fraction, precision

    table = {(t, c): precision(t, c) for t, c in [("cpu", None), ("cuda", (7, 0))]}
    table |= {(t, c): precision(t, c) for t, c in [("cuda", (8, 0)), ("cuda", (9, 0))]}
    assert list(table.values()) == ["fp32", "fp16", "bf16", "bf16"], table

    def never():
        raise AssertionError("asked about CUDA")

    assert decide_device("auto", gpu_share=0, cuda_available=never) == "cpu"
    yes = {"cuda_available": lambda: True}
    assert decide_device("auto", gpu_share=0.5, gpu_ids=[3], visible="1,3", **yes) == "cuda:1"
    assert [memory_fraction(s) for s in (0, 0.5, 1)] == [None, 0.5, None]
    return "precision by capability, device by assignment, memory fraction"


def placed_trainable(config: dict, settings) -> None:
    """`cluster.raytune.trainable.trainable` with the trial's GPU assignment in its settings
    (the lines the trainable takes), the placement written down for the check."""
    import dataclasses
    import os

    import ray
    from ray import tune

    from cluster.raytune.trainable import trainable
    from trainers.device import decide_device

    share = tune.get_context().get_trial_resources().required_resources.get("GPU", 0.0)
    ids = tuple(str(i) for i in ray.get_gpu_ids())
    settings = dataclasses.replace(settings, gpu_share=share, gpu_ids=ids)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = {"share": share, "ids": list(ids), "visible": visible, "start": time.time()}
    yes = {"cuda_available": lambda: True}  # the placement decided as on a GPU node
    seen["device"] = decide_device("auto", gpu_share=share, gpu_ids=ids, visible=visible, **yes)
    import torch

    if not torch.cuda.is_available():  # --cpu: the placement checked, the trial on the CPU
        settings = dataclasses.replace(settings, gpu_share=0.0, gpu_ids=())
    trainable(config, settings)
    seen["end"] = time.time()
    folder = Path(settings.teacher.cache_dir).parent / "placements"
    folder.mkdir(exist_ok=True)
    (folder / f"{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(seen))


def study(folder: Path) -> str:
    from cluster.raytune import runner
    from cluster.study.config import Study

    config = {"name": "gpu-check", "dir": str(folder / "study"), "arch": "mlp"}
    config |= {"searcher": "random", "scheduler": "fifo", "trials": 2, "parallel": 2}
    config |= {"gpus_per_trial": 0.5, "trial": {"epochs": 2, "latency_repeats": 3}}
    table = runner.run(Study.from_dict(config), num_cpus=4, function=placed_trainable)
    statuses = table["status"].to_pylist()
    assert statuses == ["completed"] * 2, statuses
    seen = [json.loads(p.read_text()) for p in (folder / "study" / "placements").glob("*")]
    assert len(seen) == 2 and {s["share"] for s in seen} == {0.5}, seen
    assert all(s["device"] == "cuda:0" and s["ids"] for s in seen), seen
    overlap = min(s["end"] for s in seen) > max(s["start"] for s in seen)
    assert overlap, "the two half-GPU trials did not run at once"
    return f"2 trials on GPU ids {[s['ids'] for s in seen]}, run at once"


def memory_cap(device: str) -> str:
    """A half-GPU trial that asks for 60% of the GPU's memory runs out of it."""
    import torch

    from trainers.device import on_trial_device
    from trainers.settings import TrialSettings

    def hungry(config, report=None, *, settings):
        total = torch.cuda.get_device_properties(settings.device).total_memory
        try:
            torch.empty(int(total * 0.6), dtype=torch.uint8, device=settings.device)
        except torch.OutOfMemoryError:
            return "capped"
        return "not capped"

    if device != "cuda":
        return "skipped on the CPU"
    got = on_trial_device(hungry)({}, settings=TrialSettings(gpu_share=0.5, gpu_ids=("0",)))
    assert got == "capped", got
    return "60% of the GPU refused at gpus_per_trial 0.5"


def _trial(config: dict, device: str, folder: Path, **flat):
    from trainers import TrialSettings, run_trial

    flat = {"epochs": 2, "latency_repeats": 3, "device": device, **flat}
    settings = TrialSettings.from_flat({"cache_dir": str(folder), **flat})
    result = run_trial(config, settings=settings)
    assert result["status"] == "completed", result.get("error")
    return result


MLP = {"arch.layers": 2, "arch.width": 64}


def mixed_precision(device: str, folder: Path, asked: str = "auto") -> str:
    import torch

    from trainers.device import device_precision

    mode = device_precision(torch.device(device), asked)
    result = _trial(MLP, device, folder, precision=asked)
    return f"{mode}: val_acc {result['val_acc']:.1f}"


def qat(device: str, folder: Path) -> str:
    import torch

    from trainers.quant_math import QuantSpec, fake_quantize

    layer = torch.nn.Linear(1, 1).to(device)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    ramp = torch.linspace(-1.0, 1.0, 20_000, device=device)[:, None]
    with torch.autocast(device, dtype=torch.bfloat16):
        levels = len(fake_quantize(layer(ramp), QuantSpec(8), lo=-1.0, hi=1.0).unique())
        fine = len(fake_quantize(ramp, QuantSpec(12), lo=-1.0, hi=1.0).unique())
    assert (levels, fine) == (256, 4096), (levels, fine)
    config = MLP | {"compress.quantize": True, "compress.weight_bits": 8}
    config |= {"compress.act_bits": 8, "compress.quant_mode": "qat"}
    result = _trial(config, device, folder, qat_epochs=1)
    return f"levels 256/256 (8 bits), 4096/4096 (12 bits); val_acc {result['val_acc']:.1f}"


def supernet(device: str, folder: Path) -> str:
    import torch

    import search
    import spaces
    from trainers.supernet import loop

    seen, epoch = set(), loop.Loop.epoch

    def spy(self, number):
        seen.add(next(self.net.parameters()).device.type)
        return epoch(self, number)

    arch = spaces.chain(stages=2, depth=(1, 2), widths=(8, 16), kernels=(3, 5), expansions=(1, 3))
    searcher = search.create("darts", arch, metric="val_acc", seed=0, epochs=1, samples=512)
    loop.Loop.epoch = spy
    try:
        result = _trial(searcher.ask().config, device, folder)
    finally:
        loop.Loop.epoch = epoch
    assert seen == {device}, seen
    (path,) = folder.glob("supernet-*.pt")  # its checkpoint loads on any node
    saved = torch.load(path, weights_only=False)
    assert {t.device.type for t in saved["model"].values()} == {"cpu"}
    return f"trained on {seen.pop()}, checkpoint on the CPU; val_acc {result['val_acc']:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every check on the CPU")
    args = parser.parse_args(argv)
    import torch

    check("decisions (CPU side)", decisions)
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        print("no CUDA here: the GPU checks need a GPU (--cpu runs them on the CPU)")
        return 0
    device = "cpu" if args.cpu else "cuda"
    if cuda and not args.cpu:
        name = torch.cuda.get_device_name()
        print(f"GPU: {name}, capability {torch.cuda.get_device_capability()}", flush=True)
    import ray

    gpus = None if cuda else 1  # --cpu: a declared GPU, so Ray assigns one
    ray.init(address="local", num_cpus=4, num_gpus=gpus, include_dashboard=False)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        check("study: 2 trials at gpus_per_trial 0.5", study, folder)
        check("memory capped at the GPU share", memory_cap, device)
        check("mixed-precision trial", mixed_precision, device, folder)
        if device == "cuda":
            check("fp16 trial (a gradient scaler)", mixed_precision, device, folder, "fp16")
        check("QAT trial, fake-quant levels", qat, device, folder)
        check("supernet epoch on the trial's device", supernet, device, folder)
    ray.shutdown()
    print(f"{sum(RESULTS)} of {len(RESULTS)} checks passed")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
