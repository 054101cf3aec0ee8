"""Objectives and constraints of a search, checked once."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Objective:
    """Objectives and constraints, checked once: `metrics[i]` is optimized in `modes[i]`."""

    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    constraints: tuple[tuple[str, float], ...]

    @classmethod
    def build(cls, metric, mode, constraints) -> Objective:
        metrics = (metric,) if isinstance(metric, str) else tuple(metric or ())
        modes = (mode,) if isinstance(mode, str) else tuple(mode or ())
        if not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError(f"metric must be a name or a list of names, got {metric!r}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metric lists a name twice: {list(metrics)}")
        if len(modes) == 1 and len(metrics) > 1:
            modes = modes * len(metrics)
        if len(modes) != len(metrics) or any(m not in ("min", "max") for m in modes):
            raise ValueError(
                f"mode must be 'min' or 'max' (one, or one per metric {list(metrics)}), "
                f"got {mode!r}"
            )
        bounds = []
        for name, bound in dict(constraints or {}).items():
            if not isinstance(bound, int | float) or isinstance(bound, bool) or math.isnan(bound):
                raise ValueError(
                    f"constraint {name!r}: the upper bound must be a number, got {bound!r}"
                )
            bounds.append((str(name), float(bound)))
        return cls(metrics, modes, tuple(bounds))

    @property
    def names(self) -> tuple[str, ...]:
        """Every metric a result must carry: objectives, then constrained costs."""
        return self.metrics + tuple(n for n, _ in self.constraints if n not in self.metrics)

    def clean(self, metrics: Mapping, *, what: str = "tell", partial: bool = False) -> dict | None:
        """The values of `names` in `metrics` as floats; None when one is NaN or inf. A missing
        name raises ValueError (with `partial`, only a missing objective does), as does a value
        that is not a number."""
        need = self.metrics if partial else self.names
        missing = [n for n in need if n not in metrics]
        if missing:
            raise ValueError(
                f"{what}: metrics lack {missing}; got {sorted(metrics)} "
                "(tell None for a failed trial)"
            )
        values = {}
        for name in (n for n in self.names if n in metrics):
            value = metrics[name]
            if not isinstance(value, int | float | np.number) or isinstance(value, bool):
                raise ValueError(f"{what}: metric {name!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                return None
            values[name] = float(value)
        return values

    def violations(self, metrics: Mapping) -> dict[str, float]:
        """Each bound `metrics` break, by its relative excess `(value - bound) / bound` (0.25:
        25% over); bounds whose metric is absent are skipped. Empty when feasible."""
        return {
            name: (metrics[name] - bound) / max(abs(bound), 1e-12)
            for name, bound in self.constraints
            if name in metrics and metrics[name] > bound
        }

    def violation(self, metrics: Mapping) -> float:
        """The sum of `violations(metrics)` (0 when feasible)."""
        return sum(self.violations(metrics).values())

    def signed(self, metrics: Mapping) -> np.ndarray:
        """Objective values turned to minimization, shape `(len(metrics),)`."""
        return np.array(
            [
                metrics[m] if mode == "min" else -metrics[m]
                for m, mode in zip(self.metrics, self.modes)
            ]
        )
