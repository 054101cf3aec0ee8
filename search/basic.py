"""Random and grid search."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from search.base import Searcher
from search.errors import Exhausted
from spaces import Space


def enumerate_configs(space: Space, points: int, _partial=None, _depth=0) -> Iterator[dict]:
    """Every grid config of `space` in a fixed order (`points` values per continuous domain)."""
    partial = {} if _partial is None else _partial
    if _depth == len(space):
        yield dict(partial)
        return
    name = space.names[_depth]
    if not space.is_active(name, partial):
        yield from enumerate_configs(space, points, partial, _depth + 1)
        return
    for value in space[name].grid(points):
        partial[name] = value
        yield from enumerate_configs(space, points, partial, _depth + 1)
        del partial[name]


class RandomSearcher(Searcher):
    """Independent draws from each parameter's prior."""

    name = "random"

    def _propose(self) -> dict:
        return self.space.sample(self.rng)


class GridSearcher(Searcher):
    """Grid search: every combination of Choice and Int values, in a fixed order.

    Conditionals are respected; `ask` raises `Exhausted` at the end. Options: `points` (values
    taken from a Float or a wide Int range)."""

    name = "grid"

    def __init__(self, space, *, points: int = 5, **common):
        super().__init__(space, **common)
        if not isinstance(points, int) or points < 2:
            raise ValueError(f"grid: points must be an integer >= 2, got {points!r}")
        self.points = points
        self._position = 0
        self._grid = self._walk()

    def _walk(self, start: int = 0) -> Iterator[dict]:
        return itertools.islice(enumerate_configs(self.space, self.points), start, None)

    def _propose(self) -> dict:
        config = next(self._grid, None)
        if config is None:
            raise Exhausted(f"grid: all {self._position} configurations have been proposed")
        self._position += 1
        return config

    def __getstate__(self):  # Ray Tune pickles its search algorithm; a generator does not pickle
        return {k: v for k, v in self.__dict__.items() if k != "_grid"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._grid = self._walk(self._position)

    def _extra_state(self) -> dict:
        return {"position": self._position}

    def _load_extra_state(self, extra: Mapping) -> None:
        self._position = int(extra.get("position", 0))
        self._grid = self._walk(self._position)
