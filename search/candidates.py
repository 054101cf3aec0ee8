"""Candidate configs for an acquisition to score: random draws and local moves."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.stats import qmc

from search import gp
from spaces import Choice, Space


def design_point(space: Space, seed: int, size: int, index: int) -> dict:
    """Point `index` of a run of Latin hypercubes of `size` points, the k-th seeded `seed + k`."""
    batch, row = divmod(index, size)
    sampler = qmc.LatinHypercube(d=len(space), seed=seed + batch)
    return space.decode(sampler.random(size)[row])


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


def mutate(space: Space, rng, config: dict, *, changes: int = 1, step: float = 0.15) -> dict:
    """A copy of `config` with `changes` active parameters changed (a choice to another
    option, a number moved by N(0, `step`) on the unit interval); parameters a change switches
    on are drawn from their prior, those it switches off are dropped."""
    child = dict(config)
    for _ in range(changes):
        names = sorted(child)
        name = names[int(rng.integers(len(names)))]
        param = space[name]
        if isinstance(param, Choice):
            others = [o for o in param.options if o != child[name]] or list(param.options)
            child[name] = others[int(rng.integers(len(others)))]
        else:
            u = param.to_unit(child[name]) + rng.normal(0.0, step)
            child[name] = param.from_unit(float(np.clip(u, 0.0, 1.0)))
        child = _active(space, rng, child)
    return child


def _active(space: Space, rng, config: dict) -> dict:
    out: dict = {}
    for name, param in space.params.items():
        if space.is_active(name, out):
            out[name] = config[name] if name in config else param.sample(rng)
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


def refine(space: Space, cat: np.ndarray, score, config: dict) -> tuple[dict, float]:
    """L-BFGS-B on the active numeric dimensions of `config`, categories held fixed."""
    free = np.array([not c and n in config for c, n in zip(cat, space.names)])
    base = gp.features(space, [config])[0]
    if not free.any():
        return config, float(score(base[None])[0])

    k, step = int(free.sum()), 1e-6

    def loss_and_grad(v):
        # the point and its k forward-difference neighbours, scored in one batch
        # (a step backwards where a coordinate sits at the upper bound)
        steps = np.where(v + step > 1.0, -step, step)
        feats = np.repeat(base[None], k + 1, axis=0)
        feats[:, free] = v
        feats[1:, free] += np.diag(steps)
        values = -score(feats)
        return float(values[0]), (values[1:] - values[0]) / steps

    result = minimize(
        loss_and_grad,
        base[free],
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * k,
        options={"maxiter": 50},
    )
    unit = space.encode(config)
    unit[free] = result.x
    refined = space.decode(unit)
    return refined, float(score(gp.features(space, [refined]))[0])
