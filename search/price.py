"""A price: the costs of a config known before training, cached by the part they depend on."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import islice

from search.calibrate import PRICE_QUANTILE
from search.errors import Unpriced
from search.screen import Screen

PRICE_CALLS = 50  # pricing calls (cache misses) one ask may make before it gives up
PRICE_SECONDS = 60.0  # seconds of pricing one ask may spend before it gives up


class Price:
    """`function(config) -> {cost: value}`: the costs of a config known before training (its
    deployed latency, bytes, MACs), a subset of the searcher's constraint names.

    `price(config)` calls `function` once per distinct config restricted to `keys` (the
    parameter names the costs depend on, architecture and compression, not the learning rate;
    None: every key) and answers repeats from its cache at no cost. `calls` and `seconds` are
    the budget of one `ask` (`PRICE_CALLS`, `PRICE_SECONDS`): past either, an ask that found no
    fitting config raises `search.NothingFits`. `stats` counts `calls` (to `function`), `hits`
    (answered from the cache), `screened` (answered by the screen) and `seconds` (in `function`).
    `quantile` (in (0, 1], or None for none): a searcher calibrates the price on what its trials
    measure, so that about this share of those priced to fit measure within the bound
    (`search.calibrate`). `ratios` (`{cost: [measured / priced, ...]}`, `calibrate.ratios`
    reads them off told records): pairs measured before, by earlier studies on the same machine
    and runtime, that the calibration starts from, so a new study's first trials are covered as
    its earlier ones' last were.

    `screen` (None: price every config exactly; an integer >= 10, say 20, for a slow `function`,
    a device server or slow runtime): past that many exact prices, `price(config, bounds=...)`
    (a searcher's) lets a model fit on them (`search.screen.Screen`) answer for a config clearly
    over a bound (refused) or clearly under all (proposed), its predicted costs standing for the
    price (a trial is given them as priced, and they are not cached); only those near a bound are
    priced exactly (and refit the model).

    `twin` (None, or `config -> config`): a plainer config a searcher proposes instead of one
    that fits, when the twin fits every bound too and was neither run nor is pending: a study
    whose costs are bounds only, not objectives, gives the config with its pruning and
    quantization switched off, since compression that a config does not need to fit only
    costs accuracy (and on small inputs it may not even buy latency)."""

    def __init__(
        self,
        function: Callable[[dict], Mapping[str, float]],
        *,
        keys: Sequence[str] | None = None,
        calls: int = PRICE_CALLS,
        seconds: float = PRICE_SECONDS,
        screen: int | None = None,
        quantile: float | None = PRICE_QUANTILE,
        twin: Callable[[dict], dict] | None = None,
        ratios: Mapping[str, Sequence[float]] | None = None,
    ):
        if not callable(function):
            raise ValueError(f"price: the function must be callable, got {function!r}")
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise ValueError(f"price: calls must be an integer >= 1, got {calls!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"price: seconds must be a positive number, got {seconds!r}")
        if quantile is not None and not (_number(quantile) and 0 < quantile <= 1):
            raise ValueError(f"price: quantile must be in (0, 1] or None, got {quantile!r}")
        if twin is not None and not callable(twin):
            raise ValueError(f"price: twin must be callable or None, got {twin!r}")
        if isinstance(keys, str):
            raise ValueError(f"price: keys must be a list of parameter names, got {keys!r}")
        self.function, self.screen = function, Screen.of(screen)
        self.keys = None if keys is None else tuple(sorted(keys))
        self.calls, self.seconds, self.quantile = calls, float(seconds), quantile
        self.twin, self.ratios = twin, _checked_ratios(ratios)
        self._cache: dict[str, dict[str, float]] = {}
        self._stats = stats_of({})

    @classmethod
    def wrap(cls, price) -> Price | None:
        """`price` as a `Price`: None stays None, a plain callable is `Price(price)`."""
        return price if price is None or isinstance(price, Price) else cls(price)

    def key(self, config: Mapping) -> str:
        """The cache key of `config`: its cost-relevant part as canonical JSON."""
        part = config if self.keys is None else {k: config[k] for k in self.keys if k in config}
        return json.dumps(dict(part), sort_keys=True, default=str)

    def __call__(self, config: Mapping, *, bounds: Mapping[str, float] | None = None) -> dict:
        key = self.key(config)
        if key in self._cache:
            self._stats["hits"] += 1
            return dict(self._cache[key])
        if self.screen is not None and bounds:
            screened = self.screen.judge(json.loads(key), bounds, self._cache)
            if screened is not None:
                self._stats["screened"] += 1
                return screened
        start = time.perf_counter()
        try:
            costs = self.function(dict(config))
        except Unpriced:
            costs = None  # unpriced this once, not cached
        self._stats["seconds"] += time.perf_counter() - start
        self._stats["calls"] += 1
        if costs is None:
            return {}
        self._cache[key] = _numbers(costs)
        return dict(self._cache[key])

    def known(self, config: Mapping) -> dict[str, float] | None:
        """The cached costs of `config` (None when not priced yet); counts nothing."""
        costs = self._cache.get(self.key(config))
        return None if costs is None else dict(costs)

    def prices(self, since: int = 0) -> list[list]:
        """The exact prices so far from the `since`th on (all by default), `[price key, costs]`
        in the order priced; `exact` counts them."""
        return [[key, dict(costs)] for key, costs in islice(self._cache.items(), since, None)]

    @property
    def exact(self) -> int:
        """How many configs were priced exactly so far (the cache's size)."""
        return len(self._cache)

    def learn(self, prices) -> None:
        """Take `prices` (`prices()`'s) into the cache, keeping those it holds."""
        for key, costs in prices:
            self._cache.setdefault(str(key), _numbers(costs))

    @property
    def stats(self) -> dict:
        """`{"calls", "hits", "screened": int, "seconds": float}` so far (a copy)."""
        return dict(self._stats)

    @stats.setter
    def stats(self, value: Mapping) -> None:
        self._stats = stats_of(value)


def _checked_ratios(raw) -> dict[str, tuple[float, ...]]:
    """`Price`'s `ratios`, checked: positive finite numbers by cost name."""
    if not isinstance(raw, Mapping | None):
        raise ValueError(f"price: ratios must map cost names to lists of numbers, got {raw!r}")
    out = {}
    for name, values in (raw or {}).items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise ValueError(f"price: ratios[{name!r}] must be a list of numbers, got {values!r}")
        if not all(_number(v) and math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"price: ratios[{name!r}] must be positive numbers, got {values!r}")
        out[str(name)] = tuple(float(v) for v in values)
    return out


STATS = {"calls": int, "hits": int, "screened": int, "seconds": float}


def stats_of(value: Mapping) -> dict:
    """Pricing stats with every count present (0 where `value` lacks it)."""
    return {name: kind(value.get(name, 0)) for name, kind in STATS.items()}


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
