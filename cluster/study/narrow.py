"""A study's space narrowed: only some knobs of a ready-made space (`train:`, `compress:`),
and parameters held at one value (`fixed:`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cluster.study.checks import check_range, check_value
from cluster.study.errors import ConfigError, check_keys
from spaces import Choice, Float, Int, Space
from trainers.settings import SWITCH_NEEDS


def narrowed(section: str, full: Space, values: Mapping) -> Space:
    """Only the named parameters of a ready-made space: a `[low, high]` range of a numeric one
    (log and step as in the full space; it may reach past the full range), a list of options of
    a categorical one, or a fixed value (a one-option choice, never searched), each checked
    against the full space. A switch left out that a named parameter needs is held on
    (`compress: {weight_bits: [4, 8]}` quantizes every trial), and a switch that can be on
    brings the one knob it needs (`trainers.settings.SWITCH_NEEDS`), at its full range
    (`compress: {neuron_prune: [false, true]}` searches the neuron ratio too); nothing else left
    out is searched (it takes `trainers.run_trial`'s defaults), and conditions on parameters
    left out are dropped."""
    check_keys(section, values, full.params)
    for key, value in values.items():
        check = check_range if isinstance(value, list | tuple) else check_value
        check(f"{section}.{key}", full[key], value)
    values = {**_implied(full, values), **values}
    needed = {
        knob: _full_range(full[knob])
        for switch, knob in SWITCH_NEEDS.items()
        if knob in full.params and knob not in values and _can_be(values.get(switch), (True,))
    }
    values = {key: ({**values, **needed})[key] for key in full.params if key in values | needed}
    params = {}
    for key, value in values.items():
        param = full[key]
        when = {k: _within(v, params.get(k)) for k, v in param.when.items() if k in values}
        try:
            if isinstance(value, list | tuple) and isinstance(param, Float | Int):
                params[key] = dataclasses.replace(param, low=value[0], high=value[1], when=when)
            elif isinstance(value, list | tuple):
                params[key] = Choice(tuple(value), when=when)
            else:
                params[key] = Choice((value,), when=when)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{section}.{key}: {error}") from error
    try:
        return Space(params)
    except ValueError as error:
        raise ConfigError(f"{section}: {error}") from error


def _implied(full: Space, values: Mapping) -> dict:
    """The switches left out that a named parameter needs on: held at their one value."""
    return {
        parent: options[0]
        for key in values
        for parent, options in full[key].when.items()
        if parent not in values and len(options) == 1
    }


def _full_range(param):
    return [param.low, param.high] if isinstance(param, Float | Int) else list(param.options)


def _within(options: tuple, parent) -> tuple:
    """A condition's options that the narrowed `parent` still has (all of them if none)."""
    kept = tuple(o for o in options if not isinstance(parent, Choice) or o in parent.options)
    return kept or options


def _can_be(value, options) -> bool:
    choices = value if isinstance(value, list | tuple) else [value]
    return value is not None and any(choice in options for choice in choices)


def held(space: Space, fixed: Mapping) -> Space:
    """`space` with each parameter of `fixed` (full names: `arch.s0_width`) held at its value."""
    check_keys("fixed", fixed, space.params)
    params = dict(space.params)
    for key, value in fixed.items():
        check_value(f"fixed.{key}", params[key], value)
        params[key] = Choice((value,), when=params[key].when)
    return Space(params)
