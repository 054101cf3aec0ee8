import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spaces
from spaces import Choice, Float, Int, Space


def distill_space() -> Space:
    return Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "distill": Choice((False, True)),
            "temperature": Float(1.0, 10.0, when={"distill": True}),
            "loss": Choice(("mse", "kl"), when={"distill": True}),
            "kl_scale": Float(0.1, 1.0, when={"loss": "kl"}),
        }
    )


def test_conditionals_switch_on_and_off():
    space = distill_space()
    off = space.decode(np.array([0.5, 0.1, 0.5, 0.9, 0.5]))
    assert off == {"lr": pytest.approx(10**-2.5), "distill": False}
    on = space.decode(np.array([0.5, 0.9, 0.5, 0.9, 0.5]))
    assert set(on) == {"lr", "distill", "temperature", "loss", "kl_scale"}
    assert on["loss"] == "kl"


def test_inactive_parameters_encode_to_a_fixed_value():
    space = distill_space()
    x = space.encode({"lr": 0.01, "distill": False})
    assert x[2:].tolist() == [0.5, 0.5, 0.5]


def test_nested_condition_follows_its_parent():
    space = distill_space()
    config = {"lr": 0.01, "distill": False, "kl_scale": 0.5}
    with pytest.raises(ValueError, match="kl_scale is inactive"):
        space.validate(config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"distill": False}, "missing parameter 'lr'"),
        ({"lr": 0.01, "distill": False, "lrate": 1}, "unknown parameter 'lrate'"),
        ({"lr": 0.01, "distill": True, "temperature": 2.0}, "missing parameter 'loss'"),
        ({"lr": 0.5, "distill": False}, "lr: 0.5 is outside"),
        ({"lr": 0.01, "distill": "yes"}, "distill: 'yes' is not allowed"),
        ({"lr": 0.01, "distill": False, "temperature": 2.0}, "temperature is inactive"),
        ([("lr", 0.01)], "must be a dict"),
    ],
)
def test_validate_names_the_bad_key(config, message):
    with pytest.raises(ValueError, match=message):
        distill_space().validate(config)


def test_typo_gets_a_suggestion():
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        distill_space().validate({"lr": 0.01, "distill": False, "temprature": 1.0})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"t": Float(1, 2, when={"distil": True}), "distil": Choice((True,))}, "comes later"),
        ({"t": Float(1, 2, when={"nope": True})}, "is not a parameter"),
        ({"d": Choice((False, True)), "t": Float(1, 2, when={"d": "on"})}, "not allowed"),
        ({"x": 3.0}, "expected Float, Int or Choice"),
        ({}, "non-empty"),
    ],
)
def test_bad_spaces_name_the_problem(params, message):
    with pytest.raises(ValueError, match=message):
        Space(params)


def test_space_is_immutable_and_ordered():
    space = distill_space()
    assert space.names == ("lr", "distill", "temperature", "loss", "kl_scale")
    with pytest.raises(TypeError):
        space.params["x"] = Float(0, 1)


def test_sample_is_seeded_and_valid():
    space = spaces.joint(spaces.chain(), spaces.training(), spaces.compression())
    first = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert first == [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert first[0] != space.sample(np.random.default_rng(8))
    rng = np.random.default_rng(0)
    for _ in range(200):
        space.validate(space.sample(rng))


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == pytest.approx(b[k], rel=1e-9) if isinstance(a[k], float) else a[k] == b[k]
        for k in a
    )


JOINT = spaces.joint(spaces.chain(), spaces.training(), spaces.compression())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=len(JOINT), max_size=len(JOINT)))
def test_decode_encode_round_trip(unit):
    config = JOINT.decode(np.array(unit))
    JOINT.validate(config)
    x = JOINT.encode(config)
    assert x.shape == (len(JOINT),) and np.all((x >= 0) & (x <= 1))
    assert _close(JOINT.decode(x), config)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_sample_encode_decode_round_trip(seed):
    config = JOINT.sample(np.random.default_rng(seed))
    assert _close(JOINT.decode(JOINT.encode(config)), config)


def test_json_round_trip_of_every_ready_space():
    for space in (spaces.nb201(), spaces.chain(stages=2), spaces.training(), JOINT):
        again = Space.from_dict(json.loads(json.dumps(space.to_dict())))
        assert again == space and again.names == space.names


def test_from_dict_rejects_newer_versions_and_unknown_types():
    body = spaces.training().to_dict()
    with pytest.raises(ValueError, match="newer"):
        Space.from_dict({**body, "version": 99})
    with pytest.raises(ValueError, match="unknown parameter type 'normal'"):
        Space.from_dict({"params": {"x": {"type": "normal"}}})


def test_combine_prefixes_names_and_conditions():
    joint = Space.combine({"a": distill_space(), "b": Space({"n": Int(1, 3)})})
    assert joint.names[:3] == ("a.lr", "a.distill", "a.temperature")
    assert joint["a.temperature"].when == {"a.distill": (True,)}
    config = joint.sample(np.random.default_rng(1))
    assert joint.subconfig(config, "b.") == {"n": config["b.n"]}
    assert Space.subconfig(config, "b.") == {"n": config["b.n"]}  # needs no space: a trial's


def test_joint_has_the_three_parts():
    prefixes = {name.split(".")[0] for name in JOINT.names}
    assert prefixes == {"arch", "train", "compress"}
    assert JOINT["compress.distill_temperature"].when == {"compress.distill": (True,)}


def test_importing_spaces_and_search_loads_neither_torch_nor_ray():
    code = (
        "import spaces, search, search.testing, sys;"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
