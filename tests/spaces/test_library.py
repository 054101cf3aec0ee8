import numpy as np
import pytest

import search
import spaces
from spaces import NB201_OPS


def test_nb201_string_follows_the_standard_edge_order():
    config = dict(zip(spaces.nb201_edge_names(), NB201_OPS + ("none",)))
    assert spaces.nb201_arch_str(config) == (
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    )


def test_nb201_string_round_trips_and_accepts_a_prefix():
    rng = np.random.default_rng(0)
    for _ in range(50):
        config = spaces.nb201().sample(rng)
        text = spaces.nb201_arch_str(config)
        assert spaces.nb201_config(text) == config
        prefixed = {f"arch.{k}": v for k, v in config.items()}
        assert spaces.nb201_arch_str(prefixed, prefix="arch.") == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("|none~0|+|none~0|", "not a NAS-Bench-201"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "'conv'"),
    ],
)
def test_nb201_config_rejects_bad_strings(text, message):
    with pytest.raises(ValueError, match=message):
        spaces.nb201_config(text)


def test_nb201_grid_has_all_15625_cells():
    grid = search.create("grid", spaces.nb201(), metric="acc")
    cells = set()
    while True:
        try:
            cells.add(spaces.nb201_arch_str(grid.ask().config))
        except search.Exhausted:
            break
    assert len(cells) == 5**6


def test_chain_has_four_knobs_per_stage():
    space = spaces.chain(stages=4)
    assert len(space) == 16
    assert space["s3_kernel"].options == (3, 5, 7)
    with pytest.raises(ValueError, match="odd"):
        spaces.chain(kernels=(3, 4))
    with pytest.raises(ValueError, match="stages"):
        spaces.chain(stages=0)


def test_compression_switches_hide_their_knobs():
    space = spaces.compression()
    switches = ("prune", "neuron_prune", "weight_prune", "quantize", "distill")
    space.validate(dict.fromkeys(switches, False))
    on = space.sample(np.random.default_rng(3))
    for switch, knob in (
        ("prune", "prune_ratio"),
        ("neuron_prune", "neuron_ratio"),
        ("weight_prune", "weight_sparsity"),
        ("quantize", "weight_bits"),
        ("distill", "distill_temperature"),
    ):
        assert (knob in on) == on[switch]


def test_compression_has_the_new_knobs_behind_their_switches():
    space = spaces.compression()
    assert space["weight_bits"].options == (1, 2, 3, 4, 6, 8)
    assert space["weight_prune_scope"].options == ("lamp", "layer", "global")
    for switch, knobs in (
        ("neuron_prune", ("neuron_ratio", "neuron_criterion")),
        ("weight_prune", ("weight_sparsity", "weight_prune_scope")),
    ):
        for knob in knobs:
            assert space[knob].when == {switch: (True,)}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        config = space.sample(rng)
        space.validate(config)
        assert ("weight_sparsity" in config) == config["weight_prune"]
        assert ("neuron_ratio" in config) == config["neuron_prune"]
        if config["weight_prune"]:
            assert 0.5 <= config["weight_sparsity"] <= 0.95
        if config.get("weight_bits") is not None:
            seen.add(config["weight_bits"])
            multibit = config["weight_bits"] > 1  # binary weights take no scheme or granularity
            assert ("quant_scheme" in config) == ("quant_granularity" in config) == multibit
    assert 1 in seen


def test_binary_weights_take_no_scheme():
    space = spaces.compression()
    config = {
        "prune": False,
        "neuron_prune": False,
        "weight_prune": False,
        "quantize": True,
        "weight_bits": 1,
        "act_bits": 32,
        "quant_mode": "qat",
        "distill": False,
    }
    space.validate(config)
    with pytest.raises(ValueError, match="quant_scheme is inactive"):
        space.validate(config | {"quant_scheme": "linear"})
    with pytest.raises(ValueError, match="weight_bits"):
        space.validate(config | {"weight_bits": 5})
