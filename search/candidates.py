"""Candidate configs for an acquisition to score: random draws and local moves."""

from __future__ import annotations

import numpy as np

from search import gp
from spaces import Space


def random_candidates(space: Space, rng, count: int) -> tuple[list[dict], np.ndarray]:
    """`count` uniform draws on the unit cube, decoded, and their feature rows."""
    configs = [space.decode(u) for u in rng.random((count, len(space)))]
    return configs, gp.features(space, configs)


def neighbours(space: Space, cat: np.ndarray, rng, configs: list[dict], count: int, scale: float):
    """`count` moves of each config: numeric dimensions moved by N(0, scale) on the unit cube,
    one categorical dimension redrawn; a list of configs."""
    out = []
    categorical = np.flatnonzero(cat)
    for config in configs:
        noise = rng.normal(0.0, scale, (count, len(cat))) * ~cat
        moved = space.encode(config) + noise
        if len(categorical):
            flip = categorical[rng.integers(len(categorical), size=count)]
            moved[np.arange(count), flip] = rng.random(count)
        out += [space.decode(u) for u in np.clip(moved, 0.0, 1.0)]
    return out


def best_untaken(
    space: Space, configs: list[dict], values: np.ndarray, taken, fits=None
) -> int | None:
    """Index of the best-scored config whose canonical key `taken(key)` refuses not and that
    `fits(config)` (a searcher's `_fits`: True, False, or None to stop) accepts, else None
    (also when only configs scored -inf are left)."""
    for i in np.argsort(-values, kind="stable"):
        if not values[i] > -np.inf:
            return None
        if not taken(space.canonical(configs[i])):
            fit = True if fits is None else fits(configs[i])
            if fit is None:
                return None
            if fit:
                return int(i)
    return None
