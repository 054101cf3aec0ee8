"""The darts searcher: its ask/tell protocol, and a supernet search run as a study from YAML."""

import json

import pytest

import search
import spaces
from cluster.raytune import runner
from cluster.study import results
from cluster.study.config import read
from search import Exhausted
from search.darts import SUPERNET
from trainers.supernet.loop import SUPERNET as TRAINERS_SUPERNET


def _joint():
    return spaces.Space.combine({"arch": spaces.nb201(), "train": spaces.training()})


def _derived(searcher, supernet):
    arch = {f"arch.{k}": "nor_conv_3x3" for k in spaces.nb201_edge_names()}
    config = {**arch, **supernet.config[SUPERNET]["rest"]}
    searcher.revise(supernet.id, config)  # as the study's recorder does with `trained_with`
    searcher.tell(supernet.id, {"val_acc": 50.0, "latency_ms": 1.0})
    return arch


def test_the_supernet_comes_first_then_its_derived_architecture():
    assert SUPERNET == TRAINERS_SUPERNET
    searcher = search.create(
        "darts",
        _joint(),
        metric="val_acc",
        seed=0,
        epochs=3,
        constraints={"latency_ms": 2.0},
        cost_weight=0.5,
    )
    supernet = searcher.ask()
    settings = supernet.config[SUPERNET]
    assert settings["kind"] == "nb201" and settings["bound"] == 2.0 and settings["epochs"] == 3
    searcher.space.validate(
        {**{f"arch.{k}": "none" for k in spaces.nb201_edge_names()}, **settings["rest"]}
    )
    meanwhile = searcher.ask()  # a parallel slot while the supernet trains: a random config
    searcher.space.validate(meanwhile.config)
    searcher.discard(supernet.id)  # its worker was lost (a killed study, resumed)
    again = searcher.ask()
    assert {**again.config[SUPERNET], "rest": None} == {**settings, "rest": None}
    supernet = again
    arch = _derived(searcher, supernet)
    state = json.loads(json.dumps(searcher.state_dict()))
    nexts = [searcher.ask().config for _ in range(3)]
    assert all({k: c[k] for k in arch} == arch for c in nexts)
    assert len({c["train.lr"] for c in nexts}) == 3  # training hyperparameters still drawn
    resumed = search.create(
        "darts",
        _joint(),
        metric="val_acc",
        seed=9,
        epochs=3,
        constraints={"latency_ms": 2.0},
        cost_weight=0.5,
    )
    resumed.load_state_dict(state)
    assert [resumed.ask().config for _ in range(3)] == nexts


def test_an_architecture_only_space_ends_after_the_derived_trial():
    searcher = search.create("darts", spaces.nb201(), metric="val_acc", seed=0)
    supernet = searcher.ask()
    searcher.revise(supernet.id, {k: "skip_connect" for k in spaces.nb201_edge_names()})
    searcher.tell(supernet.id, {"val_acc": 40.0})
    searcher.ask()
    with pytest.raises(Exhausted):
        searcher.ask()


def test_a_failed_supernet_is_asked_again_and_bad_options_are_named():
    searcher = search.create("darts", spaces.chain(), metric="val_acc", seed=0)
    searcher.tell(searcher.ask().id, None)
    assert SUPERNET in searcher.ask().config
    with pytest.raises(ValueError, match="nb201 cell or the chain"):
        search.create("darts", spaces.mlp(), metric="val_acc")
    with pytest.raises(ValueError, match="variant 'snas'"):
        search.create("darts", spaces.nb201(), metric="val_acc", variant="snas")


STUDY = """
name: tiny-darts
dir: {dir}
arch: nb201
dataset: digits
train: false
compress: false
searcher: darts
searcher_options: {{variant: gdas, epochs: 1, samples: 64, cost_metric: params, cost_weight: 1.0}}
constraints: {{params: 20000}}
scheduler: fifo
trials: 3
parallel: 1
trial: {{epochs: 1, latency_repeats: 2, model_options: {{channels: 4}}}}
"""


def test_a_supernet_search_runs_as_a_study_from_yaml_and_resumes(local_ray, tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(dir=tmp_path / "study"))
    study = read(path)
    table = runner.run(study)
    assert table["trial"].to_pylist() == ["0", "1"]  # the supernet, then what it derived
    supernet, derived = table.to_pylist()
    edges = [f"config.arch.{k}" for k in spaces.nb201_edge_names()]
    assert [supernet[k] for k in edges] == [derived[k] for k in edges]
    assert {supernet["status"], derived["status"]} <= {"completed", "infeasible"}
    record = json.loads(supernet["records"])[0]
    assert record["variant"] == "gdas" and set(record["alphas"]) == set(spaces.nb201_edge_names())
    assert record["cost_table"]["metric"] == "params"
    every = results.load(study.dir, every_step=True).to_pylist()
    assert [r["phase"] for r in every if r["trial"] == "0"] == ["supernet", None]
    again = runner.run(study, resume=True)
    assert again.num_rows == 2


def test_a_darts_study_needs_a_cell_or_chain_and_fifo(tmp_path):
    from cluster.study.config import ConfigError, Study

    base = {"dir": str(tmp_path / "s"), "searcher": "darts", "scheduler": "fifo"}
    Study.from_dict({**base, "arch": "chain"})
    with pytest.raises(ConfigError, match="arch must be nb201 or chain"):
        Study.from_dict({**base, "arch": "mlp"})
    with pytest.raises(ConfigError, match="scheduler must be fifo"):
        Study.from_dict({**base, "arch": "nb201", "scheduler": "asha"})


def test_a_supernet_row_is_uncompressed_as_it_ran_and_exports(local_ray, tmp_path):
    from cluster.cli.export import export_trial
    from cluster.study.front import compressed

    text = STUDY.replace("train: false", "train: true").replace("compress: false", "compress: true")
    path = tmp_path / "study.yaml"
    path.write_text(text.replace("trials: 3", "trials: 1").format(dir=tmp_path / "study"))
    study = read(path)
    table = runner.run(study)
    (row,) = table.to_pylist()
    switches = {k: v for k, v in row.items() if k.startswith("config.compress.")}
    assert switches and not any(switches.values())  # it compressed nothing: every switch off
    assert compressed(table) == [False]
    done = export_trial(study.dir, "0", tmp_path / "derived.onnx")
    assert done["bytes"] > 0 and done["val_acc"] == row["val_acc"]
