"""The int8 file paretune ships against the fp32 file, on ONNX Runtime (issue 34).

    python -W ignore -m benchmarks.int8_speed [--repeats 30] [--rounds 3]

The default chain (`trainers.settings.DEFAULT_CHAIN`, untrained: latency does not depend on the
weights) on 8x8 digits-shaped inputs, MNIST-1D-shaped ones and 32x32 colour images; int8 is its
post-training quantization (8-bit weights and activations, calibrated on random inputs), both
written as `trainers.deploy.runtime_graph` writes a trial's file and timed by
`deploy.onnx_latency` (batch 64, one thread). Each round times both files once; the table gives
the median of the rounds, and the int8 / fp32 speed-up of the medians.
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from trainers import deploy, quantize
from trainers.models import build_model, model_name
from trainers.settings import DEFAULT_CHAIN

SHAPES = ((1, 8, 8), (1, 40), (3, 32, 32))


def files(in_shape) -> tuple[bytes, bytes]:
    """The fp32 and int8 files of the default chain for inputs of `in_shape`."""
    torch.manual_seed(0)
    name = model_name(DEFAULT_CHAIN)
    model = build_model(name, DEFAULT_CHAIN, in_shape=in_shape, num_classes=10).eval()
    quantized = copy.deepcopy(model)
    hooks = quantize.prepare(quantized, quantize.QuantSpec(bits=8), act_bits=8)
    quantize.calibrate(quantized, hooks, torch.randn(256, *in_shape))
    quantize.finalize(quantized, hooks)
    return deploy.runtime_graph(model, in_shape), deploy.runtime_graph(quantized, in_shape)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| input | fp32 ms | int8 ms | int8 speed-up |\n|---|---|---|---|")
    for shape in SHAPES:
        fp32, int8 = files(shape)
        times = {"fp32": [], "int8": []}
        for _ in range(args.rounds):
            for label, graph in (("fp32", fp32), ("int8", int8)):
                times[label].append(deploy.onnx_latency(graph, shape, repeats=args.repeats))
        fp32_ms, int8_ms = (statistics.median(times[k]) for k in ("fp32", "int8"))
        print(f"| {shape} | {fp32_ms:.3f} | {int8_ms:.3f} | {fp32_ms / int8_ms:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
