"""A price: the costs of a config known before training, cached by the part they depend on."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence

PRICE_CALLS = 50  # pricing calls (cache misses) one ask may make before it gives up
PRICE_SECONDS = 30.0  # seconds of pricing one ask may spend before it gives up


class Price:
    """`function(config) -> {cost: value}`: the costs of a config known before training (its
    deployed latency, bytes, MACs), a subset of the searcher's constraint names.

    `price(config)` calls `function` once per distinct config restricted to `keys` (the
    parameter names the costs depend on, architecture and compression, not the learning rate;
    None: every key) and answers repeats from its cache at no cost. `calls` and `seconds` are
    the budget of one `ask` (`PRICE_CALLS`, `PRICE_SECONDS`): past either, an ask that found no
    fitting config raises `search.NothingFits`. `stats` counts `calls` (to `function`), `hits`
    (answered from the cache) and `seconds` (spent in `function`)."""

    def __init__(
        self,
        function: Callable[[dict], Mapping[str, float]],
        *,
        keys: Sequence[str] | None = None,
        calls: int = PRICE_CALLS,
        seconds: float = PRICE_SECONDS,
    ):
        if not callable(function):
            raise ValueError(f"price: the function must be callable, got {function!r}")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise ValueError(f"price: calls must be an integer >= 1, got {calls!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"price: seconds must be a positive number, got {seconds!r}")
        if isinstance(keys, str):
            raise ValueError(f"price: keys must be a list of parameter names, got {keys!r}")
        self.function = function
        self.keys = None if keys is None else tuple(sorted(keys))
        self.calls, self.seconds = calls, float(seconds)
        self._cache: dict[str, dict[str, float]] = {}
        self._stats = stats_of({})

    @classmethod
    def wrap(cls, price) -> Price | None:
        """`price` as a `Price`: None stays None, a plain callable is `Price(price)`."""
        if price is None or isinstance(price, Price):
            return price
        return cls(price)

    def key(self, config: Mapping) -> str:
        """The cache key of `config`: its cost-relevant part as canonical JSON."""
        part = config if self.keys is None else {k: config[k] for k in self.keys if k in config}
        return json.dumps(dict(part), sort_keys=True, default=str)

    def __call__(self, config: Mapping) -> dict[str, float]:
        key = self.key(config)
        if key in self._cache:
            self._stats["hits"] += 1
            return dict(self._cache[key])
        start = time.perf_counter()
        costs = self.function(dict(config))
        self._stats["seconds"] += time.perf_counter() - start
        self._stats["calls"] += 1
        self._cache[key] = _numbers(costs)
        return dict(self._cache[key])

    def known(self, config: Mapping) -> dict[str, float] | None:
        """The cached costs of `config` (None when not priced yet); counts nothing."""
        costs = self._cache.get(self.key(config))
        return None if costs is None else dict(costs)

    @property
    def stats(self) -> dict:
        """`{"calls": int, "hits": int, "seconds": float}` so far (a copy)."""
        return dict(self._stats)

    @stats.setter
    def stats(self, value: Mapping) -> None:
        self._stats = stats_of(value)


def stats_of(value: Mapping) -> dict:
    """Pricing stats with every count present (0 where `value` lacks it)."""
    return {
        "calls": int(value.get("calls", 0)),
        "hits": int(value.get("hits", 0)),
        "seconds": float(value.get("seconds", 0.0)),
    }


def _numbers(costs) -> dict[str, float]:
    if not isinstance(costs, Mapping):
        raise ValueError(f"price: the function must return a dict of costs, got {costs!r}")
    out = {}
    for name, value in costs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise ValueError(f"price: cost {name!r} must be a number, got {value!r}") from None
        out[str(name)] = float(value) if math.isfinite(float(value)) else math.inf
    return out
