"""Priced studies: the searcher prices configs on the driver with the trial's own cost function,
refusals are rows that use none of the budget, resume keeps them refusals, and a space that
barely fits the bound stops the study with a message naming it."""

import dataclasses
import json
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

import search
from cluster.raytune import runner
from cluster.study import earlier, results
from cluster.study.config import ConfigError, Study
from cluster.study.price import (
    FIRST_TRIAL_REFUSALS,
    REFUSALS_PER_TRIAL,
    SCREEN_AFTER,
    AskLater,
    ask_within_refusals,
    check_refusals,
    study_price,
)
from cluster.study.resume import load_study, make_searcher, open_store, prepare_dir
from search import calibrate
from spaces import Choice, Float, Space
from tests.cluster.test_services import _Aborted, _Context

# on 8x8 digits an MLP of width 16 runs in about 0.01 ms a batch, one of width 512 and
# 2-3 layers in 0.1-0.3 ms: the bound refuses the wide ones by a wide margin
PRICED = {
    "arch": "mlp",
    "arch_options": {"layers": [1, 3], "widths": [16, 512]},
    "train": {"lr": [1e-3, 3e-2]},
    "searcher": "random",
    "scheduler": "fifo",
    "trials": 4,
    "parallel": 2,
    "constraints": {"latency_ms": 0.05},
    "trial": {"epochs": 1, "latency_repeats": 4},
}


def _study(tmp_path, **changes):
    return Study.from_dict({**PRICED, "dir": str(tmp_path / "study"), **changes})


def test_a_study_prices_with_the_trials_costs_cached_by_architecture(tmp_path):
    study = _study(tmp_path)
    price = study_price(study)
    assert price.keys == ("arch.layers", "arch.width")  # not the learning rate
    small = {"arch.layers": 1, "arch.width": 16, "train.lr": 1e-3}
    costs = price(small)
    assert set(costs) == {"latency_ms"} and 0 < costs["latency_ms"] < 0.05
    assert price({**small, "train.lr": 2e-2}) == costs  # a hit: another lr, the same model
    assert price.stats["calls"] == 1 and price.stats["hits"] == 1
    assert price({"arch.layers": 3, "arch.width": 512, "train.lr": 1e-3})["latency_ms"] > 0.05
    assert study_price(_study(tmp_path, constraints={})) is None  # no bound: nothing to price
    assert study_price(_study(tmp_path, constraints={"params": 1e9})) is not None
    assert price.screen is None  # timed here: every config priced exactly


def test_a_study_timing_on_a_device_server_screens_its_prices(tmp_path):
    study = _study(tmp_path)
    settings = study.trial_settings()
    remote = lambda model, in_shape, **timing: 0.01  # noqa: E731 - a device server's answer
    cost = dataclasses.replace(settings.cost, latency_source=remote)
    price = study_price(study, settings=dataclasses.replace(settings, cost=cost))
    assert price.screen is not None and price.screen.after == SCREEN_AFTER
    assert price({"arch.layers": 1, "arch.width": 16}) == {"latency_ms": 0.01}


def test_a_study_bounding_costs_only_prices_the_uncompressed_twin_of_a_config(tmp_path):
    compress = {"prune": [False, True], "prune_ratio": [0.1, 0.5], "quantize": [False, True]}
    study = _study(tmp_path, compress=compress)
    twin = study_price(study).twin
    config = {"arch.layers": 1, "arch.width": 16, "train.lr": 1e-3, "compress.prune": True}
    config |= {"compress.prune_ratio": 0.3, "compress.quantize": True}
    plain = {"arch.layers": 1, "arch.width": 16, "train.lr": 1e-3}
    assert twin(config) == plain | {"compress.prune": False, "compress.quantize": False}
    both = {"val_acc": "max", "latency_ms": "min"}  # latency an objective: compression pays
    assert study_price(_study(tmp_path, compress=compress, objectives=both)).twin is None
    assert study_price(_study(tmp_path)).twin is None  # nothing to switch off


def test_too_many_refusals_a_trial_stop_naming_the_bound_and_the_cheapest(tmp_path):
    study = _study(tmp_path)
    refusal = {"priced": True, "config": {}, "costs": {"latency_ms": 0.2}, "violation": 3.0}
    cheap = {**refusal, "costs": {"latency_ms": 0.07}, "violation": 0.4}
    refused = [refusal] * (FIRST_TRIAL_REFUSALS + REFUSALS_PER_TRIAL) + [cheap]
    searcher = SimpleNamespace(observations=refused, refusals=lambda: refused, trained=lambda: 0)
    check_refusals(searcher, asked=2, study=study)  # 251 refusals for 2 trials and a third
    with pytest.raises(ConfigError) as caught:
        check_refusals(searcher, asked=1, study=study)
    text = str(caught.value)
    assert "refused 251 configs" in text and "{'latency_ms': 0.05}" in text
    assert "latency_ms 0.07 > 0.05" in text  # the cheapest model priced


@pytest.mark.parametrize("floor", [0.0, 1.0])
def test_an_ask_that_spent_its_budget_asks_again_until_refusals_stop_it(tmp_path, floor):
    # 1 config in 20 fits (none with a floor of 1) and an ask may price 3: asks spend their
    # budget in vain, and the study asks again (it does not stop) until more than the first
    # trial may take say few configs fit
    price = search.Price(lambda config: {"latency_ms": floor + config["x"]}, calls=3)
    searcher = search.create(
        "random",
        Space({"x": Float(0.0, 1.0)}),
        metric="y",
        mode="max",
        seed=3,  # its first 5 asks find nothing
        constraints={"latency_ms": 0.05},
        price=price,
    )
    recorded, study = [], _study(tmp_path)
    if not floor:
        trial = ask_within_refusals(searcher, asked=0, study=study, refused=recorded.extend)
        assert trial.config["x"] <= 0.05 and len(recorded) == 15  # 5 asks past their budget
        return
    with pytest.raises(ConfigError, match="refused 201 configs"):
        ask_within_refusals(searcher, asked=0, study=study, refused=recorded.extend)
    assert len(recorded) == FIRST_TRIAL_REFUSALS + 1


def test_asking_again_stops_after_one_budget_of_seconds_and_says_ask_later(tmp_path):
    def slow(config):  # never fits; 3 calls of 20 ms spend an ask's calls, not its 0.1 s
        time.sleep(0.02)
        return {"latency_ms": 1.0 + config["x"]}

    price = search.Price(slow, calls=3, seconds=0.1)
    searcher = search.create(
        "random",
        Space({"x": Float(0.0, 1.0)}),
        metric="y",
        seed=0,
        constraints={"latency_ms": 0.05},
        price=price,
    )
    recorded = []
    with pytest.raises(AskLater, match="price budget is spent"):
        ask_within_refusals(searcher, asked=0, study=_study(tmp_path), refused=recorded.extend)
    assert 3 < len(recorded) < REFUSALS_PER_TRIAL  # a few asks, not the refusal rule's stop
    assert len(recorded) == len(searcher.refusals())


def test_a_tight_bound_trains_the_budget_and_refusals_are_rows(local_ray, tmp_path):
    study = _study(tmp_path)
    table = runner.run(study)
    trained = table.filter(table["refused"].is_null())
    refused = table.filter(table["refused"].fill_null(False))
    assert trained.num_rows == 4 and refused.num_rows >= 1
    assert all(width == 16 or layers == 1 for width, layers in _arch(trained))
    assert all(v is not None for v in trained["val_acc"].to_pylist())  # trained, all of them
    assert set(refused["status"].to_pylist()) == {"infeasible"}
    assert all(v > 0.05 for v in refused["latency_ms"].to_pylist())
    assert refused["val_acc"].null_count == refused.num_rows  # never trained
    assert all(e.startswith("refused on price: latency_ms") for e in refused["error"].to_pylist())
    assert sum(trained["price_calls"].to_pylist()) >= 1 and sum(trained["price_s"].to_pylist()) > 0
    assert trained["price"].null_count == 0 and refused["price"].null_count == 0  # raw prices
    assert trained["start_latency_ms"].null_count == 0  # timed again before training
    state = json.loads((tmp_path / "study" / "searcher.json").read_text())
    assert state["price"]["calls"] >= refused.num_rows  # the searcher's state keeps the pricing
    # resumed after losing the searcher's state: the refusals come back as refusals
    (tmp_path / "study" / "searcher.json").unlink()
    (tmp_path / "study" / "searcher.journal").unlink(missing_ok=True)
    store, done = open_store(study, tmp_path / "study", results.load(study.dir, every_step=True))
    assert done == 4 and store.searcher.trained() == 4
    lost = [o for o in store.searcher.observations if o.get("priced")]
    assert sorted(o["id"] for o in lost) == sorted(refused["trial"].to_pylist())
    again = runner.run(study, resume=True)  # the budget is spent: nothing more runs
    assert again.num_rows == table.num_rows


def _arch(table):
    return zip(table["config.arch.width"].to_pylist(), table["config.arch.layers"].to_pylist())


def test_a_bound_nothing_fits_stops_the_study_with_a_message(local_ray, tmp_path):
    study = _study(tmp_path, constraints={"latency_ms": 1e-6})
    with pytest.raises(
        ConfigError, match=r"study 'study' stopped: nothing fits latency_ms <= 1e-06"
    ):
        runner.run(study)
    table = results.load(study.dir)
    assert table.num_rows >= 1 and all(table["refused"].to_pylist())  # refused, none trained


def test_paretune_search_takes_a_price(local_ray):
    from ray import tune

    from cluster.raytune import ParetuneSearch

    space = Space({"width": Choice((8, 16, 32, 64)), "lr": Float(1e-3, 1e-1, log=True)})
    price = search.Price(lambda config: {"size": float(config["width"])}, keys=["width"])
    tuner = tune.Tuner(
        lambda config: {"acc": config["width"] * config["lr"], "size": float(config["width"])},
        tune_config=tune.TuneConfig(
            search_alg=ParetuneSearch(
                "random",
                space,
                metric="acc",
                mode="max",
                constraints={"size": 20},
                price=price,
                seed=0,  # its first asks include a width over the bound (1 in 16 draws do not)
            ),
            num_samples=4,
        ),
    )
    grid = tuner.fit()
    assert all(r.config["width"] <= 16 for r in grid) and len(grid) == 4
    searcher = tuner._local_tuner._tune_config.search_alg.paretune
    assert searcher.trained() == 4 and any(o.get("priced") for o in searcher.observations)


def test_the_study_service_prices_on_the_driver(tmp_path):
    from cluster.remote import service, wire

    study = _study(tmp_path, trials=3)
    prepare_dir(study, resume=False)
    handlers = service.StudyService(tmp_path / "study").handlers()
    asked = []
    for _ in range(3):
        answer, _ = wire.decode(handlers["Ask"](wire.encode({"study": "study"}), _Context()))
        asked.append(answer["config"])
    assert all(c["arch.width"] == 16 or c["arch.layers"] == 1 for c in asked)
    table = results.load(study.dir)
    assert table.num_rows >= 1 and all(table["refused"].to_pylist())  # refusals; none told yet
    state, _ = wire.decode(handlers["State"](wire.encode({"study": "study"}), _Context()))
    assert state["finished"] == 0 and len(state["pending"]) == 3
    tight = _study(tmp_path / "tight", constraints={"latency_ms": 1e-6})
    prepare_dir(tight, resume=False)
    handlers = service.StudyService(tmp_path / "tight" / "study").handlers()
    with pytest.raises(_Aborted) as caught:
        handlers["Ask"](wire.encode({"study": "study"}), _Context())
    code, details = caught.value.args
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "nothing fits latency_ms" in details


def test_a_priced_trial_is_judged_on_its_price_and_times_its_model_before_training(tmp_path):
    from cluster.raytune.trainable import run_and_report

    settings = _study(tmp_path).trial_settings()
    config = {"arch.layers": 1, "arch.width": 16, "train.lr": 1e-2}
    sent = []
    run_and_report(config, settings, send=lambda m, s: sent.append(m), costs={"latency_ms": 0.01})
    assert sent[-1]["final"] and sent[-1]["status"] == "completed", sent[-1].get("error")
    assert all(m["start_latency_ms"] > 0 for m in sent)  # a calibration pair at every rung
    run_and_report(config, settings, send=lambda m, s: sent.append(m), costs={"latency_ms": 1.0})
    assert sent[-1]["status"] == "infeasible" and "val_acc" not in sent[-1]  # never trained
    assert sent[-1]["latency_ms"] == 1.0  # judged on the price it was given


def test_a_trial_stopped_at_a_rung_calibrates_the_price_with_its_latency_before_training():
    from cluster.raytune.ledger import TunerLedger

    price = search.Price(lambda config: {"latency_ms": 1.0})
    searcher = search.create(
        "random",
        _study_space(),
        metric="val_acc",
        mode="max",
        seed=0,
        max_fidelity=4,
        constraints={"latency_ms": 5.0},
        price=price,
    )
    ledger = TunerLedger(searcher, max_t=4)
    for n, tune_id in enumerate(("a", "b", "c")):
        ledger.ask(tune_id)
        report = {"val_acc": 50.0, "start_latency_ms": 1.5 + n, "training_iteration": 1}
        ledger.result(tune_id, report)
        assert searcher.rungs[ledger.ids[tune_id]][0]["metrics"]["latency_ms"] == 1.5 + n
        ledger.complete(tune_id, {**report, "training_iteration": 2}, error=False)  # ASHA
    stopped = [o for o in searcher.observations if o["status"] == "stopped"]
    assert [o["metrics"]["latency_ms"] for o in stopped] == [1.5, 2.5, 3.5]
    assert searcher.price_factors() == {"latency_ms": pytest.approx(3.5)}  # few: the largest


def _study_space():
    return Space({"width": Choice([8, 16]), "lr": Float(1e-3, 1e-1, log=True)})


def _served(study, trials: int, *, ratio: float):
    """`study` asked and told `trials` times through its service, each trial measuring `ratio`
    x its price (a study prepared already is served as it is); returns its folder and
    searcher."""
    from cluster.remote import service, wire

    folder = Path(study.dir)
    if not (folder / "study.json").exists():
        prepare_dir(study, resume=False)
    served = service.StudyService(folder)
    handlers, searcher = served.handlers(), served.store.searcher
    for _ in range(trials):
        answer, _ = wire.decode(handlers["Ask"](wire.encode({"study": study.name}), _Context()))
        trial = answer["trial_id"]
        measured = ratio * searcher.asked_costs.get(trial, {"latency_ms": 0.01})["latency_ms"]
        tell = {"study": study.name, "trial_id": trial}
        tell["metrics"] = {"val_acc": 0.5, "latency_ms": measured}
        handlers["Tell"](wire.encode(tell), _Context())
    return folder, searcher


def test_a_searcher_rebuilt_from_the_rows_calibrates_as_the_lost_one(tmp_path):
    study = _study(tmp_path, trials=8)
    folder, searcher = _served(study, 7, ratio=1.5)  # 1.5 x its price (a loaded machine)
    factors = searcher.price_factors()
    assert factors == {"latency_ms": pytest.approx(1.5)}
    table = results.load(study.dir, every_step=True)
    told = table.filter(table["refused"].is_null())
    assert told.num_rows == 7 and told["price"].null_count == 0  # the rows keep the raw price
    (folder / "searcher.json").unlink()  # the state lost: the searcher is rebuilt from the rows
    (folder / "searcher.journal").unlink(missing_ok=True)
    store, done = open_store(study, folder, table, price=study_price(study))
    assert done == 7 and store.searcher.price_factors() == factors
    refused = [o for o in searcher.observations if o.get("priced")]
    assert store.searcher.refusals() == searcher.refusals() and refused  # with their raw price


def test_a_study_calibrated_from_an_earlier_one_prices_its_first_ask_with_its_pairs(tmp_path):
    earlier = _study(tmp_path, name="arch", dir=str(tmp_path / "arch"), trials=8)
    _served(earlier, 7, ratio=1.5)
    study = _study(tmp_path, calibrate_from=[str(tmp_path / "arch")])
    prepare_dir(study, resume=False)
    shutil.rmtree(tmp_path / "arch")  # read once, when the study was made: kept in its folder
    price = study_price(load_study(study.dir))  # as a resume or the study service prices
    assert price.ratios == {"latency_ms": pytest.approx((1.5,) * 7)}
    searcher = make_searcher(study, price=price)
    trial = searcher.ask()  # its first ask: priced at 1.5 x, as the earlier study's last
    raw = searcher.asked_costs[trial.id]["latency_ms"]
    assert trial.costs["latency_ms"] == pytest.approx(1.5 * raw)
    folder, _ = _served(study, 1, ratio=1.0)
    assert study_price(_study(tmp_path, dir=str(tmp_path / "plain"))).ratios == {}  # none named
    # the next study calibrated from this one reads this one's own pair, not the carried ones
    third = _study(tmp_path, dir=str(tmp_path / "third"), calibrate_from=[str(folder)])
    prepare_dir(third, resume=False)
    assert study_price(third).ratios == {"latency_ms": pytest.approx((1.0,))}


def test_an_earlier_studys_own_priced_trials_are_read_as_measured_before_training_if_stopped():
    rows = [
        {"trial": "10", "status": "completed", "price": '{"latency_ms": 2.0}', "latency_ms": 3.0},
        {"trial": "2", "status": "stopped", "price": '{"latency_ms": 2.0}', "latency_ms": None}
        | {"start_latency_ms": 5.0},  # stopped at a rung: timed before training
        {"trial": "3", "status": "infeasible", "price": '{"latency_ms": 1.0}', "latency_ms": 9.0}
        | {"refused": True},  # refused on price: never measured
        {"trial": "4", "status": "completed", "price": '{"latency_ms": 1.0}', "latency_ms": 9.0}
        | {"warm_from": "/studies/older"},  # another study's trial
        {"trial": "5", "status": "completed", "price": None, "latency_ms": 9.0},  # unpriced
        {"trial": "6", "status": "failed", "price": '{"latency_ms": 1.0}', "latency_ms": None},
    ]
    assert calibrate.ratios(earlier._priced_records(rows, ["latency_ms"])) == {
        "latency_ms": [2.5, 1.5]  # in trial order: 2 before 10
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"calibrate_from": "NOWHERE"}, r"calibrate_from: '.*NOWHERE' holds no study"),
        ({"calibrate_from": "study"}, r"calibrate_from: '.*study' is this study's own folder"),
        ({"calibrate_from": "empty"}, r"calibrate_from: '.*empty' has no results yet"),
        ({"calibrate_from": "unbounded"}, r"'.*unbounded' holds no trial priced and then measured"),
        ({"trial": {"epochs": 1, "latency_repeats": 8}}, r"latency_repeats 4 there, 8 here"),
        ({"deploy": "torch"}, r"runtime 'onnxruntime' there, 'torch' here"),
        ({"calibrate_from": 3}, r"calibrate_from: a study folder or a list of them, got 3"),
        ({"constraints": {}}, r"calibrate_from: this study prices nothing to calibrate"),
    ],
)
def test_calibrating_from_a_study_it_cannot_use_is_refused_before_anything_is_written(
    tmp_path, changes, message
):
    _served(_study(tmp_path, name="arch", dir=str(tmp_path / "arch"), trials=2), 1, ratio=1.0)
    prepare_dir(_study(tmp_path, name="empty", dir=str(tmp_path / "empty")), resume=False)
    unbounded = _study(tmp_path, name="unbounded", dir=str(tmp_path / "unbounded"), constraints={})
    _served(unbounded, 1, ratio=1.0)
    raw = {**PRICED, "dir": str(tmp_path / "study"), "calibrate_from": str(tmp_path / "arch")}
    raw |= {
        k: str(tmp_path / v) if k == "calibrate_from" and isinstance(v, str) else v
        for k, v in changes.items()
    }
    with pytest.raises(ConfigError, match=message):
        prepare_dir(Study.from_dict(raw), resume=False)
    assert not (tmp_path / "study" / "study.json").exists()


def test_paretune_run_calibrate_from_names_a_folder_holding_no_study(tmp_path, capsys):
    from cluster.cli.commands import main

    path = tmp_path / "study.yaml"
    path.write_text(json.dumps({**PRICED, "dir": str(tmp_path / "study")}))  # JSON is YAML
    assert main(["run", str(path), "--calibrate-from", str(tmp_path / "gone")]) == 2
    assert re.search(r"calibrate_from: '.*gone' holds no study", capsys.readouterr().err)
    assert not (tmp_path / "study" / "study.json").exists()  # nothing written
