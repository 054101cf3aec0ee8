"""What refuses a study file before Ray starts, beside the key checks of `errors`: the file
read as YAML 1.2 reads numbers (`3e-4` is a number), its relative paths taken from its folder,
and every value it fixes checked against the parameter or builder argument it sets."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from cluster.study.errors import ConfigError, check_keys
from spaces import Choice, Float, Int
from spaces.params import Param

# YAML 1.1 (PyYAML) reads a float only with a dot: `3e-4` is text there, a number in YAML 1.2
EXPONENT = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")
MAX_COUNT = 1000  # the most of an `int` builder argument (`stages`): a million took 100 s
FILE_KEYS = ("data_path", "latency_token_file", "trainable_path")  # read from the file's folder


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader that reads `1e-3` and `3e-4` as numbers, as YAML 1.2 does."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT, list("-+0123456789"))


def parse_yaml(text: str):
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)


def number_hint(value) -> str:
    """A hint when `value` is text that reads as a number (YAML 1.1 or a quoted number)."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return f" (the text {value!r}: write it as a number, unquoted, e.g. 3.0e-4 for 3e-4)"


def from_folder(raw: Mapping, folder: Path) -> dict:
    """`raw` with each relative path of `FILE_KEYS` taken from `folder` (the study file's)."""
    return {
        key: str(folder / Path(value).expanduser())
        if key in FILE_KEYS and isinstance(value, str)
        else value
        for key, value in raw.items()
    }


def check_value(where: str, param: Param, value) -> None:
    """Raise `ConfigError` when `param` does not allow `value`, naming what it allows."""
    try:
        param.check(where, value)
    except ValueError as error:
        raise ConfigError(f"{error}{_allowed(param)}{number_hint(value)}") from None


def check_range(where: str, param: Param, value) -> None:
    """`value` (a `[low, high]` of a numeric `param`, or a list of options of a categorical
    one) checked: bounds are numbers (whole for an `Int`; they may reach past the ready-made
    range), options are the parameter's."""
    if isinstance(param, Choice):
        for option in value:
            check_value(where, param, option)
        return
    if len(value) != 2:
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    for bound in value:
        whole = isinstance(bound, int) or (isinstance(bound, float) and bound.is_integer())
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ConfigError(f"{where}: bounds must be numbers, got {bound!r}{number_hint(bound)}")
        if isinstance(param, Int) and not whole:
            raise ConfigError(f"{where}: bounds must be whole numbers, got {bound!r}")


def _allowed(param: Param) -> str:
    if isinstance(param, Float | Int):
        kind = "a whole number" if isinstance(param, Int) else "a number"
        return f"; allowed: {kind} from {param.low:g} to {param.high:g}"
    return ""


def check_options(arch: str, builder: Callable, options: Mapping) -> None:
    """Each of `options` (`arch_options`: keyword arguments of `builder`, the ready-made space
    of `arch`) a key of `builder` and of the kind its annotation names: `int` a positive whole
    number up to `MAX_COUNT`, `tuple[int, int]` a `[low, high]` pair of whole numbers,
    `Sequence[int]` a non-empty list of positive whole numbers."""
    hints = typing.get_type_hints(builder)
    check_keys(f"arch_options for {arch!r}", options, list(inspect.signature(builder).parameters))
    for key, value in options.items():
        hint = hints.get(key)
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is int:  # a count of parts: past MAX_COUNT, building the space alone hangs
            ok, kind = (
                _whole(value) and value <= MAX_COUNT,
                f"a positive whole number up to {MAX_COUNT}",
            )
        elif origin is tuple and args == (int, int):
            pair = isinstance(value, list | tuple) and len(value) == 2
            ok, kind = pair and all(map(_whole, value)), "[low, high], whole numbers"
        elif origin is Sequence and args == (int,):
            items = isinstance(value, list | tuple) and len(value) > 0
            ok, kind = items and all(map(_whole, value)), "a list of positive whole numbers"
        else:
            continue
        if not ok:
            bad = [v for v in value if not _whole(v)] if isinstance(value, list | tuple) else []
            hint = number_hint(bad[0] if bad else value)
            raise ConfigError(f"arch_options.{key}: expected {kind}, got {value!r}{hint}")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
