"""A config's keys read: `split_config` into architecture, training and compression, and the
searched `compress.` keys parsed and checked before anything trains."""

from __future__ import annotations

from collections.abc import Mapping

from spaces import Space
from trainers import prune as pruning
from trainers import quantize, sparsity
from trainers.settings import SWITCH_NEEDS, CompressionSettings

QUANT_MODES = ("ptq", "qat")
PARTS = ("arch", "train", "compress")  # a trial config's prefixes, `split_config`'s order


def split_config(config: Mapping) -> tuple[dict, dict, dict]:
    """`(arch, train, compress)` from `arch.`/`train.`/`compress.` keys (`Space.subconfig`);
    a key without a prefix is architecture."""
    for key in config:
        head, dot, _ = key.partition(".")
        if dot and head not in PARTS:
            raise ValueError(f"config key {key!r}: prefixes allowed are {sorted(PARTS)}")
    plain = {key: value for key, value in config.items() if "." not in key}
    arch, train, compress = (Space.subconfig(config, f"{part}.") for part in PARTS)
    return plain | arch, train, compress


def quant_spec(compress: Mapping) -> quantize.QuantSpec:
    """`weight_bits` 1 is binary (its scheme `binary`, per channel unless asked otherwise)."""
    bits = compress.get("weight_bits", 8)
    return quantize.QuantSpec(
        bits,
        compress.get("quant_scheme", "binary" if bits == 1 else "linear"),
        compress.get("quant_granularity", "per_channel") == "per_channel",
    )


def end_bits(compress: Mapping) -> int:
    """The bits of the first and last layers: `first_last_bits`, by default 8 for binary weights
    and `weight_bits` otherwise."""
    bits = compress.get("weight_bits", 8)
    ends = compress.get("first_last_bits", 8 if bits == 1 else bits)
    if isinstance(ends, bool) or not isinstance(ends, int) or not 1 <= ends <= 16:
        raise ValueError(f"first_last_bits {ends!r}: allowed 1 to 16")
    return ends


def quant_mode(compress: Mapping) -> str:
    mode = compress.get("quant_mode", "ptq")
    if mode not in QUANT_MODES:
        raise ValueError(f"quant_mode {mode!r}: allowed {list(QUANT_MODES)}")
    return mode


def act_bits(compress: Mapping) -> int:
    return int(compress.get("act_bits", 32))


def prune_ratio(compress: Mapping, compression: CompressionSettings):
    return compression.stage_ratios or float(compress["prune_ratio"])


def _needed(compress: Mapping, switch: str):
    key = SWITCH_NEEDS[switch]
    if key not in compress:
        raise ValueError(f"compress.{switch} is on but compress.{key} is missing")
    return compress[key]


def check_compress(compress: Mapping, compression: CompressionSettings) -> None:
    """Every switched-on step's knobs, checked before training: a value not allowed raises a
    `ValueError` naming its key and the allowed values."""
    if compress.get("prune"):
        if compression.stage_ratios is None:
            pruning.check_ratio("prune_ratio", _needed(compress, "prune"))
        criterion = compress.get("prune_criterion", "l1")
        if criterion not in pruning.CRITERIA:
            raise ValueError(f"prune_criterion {criterion!r}: allowed {list(pruning.CRITERIA)}")
    if compress.get("neuron_prune"):
        ratio = _needed(compress, "neuron_prune")
        pruning.check_neurons(ratio=ratio, criterion=compress.get("neuron_criterion", "activation"))
    if compress.get("weight_prune"):
        share = _needed(compress, "weight_prune")
        sparsity.check(sparsity=share, scope=compress.get("weight_prune_scope", "lamp"))
    if compress.get("quantize"):
        quant_spec(compress)
        end_bits(compress)
        quant_mode(compress)
