import itertools

import numpy as np
import pytest

from search import hypervolume, pareto_front
from search.pareto import hypervolume_min

ROWS = [
    {"acc": 0.90, "ms": 5.0},
    {"acc": 0.80, "ms": 2.0},
    {"acc": 0.85, "ms": 6.0},  # dominated by the first
    {"acc": 0.95, "ms": 9.0},
    {"acc": 0.80, "ms": 3.0},  # dominated by the second
]


def test_front_by_hand():
    front = pareto_front(ROWS, ["acc", "ms"], ["max", "min"])
    assert front == [ROWS[0], ROWS[1], ROWS[3]]


def test_hypervolume_by_hand_2d():
    # reference acc 0.7, ms 10: boxes (0.95-0.7)*(10-9) + (0.90-0.7)*(9-5) + (0.80-0.7)*(5-2)
    expected = 0.25 * 1 + 0.20 * 4 + 0.10 * 3
    assert hypervolume(ROWS, ["acc", "ms"], ["max", "min"], [0.7, 10.0]) == pytest.approx(expected)


def test_hypervolume_by_hand_3d():
    points = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0], [3.0, 3.0, 1.0]])
    # inclusion-exclusion over the boxes to ref (4, 4, 4)
    boxes = [np.prod(4 - p) for p in points]
    pair = [np.prod(4 - np.maximum(a, b)) for a, b in itertools.combinations(points, 2)]
    triple = np.prod(4 - points.max(axis=0))
    assert hypervolume_min(points, np.array([4.0, 4.0, 4.0])) == pytest.approx(
        sum(boxes) - sum(pair) + triple
    )


def test_hypervolume_matches_monte_carlo_in_4d():
    rng = np.random.default_rng(0)
    points = rng.random((12, 4))
    ref = np.ones(4)
    samples = rng.random((200_000, 4))
    dominated = np.zeros(len(samples), dtype=bool)
    for p in points:
        dominated |= np.all(samples >= p, axis=1)
    assert hypervolume_min(points, ref) == pytest.approx(dominated.mean(), abs=0.01)


def test_points_beyond_the_reference_add_nothing():
    assert hypervolume([{"a": 5.0}], ["a"], ["min"], [4.0]) == 0.0
    assert hypervolume([], ["a"], ["min"], [4.0]) == 0.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="lacks"):
        pareto_front([{"acc": 1}], ["acc", "ms"], ["max", "min"])
    with pytest.raises(ValueError, match="reference has"):
        hypervolume(ROWS, ["acc", "ms"], ["max", "min"], [0.0])
