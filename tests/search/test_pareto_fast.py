import numpy as np
import pytest

from search.pareto import dominating, non_dominated


def brute_force(points: np.ndarray) -> np.ndarray:
    """The definition, row by row (the implementation before the sweep)."""
    return np.array([not dominating(points, p).any() for p in points], dtype=bool)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_with_ties_and_duplicates(d, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    points = rng.integers(0, 6, (n, d)).astype(float)  # few levels: many ties and duplicates
    points[rng.random(n) < 0.1] = points[0]
    if seed % 2:
        points[rng.random((n, d)) < 0.05] = np.inf
        points[rng.random((n, d)) < 0.05] = -np.inf
    np.testing.assert_array_equal(non_dominated(points), brute_force(points))


@pytest.mark.parametrize("d", [2, 3])
def test_matches_brute_force_on_continuous_points_and_nan(d):
    rng = np.random.default_rng(7)
    points = rng.random((300, d))
    points[::37, 0] = np.nan
    np.testing.assert_array_equal(non_dominated(points), brute_force(points))


def test_edge_cases():
    assert non_dominated(np.empty((0, 2))).shape == (0,)
    assert non_dominated(np.array([[1.0, 1.0], [1.0, 1.0]])).tolist() == [True, True]
    assert non_dominated(np.array([[1.0, 2.0], [1.0, 1.0]])).tolist() == [False, True]
    assert non_dominated(np.array([[2.0, 1.0], [1.0, 1.0]])).tolist() == [False, True]


def test_two_objectives_scale_to_a_large_front():
    x = np.linspace(0.0, 1.0, 200_000)
    points = np.column_stack([x, 1.0 - x])  # every point on the front
    assert non_dominated(points).all()
    assert non_dominated(points + [0.0, 1e-3])[:-1].all()
