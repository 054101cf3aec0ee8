from benchmarks.rungs_study import curve, median_time, targets, time_to


def trial(at, val, test, *, latency=1.0, status="completed"):
    return {"finish_s": at, "val_acc": val, "test_acc": test, "latency_ms": latency} | {
        "status": status
    }


def test_the_curve_follows_the_best_by_validation_among_completed_trials_within_the_bound():
    trials = [
        trial(30.0, 80.0, 70.0),
        trial(10.0, 60.0, 65.0),
        trial(20.0, 90.0, 95.0, latency=3.0),  # over the bound
        trial(25.0, 99.0, 99.0, status="stopped"),
        trial(40.0, 70.0, 99.0),  # lower validation accuracy: not picked
        trial(50.0, 85.0, 60.0),  # picked by validation: the test accuracy goes down
    ]
    assert curve(trials, 2.0) == [(10.0, 65.0), (30.0, 70.0), (50.0, 60.0)]


def test_time_to_target_is_the_first_time_the_curve_reaches_it_within_the_budget():
    points = [(10.0, 65.0), (30.0, 70.0), (50.0, 60.0), (90.0, 80.0)]
    assert time_to(points, 68.0, budget=100.0) == 30.0
    assert time_to(points, 75.0, budget=100.0) == 90.0
    assert time_to(points, 75.0, budget=60.0) is None


def test_targets_come_from_random_asha_and_a_miss_counts_as_the_budget():
    runs = [
        {"method": "random-asha", "curve": [(5.0, 60.0)]},
        {"method": "random-asha", "curve": [(5.0, 70.0), (200.0, 90.0)]},  # 90 after the budget
        {"method": "random-asha", "curve": []},  # nothing within the bound: 0
        {"method": "bo-rungs", "curve": [(5.0, 99.0)]},
    ]
    assert targets(runs, budget=100.0) == {"A": 60.0, "B": 61.0}
    assert targets(runs[3:], budget=100.0) is None
    assert median_time(runs[:3], 65.0, budget=100.0) == (100.0, 2)
