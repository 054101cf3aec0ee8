"""Parameters: a domain, sampling, and a map to and from the unit interval.

Every parameter maps its values onto `[0, 1]` (`to_unit`) and back (`from_unit`), so a
`Space` can hand searchers a unit cube. A parameter may carry a condition (`when`): it is
active only while other parameters take one of the listed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Scalar = str | int | float | bool | None


def _check_when(when: dict | None) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict):
        raise ValueError(
            f"when must be a dict {{parameter: value or list of values}}, got {when!r}"
        )
    out = {}
    for parent, values in when.items():
        if not isinstance(parent, str):
            raise ValueError(f"when keys must be parameter names (str), got {parent!r}")
        values = tuple(values) if isinstance(values, list | tuple | set | frozenset) else (values,)
        if not values:
            raise ValueError(f"when[{parent!r}] lists no values: give at least one")
        out[parent] = values
    return out


@dataclass(frozen=True)
class Param:
    """Base of all parameters; `when` maps parent names to the values that switch it on."""

    when: dict[str, tuple] = field(default_factory=dict, kw_only=True)

    kind = "param"

    def sample(self, rng: np.random.Generator) -> Any:
        return self.from_unit(float(rng.random()))

    def to_unit(self, value) -> float:
        raise NotImplementedError

    def from_unit(self, u: float) -> Any:
        raise NotImplementedError

    def check(self, name: str, value) -> None:
        raise NotImplementedError

    def grid(self, points: int) -> list:
        """Values a grid search visits; `points` applies to continuous domains only."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        body = {"type": self.kind, **self._fields()}
        if self.when:
            body["when"] = {k: list(v) for k, v in self.when.items()}
        return body

    def _fields(self) -> dict:
        raise NotImplementedError


def _check_bounds(kind: str, low, high, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{kind}: low and high must be finite, got low={low}, high={high}")
    if low >= high:
        raise ValueError(f"{kind}: low must be below high, got low={low}, high={high}")
    if log and low <= 0:
        raise ValueError(f"{kind}: log=True needs low > 0, got low={low}")


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


@dataclass(frozen=True)
class Float(Param):
    """A real in `[low, high]`, uniform or log-uniform, optionally on a grid of `step`."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    kind = "float"

    def __post_init__(self):
        _check_bounds("Float", self.low, self.high, self.log)
        if self.step is not None:
            if self.log:
                raise ValueError("Float: step and log=True cannot be combined; choose one")
            if not self.step > 0 or self.step > self.high - self.low:
                raise ValueError(
                    f"Float: step must be in (0, high - low = {self.high - self.low}], "
                    f"got {self.step}"
                )
        object.__setattr__(self, "when", _check_when(self.when))
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    def _snap(self, value: float) -> float:
        value = min(max(value, self.low), self.high)
        if self.step is not None:
            n = round((value - self.low) / self.step)
            value = min(self.low + n * self.step, self.high)
        return float(value)

    def to_unit(self, value) -> float:
        if self.log:
            return math.log(value / self.low) / math.log(self.high / self.low)
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            return self._snap(self.low * (self.high / self.low) ** u)
        return self._snap(self.low + u * (self.high - self.low))

    def check(self, name: str, value) -> None:
        if not _is_number(value) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{name}: {value} is outside [{self.low}, {self.high}]")

    def grid(self, points: int) -> list:
        if self.step is not None:
            count = int(round((self.high - self.low) / self.step)) + 1
            if count <= points:
                return [self._snap(self.low + i * self.step) for i in range(count)]
        return sorted({self.from_unit(u) for u in np.linspace(0.0, 1.0, points)})

    def _fields(self) -> dict:
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class Int(Param):
    """An integer in `[low, high]` (both included), uniform or log-uniform."""

    low: int
    high: int
    log: bool = False

    kind = "int"

    def __post_init__(self):
        for bound in (self.low, self.high):
            if not isinstance(bound, int | np.integer) or isinstance(bound, bool):
                raise ValueError(f"Int: low and high must be integers, got {bound!r}")
        _check_bounds("Int", self.low, self.high, self.log)
        object.__setattr__(self, "when", _check_when(self.when))
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))

    # Each integer owns an equal slice of [0, 1] (of log space when log=True), so
    # from_unit(to_unit(v)) == v and uniform u samples each value with its fair weight.
    def _edges(self) -> tuple[float, float]:
        return self._warp(self.low - 0.5), self._warp(self.high + 0.5)

    def _warp(self, v: float) -> float:
        return math.log(v) if self.log else v

    def to_unit(self, value) -> float:
        lo, hi = self._edges()
        return (self._warp(value) - lo) / (hi - lo)

    def from_unit(self, u: float) -> int:
        lo, hi = self._edges()
        t = lo + min(max(float(u), 0.0), 1.0) * (hi - lo)
        value = math.exp(t) if self.log else t
        return int(min(max(round(value), self.low), self.high))

    def check(self, name: str, value) -> None:
        integral = isinstance(value, int | np.integer) or (
            isinstance(value, float) and value.is_integer()
        )
        if isinstance(value, bool | np.bool_) or not integral:
            raise ValueError(f"{name}: expected an integer, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{name}: {value} is outside [{self.low}, {self.high}]")

    def grid(self, points: int) -> list:
        if self.high - self.low + 1 <= points:
            return list(range(self.low, self.high + 1))
        return sorted({self.from_unit(u) for u in np.linspace(0.0, 1.0, points)})

    def _fields(self) -> dict:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice(Param):
    """One of a fixed list of JSON scalars (str, int, float, bool, None)."""

    options: tuple

    kind = "choice"

    def __post_init__(self):
        if isinstance(self.options, str) or not hasattr(self.options, "__iter__"):
            raise ValueError(f"Choice: options must be a list of values, got {self.options!r}")
        options = tuple(self.options)
        if not options:
            raise ValueError("Choice: options is empty; give at least one value")
        for option in options:
            if not (option is None or isinstance(option, str | int | float | bool)):
                raise ValueError(
                    f"Choice: options must be str, int, float, bool or None, got {option!r}"
                )
        if len({_key(o) for o in options}) != len(options):
            raise ValueError(f"Choice: options repeat a value: {list(options)}")
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "when", _check_when(self.when))

    def index(self, value) -> int:
        key = _key(value)
        for i, option in enumerate(self.options):
            if _key(option) == key:
                return i
        raise ValueError(f"{value!r} is not one of {list(self.options)}")

    def sample(self, rng: np.random.Generator):
        return self.options[int(rng.integers(len(self.options)))]

    def to_unit(self, value) -> float:
        return (self.index(value) + 0.5) / len(self.options)

    def from_unit(self, u: float):
        i = int(min(max(float(u), 0.0), 1.0) * len(self.options))
        return self.options[min(i, len(self.options) - 1)]

    def check(self, name: str, value) -> None:
        try:
            self.index(value)
        except ValueError:
            raise ValueError(
                f"{name}: {value!r} is not allowed; options are {list(self.options)}"
            ) from None

    def grid(self, points: int) -> list:
        return list(self.options)

    def _fields(self) -> dict:
        return {"options": list(self.options)}


def _key(value) -> tuple:
    """Option equality that keeps True apart from 1 and "1" apart from 1 (1 equals 1.0)."""
    return ("num", value) if _is_number(value) else (type(value).__name__, value)


def matches(value, values) -> bool:
    """Whether `value` equals one of `values` under option equality (see `_key`)."""
    return _key(value) in {_key(v) for v in values}


PARAM_TYPES = {"float": Float, "int": Int, "choice": Choice}


def param_from_dict(body: dict) -> Param:
    body = dict(body)
    kind = body.pop("type", None)
    if kind not in PARAM_TYPES:
        raise ValueError(f"unknown parameter type {kind!r}; allowed: {sorted(PARAM_TYPES)}")
    when = body.pop("when", None)
    if kind == "choice":
        return Choice(tuple(body["options"]), when=when)
    return PARAM_TYPES[kind](**body, when=when)
