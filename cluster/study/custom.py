"""A study of the user's own trainable: `trainable: "package.module:function"` and a free-form
`space:`, checked before Ray starts."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from cluster.study.errors import ConfigError
from spaces import Choice, Float, Int, Space
from spaces.params import param_from_dict
from spaces.util import did_you_mean

SCHEDULED = ("asha", "moasha", "hyperband")  # schedulers that need the most steps a trial reports


def parse_space(body: Mapping) -> Space:
    """A space from a study's `space:` mapping, one entry per parameter:

        lr: {low: 1.0e-4, high: 0.1, log: true}        # a Float (`step` too)
        hidden: {low: 16, high: 256, log: true}         # an Int: both bounds whole numbers
        optimizer: [adam, sgd]                          # a Choice; or {options: [...]}
        momentum: {low: 0.5, high: 0.99, when: {optimizer: sgd}}   # only while sgd
        epochs: 10                                      # fixed: passed, never searched
        depth: {type: int, low: 1, high: 4}             # `spaces` own dict form

    `when` switches a parameter on while others take the listed values. A whole
    `Space.to_dict()` (`{version, params}`) is taken as it is."""
    if not isinstance(body, Mapping) or not body:
        raise ConfigError("space: a mapping of parameters, e.g. {lr: {low: 0.001, high: 0.1}}")
    if "params" in body and "version" in body:
        try:
            return Space.from_dict(body)
        except (TypeError, ValueError, KeyError) as error:
            raise ConfigError(f"space: {error}") from error
    params = {}
    for name, value in body.items():
        try:
            params[str(name)] = _param(value)
        except (TypeError, ValueError, KeyError) as error:
            raise ConfigError(f"space.{name}: {error}") from error
    try:
        return Space(_parents_first(params))
    except ValueError as error:
        raise ConfigError(f"space: {error}") from error


def _parents_first(params: dict) -> dict:
    """`params` in their order, but each after the parameters its condition names (a mapping
    read from YAML may come sorted)."""
    placed, waiting = {}, dict(params)
    while waiting:
        ready = [name for name, param in waiting.items() if set(param.when) <= set(placed)]
        if not ready:  # a condition on no parameter, or a cycle: `Space` names it
            return {**placed, **waiting}
        placed[ready[0]] = waiting.pop(ready[0])
    return placed


_RANGE_KEYS = {"low", "high", "log", "step", "when", "type"}


def _param(value):
    if isinstance(value, list | tuple):
        return Choice(tuple(value))
    if not isinstance(value, Mapping):
        return Choice((value,))
    if "type" in value:
        return param_from_dict({k: _number(k, v) for k, v in value.items()})
    if "options" in value:
        unknown = set(value) - {"options", "when"}
        if unknown:
            raise ValueError(f"a choice takes options and when, not {sorted(unknown)}")
        return Choice(tuple(value["options"]), when=value.get("when"))
    if "low" not in value or "high" not in value:
        raise ValueError(f"expected {{low, high}}, {{options}}, a list or a value; got {value!r}")
    unknown = set(value) - _RANGE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ValueError(f"unknown key {key!r}{did_you_mean(key, _RANGE_KEYS)}")
    bounds = {k: _number(k, value[k]) for k in ("low", "high")}
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in bounds.values())
    kind = Int if whole and "step" not in value else Float
    rest = {k: value[k] for k in ("log", "step") if k in value}
    return kind(**bounds, **rest, when=value.get("when"))


def _number(key: str, value):
    """YAML reads `1e-4` (no dot) as text: a bound written so is taken as the number."""
    if key in ("low", "high", "step") and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {value!r}") from None
    return value


def load_trainable(spec: str, folder: str | None = None, *, shipped: bool = False) -> Callable:
    """The function `spec` (`"package.module:function"`) names, imported with `folder` first
    on the Python path (`shipped`: last, so the copy Ray shipped to a worker, earlier on its
    path, wins over whatever a node holds at the driver's `folder`); a `ConfigError` names the
    module, the function and what is wrong (not importable, missing, not callable, not
    callable as `function(config, report)`)."""
    module_name, colon, name = str(spec).partition(":")
    if not colon or not module_name or not name:
        raise ConfigError(f"trainable {spec!r}: expected 'package.module:function'")
    if folder and folder not in sys.path:  # kept: the module may import its neighbours later
        sys.path.insert(len(sys.path) if shipped else 0, folder)
    where = f"from {folder!r} or the Python path" if folder else "from the Python path"
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        message = f"trainable {spec!r}: cannot import {module_name!r} {where}: {error}"
        raise ConfigError(message) from None
    except Exception as error:  # the module itself raised while importing
        raise ConfigError(
            f"trainable {spec!r}: importing {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    function = getattr(module, name, None)
    if function is None:
        public = [n for n in vars(module) if not n.startswith("_")]
        hint = did_you_mean(name, public)
        raise ConfigError(f"trainable {spec!r}: module {module_name!r} has no {name!r}{hint}")
    if not callable(function):
        raise ConfigError(
            f"trainable {spec!r}: {module_name}.{name} is not a function (it is {function!r})"
        )
    try:
        signature = inspect.signature(function)
    except ValueError:  # no signature to read (a builtin): calling it will tell
        return function
    try:
        signature.bind({}, None)
    except TypeError as error:
        raise ConfigError(
            f"trainable {spec!r}: {module_name}.{name}{signature} cannot be called as "
            f"{name}(config, report): {error}"
        ) from None
    return function


def shipped(spec: str, folder: str | None) -> list[str]:
    """What Ray ships to its workers for `spec` (`runtime_env` `py_modules`): the top-level
    package (a folder) or module (a `.py` file) it names, found in `folder`; nothing when it
    imports from elsewhere (an installed package). Modules beside it do not ship: a trainable
    that imports its neighbours lives in a package."""
    top = str(spec).partition(":")[0].split(".")[0]
    found = [Path(folder, name) for name in (top, f"{top}.py")] if folder else []
    return [str(path.resolve()) for path in found if path.exists()][:1]


def check(study) -> None:
    """What a study with a `trainable` must hold before Ray starts: the function importable
    and callable as `function(config, report)`, a `space:`, and a scheduler it can use
    (`asha`, `moasha` and `hyperband` need `max_t`, the most steps a trial reports; `pbt` needs the
    built-in trainer's snapshots)."""
    if not isinstance(study.trainable, str):
        raise ConfigError(f"trainable: expected 'package.module:function', got {study.trainable!r}")
    if study.trainable_path and not Path(study.trainable_path).is_dir():
        raise ConfigError(f"trainable_path {study.trainable_path!r} is not a folder")
    parse_space(study.search_space)
    load_trainable(study.trainable, study.trainable_path)
    if study.scheduler == "pbt":
        raise ConfigError(
            "scheduler pbt restarts trials from the built-in trainer's snapshots; with a "
            "trainable use fifo, asha, moasha, hyperband or median"
        )
    max_t = study.scheduler_options.get("max_t")
    if study.scheduler in SCHEDULED and not (isinstance(max_t, int) and max_t >= 1):
        raise ConfigError(
            f"scheduler {study.scheduler} with a trainable: set scheduler_options.max_t, the "
            f"most steps a trial reports (got {max_t!r})"
        )
