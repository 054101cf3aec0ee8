"""`Space`: an ordered, immutable set of named parameters with conditions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from spaces.params import Choice, Param, matches, param_from_dict
from spaces.util import did_you_mean

SPACE_VERSION = 1
INACTIVE = 0.5  # the unit-cube coordinate of a parameter that is switched off


class Space:
    """An ordered, immutable set of named parameters.

    A parameter with `when={parent: values}` is active only while every parent is active and
    takes one of the listed values; parents must come before their children. Configs are plain
    dicts holding exactly the active parameters.
    """

    def __init__(self, params: Mapping[str, Param]):
        if not isinstance(params, Mapping) or not params:
            raise ValueError("Space needs a non-empty dict {name: Float | Int | Choice}")
        seen: dict[str, Param] = {}
        for name, param in params.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"parameter names must be non-empty strings, got {name!r}")
            if not isinstance(param, Param):
                raise ValueError(
                    f"{name}: expected Float, Int or Choice, got {type(param).__name__}"
                )
            for parent, values in param.when.items():
                if parent not in seen:
                    where = "comes later" if parent in params else "is not a parameter"
                    raise ValueError(
                        f"{name}: condition on {parent!r}, which {where}"
                        f"{did_you_mean(parent, seen)}; a condition needs an earlier parameter"
                    )
                for value in values:
                    if isinstance(seen[parent], Choice):
                        seen[parent].check(f"{name}: condition value for {parent}", value)
            seen[name] = param
        self._params = MappingProxyType(dict(params))
        self._names = tuple(params)

    # -- structure -------------------------------------------------------------------------
    @property
    def params(self) -> Mapping[str, Param]:
        return self._params

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self):
        return iter(self._names)

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __eq__(self, other) -> bool:
        return isinstance(other, Space) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(self._names))

    def __repr__(self) -> str:
        return f"Space({dict(self._params)!r})"

    def is_active(self, name: str, config: Mapping) -> bool:
        """Whether `name` is switched on by the values `config` gives its parents."""
        for parent, values in self._params[name].when.items():
            if parent not in config or not matches(config[parent], values):
                return False
        return True

    # -- sampling and the unit cube ---------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict:
        """A random config; each active parameter drawn from its prior."""
        config: dict = {}
        for name, param in self._params.items():
            if self.is_active(name, config):
                config[name] = _plain(param.sample(rng))
        return config

    def encode(self, config: Mapping) -> np.ndarray:
        """`config` as a point of the unit cube, shape `(len(space),)`; inactive -> 0.5."""
        self.validate(config)
        return np.array(
            [self._params[n].to_unit(config[n]) if n in config else INACTIVE for n in self._names]
        )

    def decode(self, x) -> dict:
        """The config at unit-cube point `x` (shape `(len(space),)`); inactive ones left out."""
        x = np.asarray(x, dtype=float)
        if x.shape != (len(self),):
            raise ValueError(f"decode expects shape ({len(self)},), got {x.shape}")
        config: dict = {}
        for name, u in zip(self._names, x):
            if self.is_active(name, config):
                config[name] = _plain(self._params[name].from_unit(u))
        return config

    def validate(self, config: Mapping) -> None:
        """Raise `ValueError` naming the first missing, unknown, inactive or bad key."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a config must be a dict, got {type(config).__name__}")
        for key in config:
            if key not in self._params:
                raise ValueError(
                    f"unknown parameter {key!r}{did_you_mean(key, self._names)}; "
                    f"known: {list(self._names)}"
                )
        for name, param in self._params.items():
            active = self.is_active(name, config)
            if active and name not in config:
                raise ValueError(f"missing parameter {name!r} ({param.to_dict()})")
            if not active and name in config:
                raise ValueError(
                    f"{name} is inactive here: it applies only when {_render(param.when)}"
                )
            if active:
                param.check(name, config[name])

    def canonical(self, config: Mapping) -> str:
        """A string that is equal for equal configs (dedup key)."""
        return repr(sorted((k, repr(config[k])) for k in config))

    # -- composition and JSON -----------------------------------------------------------------
    def prefixed(self, prefix: str) -> Space:
        """The same space with every name (and every condition's parent) under `prefix`."""
        return Space(
            {
                prefix + name: replace(p, when={prefix + k: v for k, v in p.when.items()})
                for name, p in self._params.items()
            }
        )

    @classmethod
    def combine(cls, parts: Mapping[str, Space]) -> Space:
        """One space from several, each under `"<key>."`: `combine({"arch": a, "train": t})`."""
        params: dict[str, Param] = {}
        for key, part in parts.items():
            if not isinstance(part, Space):
                raise ValueError(f"{key}: expected a Space, got {type(part).__name__}")
            params.update(part.prefixed(f"{key}.").params)
        return cls(params)

    @staticmethod
    def subconfig(config: Mapping, prefix: str) -> dict:
        """The keys of `config` under `prefix`, with the prefix stripped (`combine`'s inverse
        for one part: `Space.subconfig(config, "arch.")`)."""
        return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}

    def to_dict(self) -> dict:
        return {
            "version": SPACE_VERSION,
            "params": {n: p.to_dict() for n, p in self._params.items()},
        }

    @classmethod
    def from_dict(cls, body: Mapping) -> Space:
        if not isinstance(body, Mapping) or "params" not in body:
            raise ValueError("a space dict needs a 'params' mapping (as written by to_dict)")
        if body.get("version", SPACE_VERSION) > SPACE_VERSION:
            raise ValueError(
                f"space version {body['version']} is newer than this release reads "
                f"({SPACE_VERSION})"
            )
        return cls({n: param_from_dict(p) for n, p in body["params"].items()})


def _render(when: Mapping) -> str:
    return " and ".join(
        f"{parent} is {values[0]!r}" if len(values) == 1 else f"{parent} in {list(values)}"
        for parent, values in when.items()
    )


def _plain(value):
    """Numpy scalars to Python ones, so configs serialize as JSON."""
    return value.item() if isinstance(value, np.generic) else value
