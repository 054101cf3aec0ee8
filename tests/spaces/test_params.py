import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spaces import Choice, Float, Int
from spaces.params import param_from_dict


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Float(1.0, 1.0), "low must be below high"),
        (lambda: Float(2.0, 1.0), "low must be below high"),
        (lambda: Float(0.0, 1.0, log=True), "log=True needs low > 0"),
        (lambda: Float(-1.0, 1.0, log=True), "log=True needs low > 0"),
        (lambda: Float(0.0, 1.0, step=0.0), "step must be in"),
        (lambda: Float(0.1, 1.0, log=True, step=0.1), "cannot be combined"),
        (lambda: Float(0.0, math.inf), "finite"),
        (lambda: Int(3, 3), "low must be below high"),
        (lambda: Int(0, 8, log=True), "log=True needs low > 0"),
        (lambda: Int(0.5, 3), "must be integers"),
        (lambda: Choice(()), "options is empty"),
        (lambda: Choice("abc"), "must be a list"),
        (lambda: Choice((1, 1.0)), "repeat"),
        (lambda: Choice(([1],)), "must be str, int, float, bool or None"),
    ],
)
def test_bad_parameters_name_the_problem(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_choice_keeps_bool_apart_from_int():
    param = Choice((True, 1, "1"))
    assert [param.index(v) for v in (True, 1, "1")] == [0, 1, 2]
    with pytest.raises(ValueError, match="not allowed"):
        param.check("c", 2)


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (Float(0.0, 1.0), 1.5, "outside"),
        (Float(0.0, 1.0), "a", "finite number"),
        (Float(0.0, 1.0), math.nan, "finite number"),
        (Float(0.0, 1.0), True, "finite number"),
        (Int(1, 4), 5, "outside"),
        (Int(1, 4), 2.5, "integer"),
        (Int(1, 4), True, "integer"),
        (Choice(("a", "b")), "c", "options are"),
    ],
)
def test_check_rejects_bad_values(param, value, message):
    with pytest.raises(ValueError, match=message):
        param.check("p", value)


def test_int_values_get_equal_shares_of_the_unit_interval():
    param = Int(1, 4)
    counts = np.bincount([param.from_unit(u) for u in np.linspace(0, 1, 4001)], minlength=5)
    assert counts[0] == 0 and np.all(np.abs(counts[1:] - 1000) <= 1)


def test_log_int_spreads_in_log_space():
    param = Int(1, 1000, log=True)
    draws = [param.sample(np.random.default_rng(i)) for i in range(400)]
    assert 0.3 < np.mean(np.array(draws) < 32) < 0.7  # sqrt(1000) ~ 32 is the log midpoint


def test_float_step_snaps_to_grid():
    param = Float(0.1, 0.75, step=0.05)
    assert param.from_unit(0.33) == pytest.approx(0.3)
    assert param.grid(100) == pytest.approx([0.1 + 0.05 * i for i in range(14)])


@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3), st.floats(0, 1), st.booleans())
def test_float_round_trip(a, b, u, log):
    low, high = sorted((a, b))
    if high - low < 1e-6 * high:
        return
    param = Float(low, high, log=log)
    value = param.from_unit(u)
    assert low <= value <= high
    assert param.to_unit(value) == pytest.approx(u, abs=1e-9)
    assert param.from_unit(param.to_unit(value)) == pytest.approx(value, rel=1e-9)


@given(st.integers(-50, 50), st.integers(1, 60), st.data(), st.booleans())
def test_int_round_trip(low, span, data, log):
    if log:
        low = abs(low) + 1
    param = Int(low, low + span, log=log)
    value = data.draw(st.integers(low, low + span))
    assert 0 <= param.to_unit(value) <= 1
    assert param.from_unit(param.to_unit(value)) == value


@given(
    st.lists(
        st.one_of(st.text(max_size=5), st.integers(), st.booleans()),
        min_size=1,
        max_size=8,
        unique_by=lambda v: (
            type(v).__name__ if isinstance(v, (bool, str)) else "num",
            v,
        ),
    )
)
def test_choice_round_trip(options):
    param = Choice(tuple(options))
    for option in options:
        assert param.from_unit(param.to_unit(option)) == option


@pytest.mark.parametrize(
    "param",
    [
        Float(0.0, 1.0, step=0.25),
        Float(1e-3, 1.0, log=True),
        Int(2, 9, log=True),
        Choice(("a", None, True, 2.5)),
        Choice((1, 2), when={"p": [True]}),
    ],
)
def test_to_dict_round_trip(param):
    assert param_from_dict(param.to_dict()) == param
