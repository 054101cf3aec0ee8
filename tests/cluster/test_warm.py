"""Warm start (`warm_start:`, `paretune run --warm-start DIR`): earlier studies' trials seed the
searcher; on Branin a warm `bo` reaches the optimum in fewer trials than a cold one; through
`paretune run` the warm trials are rows of the new study, never run again, free of the budget,
and a resume adds them once."""

import json
import math
import textwrap

import pytest
import yaml

import search
from cluster.cli.commands import main
from cluster.raytune import runner
from cluster.study import results, warm
from cluster.study.config import ConfigError, Study, read
from cluster.study.resume import load_study, make_searcher, prepare_dir
from spaces import Float, Space

BRANIN_MIN = 0.397887


def _branin(config) -> float:
    x1, x2 = config["x1"], config["x2"]
    quadratic = (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
    return quadratic + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def _trials_to(searcher, regret: float, cap: int) -> int:
    """Trials `searcher` runs until one is within `regret` of Branin's minimum (`cap + 1`: none)."""
    for number in range(1, cap + 1):
        trial = searcher.ask()
        loss = _branin(trial.config)
        searcher.tell(trial.id, {"loss": loss})
        if loss - BRANIN_MIN <= regret:
            return number
    return cap + 1


def test_a_warm_bo_reaches_the_branin_optimum_in_fewer_trials_than_a_cold_one():
    space = Space({"x1": Float(-5.0, 10.0), "x2": Float(0.0, 15.0)})
    earlier = search.create("random", space, metric="loss", mode="min", seed=100)
    for _ in range(20):  # an earlier study: 20 random trials, the best 1.4 above the minimum
        trial = earlier.ask()
        earlier.tell(trial.id, {"loss": _branin(trial.config)})
    seen = {space.canonical(o["config"]) for o in earlier.observations}
    for seed in (0, 1, 2):
        options = {"metric": "loss", "mode": "min", "seed": seed, "candidates": 128}
        cold = _trials_to(search.create("bo", space, **options), 0.2, cap=12)
        warmed = search.create("bo", space, **options)
        for record in earlier.observations:
            warmed.add(record["config"], record["metrics"])
        warm_trials = _trials_to(warmed, 0.2, cap=12)
        assert warm_trials < cold, (seed, warm_trials, cold)  # measured: 2 against 13 (none)
        asked = [o["config"] for o in warmed.observations[20:]]
        assert not {space.canonical(c) for c in asked} & seen  # never run again


TRAINABLE = """
def train(config, report):
    report(score=config["a"] * 10 + config["b"])
    return None
"""
SPACE = {"a": [1, 2, 3], "b": [1, 2, 3]}  # 9 configs


def _study_file(folder, name: str, trials: int, space=SPACE) -> str:
    (folder / "warm_train.py").write_text(textwrap.dedent(TRAINABLE))
    raw = {
        "name": name,
        "dir": str(folder / name),
        "trainable": "warm_train:train",
        "space": space,
        "objectives": {"score": "max"},
        "searcher": "bo",
        "searcher_options": {"n_initial": 2, "candidates": 64},
        "scheduler": "fifo",
        "trials": trials,
        "parallel": 1,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def earlier(local_ray, tmp_path_factory):
    """An earlier study of 5 of the 9 configs, run once for this module's tests."""
    folder = tmp_path_factory.mktemp("warm")
    runner.run(read(_study_file(folder, "old", 5)))
    return folder


def test_paretune_run_warm_start_seeds_the_study_and_a_resume_adds_nothing(earlier, capsys):
    old = results.load(earlier / "old").to_pylist()
    path = _study_file(earlier, "new", 4)
    assert main(["run", path, "--warm-start", str(earlier / "old")]) == 0
    rows = results.load(earlier / "new").to_pylist()
    warm_rows = [r for r in rows if r["warm_from"]]
    assert len(rows) == 9 and len(warm_rows) == 5  # 5 warm rows + the budget of 4, all run
    assert {r["warm_from"] for r in warm_rows} == {str(earlier / "old")}
    by_trial = {r["trial"]: r for r in old}
    for row in warm_rows:
        source = by_trial[row["warm_trial"]]
        assert (row["config.a"], row["config.b"], row["score"]) == (
            source["config.a"],
            source["config.b"],
            source["score"],
        )
        assert row["phase"] == "warm" and row["status"] == "completed"
    configs = {(r["config.a"], r["config.b"]) for r in rows}
    assert len(configs) == 9  # every config once: the warm ones were never run again
    state = json.loads((earlier / "new" / "searcher.json").read_text())
    assert len(state["observations"]) == 9 and warm.count(earlier / "new") == 5
    assert load_study(earlier / "new").warm_start == (str(earlier / "old"),)
    runner.run(load_study(earlier / "new"), resume=True)  # the warm start is not applied again
    again = results.load(earlier / "new", every_step=True).to_pylist()
    assert sum(bool(r.get("warm_from")) for r in again) == 5
    assert len(json.loads((earlier / "new" / "searcher.json").read_text())["observations"]) == 9


def test_a_space_with_other_parameters_is_refused_naming_them(earlier, capsys):
    other = {"a": [1, 2], "c": [1, 2, 3]}
    path = _study_file(earlier, "other", 2, space=other)
    assert main(["run", path, "--warm-start", str(earlier / "old")]) == 2
    error = capsys.readouterr().err
    assert "missing ['c']" in error and "extra ['b']" in error
    choice = '{"type": "choice", "options": '
    assert f"a is {choice}[1, 2, 3]}} there, {choice}[1, 2]}} here" in error
    assert not (earlier / "other" / "study.json").exists()  # nothing written
    with pytest.raises(ConfigError, match="warm_start: a study folder or a list of them"):
        Study.from_dict({"warm_start": 3})
    missing = Study.from_dict({"dir": str(earlier / "x"), "warm_start": [str(earlier / "gone")]})
    with pytest.raises(ConfigError, match="gone' holds no study"):
        prepare_dir(missing, resume=False)


def test_the_same_parameters_with_narrower_ranges_take_the_configs_that_fit(earlier):
    narrow = read(_study_file(earlier, "narrow", 2, space={"a": [1, 2], "b": [1, 2, 3]}))
    narrow = warm.added(narrow, [str(earlier / "old")])
    folder = prepare_dir(narrow, resume=False)
    old = results.load(earlier / "old").to_pylist()
    fits = sorted(r["trial"] for r in old if r["config.a"] != 3)
    with pytest.warns(RuntimeWarning, match="outside this study's space"):
        table = warm.seed(narrow, make_searcher(narrow), folder, None)
    rows = table.to_pylist()
    assert sorted(r["warm_trial"] for r in rows) == fits and len(fits) < 5
    assert [r["trial"] for r in rows] == [str(i) for i in range(len(fits))]
    assert warm.seed(narrow, make_searcher(narrow), folder, table) is table  # once
