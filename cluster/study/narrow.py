"""A study's space narrowed: only some knobs of a ready-made space (`train:`, `compress:`),
and parameters held at one value (`fixed:`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from cluster.study.errors import ConfigError, check_keys
from spaces import Choice, Float, Int, Space


def narrowed(section: str, full: Space, values: Mapping) -> Space:
    """Only the named parameters of a ready-made space: a `[low, high]` range of a numeric one
    (log and step as in the full space), a list of options of a categorical one, or a fixed
    value (a one-option choice, never searched). A switch left out that a named parameter needs
    is held on (`compress: {weight_bits: [4, 8]}` quantizes every trial); the knobs a named
    switch gates come along with their full ranges where they are left out
    (`compress: {neuron_prune: [false, true]}` searches the neuron ratio too); other conditions
    on parameters left out are dropped."""
    check_keys(section, values, full.params)
    values = {**values, **_gated(full, values)}
    implied = {
        parent: options[0]
        for key in values
        for parent, options in full[key].when.items()
        if parent not in values and len(options) == 1
    }
    values = {
        key: ({**implied, **values})[key] for key in full.params if key in values or key in implied
    }
    params = {}
    for key, value in values.items():
        param = full[key]
        when = {k: _within(v, params.get(k)) for k, v in param.when.items() if k in values}
        try:
            if isinstance(value, list | tuple) and isinstance(param, Float | Int):
                if len(value) != 2:
                    raise ValueError(f"expected [low, high], got {value!r}")
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


def _gated(full: Space, values: Mapping) -> dict:
    """The parameters left out whose every condition a named value can meet, at their full
    ranges (as `[low, high]` or a list of options), until none is added."""
    named, added = dict(values), {}
    while True:
        new = {
            key: [param.low, param.high] if isinstance(param, Float | Int) else list(param.options)
            for key, param in full.params.items()
            if key not in named
            and param.when
            and all(_can_be(named.get(parent), options) for parent, options in param.when.items())
        }
        if not new:
            return added
        named |= new
        added |= new


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
        try:
            params[key].check(f"fixed.{key}", value)
        except ValueError as error:
            raise ConfigError(str(error)) from error
        params[key] = Choice((value,), when=params[key].when)
    return Space(params)
