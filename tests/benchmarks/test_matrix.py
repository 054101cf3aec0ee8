import numpy as np

from benchmarks.matrix import (
    CELLS,
    DATASETS,
    DEVICES,
    PARALLEL_CELLS,
    QUANTILES,
    _load,
    _save,
    calls_table,
    geomean,
    missing_jobs,
    ratio,
)


def test_the_cells_cover_every_dataset_device_and_percentile():
    assert len(CELLS) == len(set(CELLS)) == 12
    assert {c.device for c in CELLS} == set(DEVICES) and len(DEVICES) == 6
    assert {(c.dataset, c.quantile) for c in CELLS[:9]} == {
        (d, q) for d in DATASETS for q in QUANTILES
    }
    assert len({c.dataset for c in PARALLEL_CELLS}) == 3 and set(PARALLEL_CELLS) <= set(CELLS)


def test_a_ratio_of_two_solved_cells_is_one_and_the_mean_is_geometric():
    assert ratio(0.0, 0.0) == 1.0
    assert ratio(0.99, 0.0) == 100.0
    assert abs(geomean([4.0, 0.25, 1.0]) - 1.0) < 1e-12


def test_priced_runs_that_ended_early_are_kept_and_shown(tmp_path):
    key = (CELLS[0], "bo-priced", 1)
    path = tmp_path / "matrix.json"
    _save({key: np.zeros((2, 3))}, {key: [(40, 100), (50, 37)]}, path)
    found, calls = _load(path)
    assert found[key].shape == (2, 3) and calls[key] == [(40, 100), (50, 37)]
    assert "45 (50); 1 ended early (at 37)" in calls_table(calls, [CELLS[0]], ["bo-priced"])


def test_an_earlier_run_grows_to_more_seeds_without_rerunning_its_own():
    kept = (CELLS[0], "bo", 1)
    jobs = missing_jobs(CELLS[:2], ["bo"], (1,), range(10, 15), {kept: np.zeros((3, 3))})
    assert [s for c, _, _, s in jobs if c == CELLS[0]] == [13, 14]
    assert [s for c, _, _, s in jobs if c == CELLS[1]] == [10, 11, 12, 13, 14]
