"""Regularized evolution (Real et al. 2019): an aging population, tournament selection,
mutation that respects conditionals; NSGA-II ranking for several objectives."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from search.base import Searcher
from search.candidates import mutate
from search.pareto import dominating, non_dominated

MUTATION_TRIES = 20  # children tried again while they repeat a config or do not fit


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front number of each row of minimized `points` (0 = not dominated), shape `(n,)`."""
    ranks = np.full(len(points), -1)
    remaining = np.arange(len(points))
    front = 0
    while len(remaining):
        mask = non_dominated(points[remaining])
        ranks[remaining[mask]] = front
        remaining = remaining[~mask]
        front += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row of `points` within its set, shape `(n,)`."""
    n, d = points.shape
    distance = np.zeros(n)
    for j in range(d):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        distance[order[[0, -1]]] = np.inf
        if span > 0 and n > 2:
            distance[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return distance


class EvolutionSearcher(Searcher):
    """Regularized evolution: tournament selection, the oldest member dies.

    Options: `population` (P, the living models), `sample_size` (S, the tournament's size),
    `mutations` (parameters changed per child), `step` (the spread of a numeric mutation on
    the unit interval). With a price, the parent is mutated until a new child fits; while the
    population fills, half the draws after a refusal change the ask's nearest refusal instead.
    With rungs (`search.fidelity.Rungs`), a trial stopped at a rung joins the population too,
    ranked by its standing at its rung against a full result's among the full ones."""

    name = "evolution"

    def __init__(
        self,
        space,
        *,
        population: int = 20,
        sample_size: int = 5,
        mutations: int = 1,
        step: float = 0.15,
        **common,
    ):
        super().__init__(space, **common)
        if not isinstance(population, int) or population < 2:
            raise ValueError(f"evolution: population must be an integer >= 2, got {population!r}")
        if not isinstance(sample_size, int) or not 1 <= sample_size <= population:
            raise ValueError(
                f"evolution: sample_size must be an integer in [1, population={population}], "
                f"got {sample_size!r}"
            )
        if not isinstance(mutations, int) or mutations < 1:
            raise ValueError(f"evolution: mutations must be a positive integer, got {mutations!r}")
        self.size, self.sample_size, self.mutations, self.step = (
            population,
            sample_size,
            mutations,
            float(step),
        )
        self.members: list[str] = []  # ids of the living population, oldest first
        self._living: list[dict] = []  # their records

    def _at_rung(self, record: dict) -> bool:
        return self.max_fidelity is not None and record.get("fidelity") is not None

    def _observe(self, record: dict) -> None:
        full = record["status"] in ("completed", "infeasible") and record["metrics"] is not None
        if full or self._at_rung(record):
            self.members.append(record["id"])
            self._living.append(record)
            if len(self.members) > self.size:
                self.members.pop(0)  # the oldest dies, however good
                self._living.pop(0)

    def _propose(self) -> dict:
        if len(self.members) + len(self.pending) < self.size or not self.members:
            return self._draw()
        living = self._living
        contestants = self.rng.choice(
            len(living), min(self.sample_size, len(living)), replace=False
        )
        parent = living[int(contestants[np.argmin(self._ranking(living)[contestants])])]
        for _ in range(1 + MUTATION_TRIES):
            child = self.mutate(parent["config"])
            if self.space.canonical(child) not in self._seen:
                fit = self._fits(child)  # with a price: a child over a bound is refused
                if fit or fit is None:
                    return child
        return child

    def _draw(self) -> dict:
        """A draw from the prior, or with a price, half the time after a refusal, a change of
        the ask's nearest refusal (`_near_miss`) that was not told before."""
        near = self._near_miss()
        if near is not None:
            for _ in range(MUTATION_TRIES):
                child = self.mutate(near)
                if self.space.canonical(child) not in self._seen:
                    return child
        return self.space.sample(self.rng)

    def _ranking(self, living: list[dict]) -> np.ndarray:
        """Lower is better: feasible before infeasible (by violation), then by objectives."""
        violation = np.array([o.get("violation", 0.0) for o in living])
        if any(self._at_rung(o) for o in living):
            quality = self._standing_order(living)
        else:
            quality = self._quality(living)
        feasible = violation == 0
        return np.where(feasible, quality, len(living) + np.argsort(np.argsort(violation)))

    def _standing_order(self, living: list[dict]) -> np.ndarray:
        """Rank by standing (`rung_standings` at a rung; a full result's, the share of full
        results not dominating it), the higher fidelity first on a tie."""
        rungs = self.rung_standings([o["id"] for o in living if self._at_rung(o)])
        full = [self.objective.signed(o["metrics"]) for o in self.usable()]
        full = np.array(full).reshape(len(full), len(self.objective.metrics))
        standing, fidelity = [], []
        for o in living:
            if self._at_rung(o):
                standing.append(rungs[o["id"]] or 0.0)
                fidelity.append(o["fidelity"])
            else:
                better = dominating(full, self.objective.signed(o["metrics"]))
                standing.append(1.0 - float(better.mean()) if len(better) else 1.0)
                fidelity.append(self.max_fidelity)
        order = np.lexsort((-np.array(fidelity), -np.array(standing)))
        return np.argsort(order, kind="stable")

    def _quality(self, living: list[dict]) -> np.ndarray:
        signed = np.array([self.objective.signed(o["metrics"]) for o in living])
        if signed.shape[1] == 1:
            quality = np.argsort(np.argsort(signed[:, 0], kind="stable"), kind="stable")
        else:
            ranks = nondominated_ranks(signed)
            crowd = np.zeros(len(living))
            for front in np.unique(ranks):
                crowd[ranks == front] = crowding_distance(signed[ranks == front])
            order = np.lexsort((-crowd, ranks))
            quality = np.argsort(order, kind="stable")
        return quality

    def mutate(self, config: dict) -> dict:
        """`config` with `mutations` parameters changed (`search.candidates.mutate`)."""
        return mutate(self.space, self.rng, config, changes=self.mutations, step=self.step)

    def _extra_state(self) -> dict:
        return {"members": list(self.members)}

    def _load_extra_state(self, extra: Mapping) -> None:
        self.members = [str(i) for i in extra["members"]]
        by_id = {o["id"]: o for o in self.observations}
        self._living = [by_id[i] for i in self.members]
