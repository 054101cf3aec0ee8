"""Resume from Parquet keeps every trial's status and id (no Ray: the searcher and the rows)."""

import json

import pytest

import search
from cluster.study.config import Study
from cluster.study.resume import make_searcher, open_store, reconcile
from cluster.study.store import StudyStore

STUDY = {
    "arch": "mlp",
    "compress": False,
    "train": False,
    "searcher": "random",
    "trials": 4,
    "constraints": {"params": 5000.0},
}


def _rows(searcher):
    """Final rows as the recorder writes them: completed, stopped, cost-only infeasible."""
    trials = [searcher.ask() for _ in range(3)]

    def row(trial, status, **metrics):
        config = {f"config.{k}": v for k, v in trial.config.items()}
        return {"trial": trial.id, "status": status, "final": True, **config, **metrics}

    return {
        trials[0].id: row(trials[0], "completed", val_acc=90.0, params=1000.0),
        trials[1].id: row(trials[1], "stopped", val_acc=40.0, params=1000.0, step=1),
        trials[2].id: row(trials[2], "infeasible", params=9000.0, latency_ms=1.0),
    }


def _study(tmp_path):
    return Study.from_dict({**STUDY, "dir": str(tmp_path)})


@pytest.mark.parametrize("state", ["pending", "lost"])
def test_reconcile_keeps_each_trials_status(tmp_path, state):
    study = _study(tmp_path)
    asked = make_searcher(study)
    finals = _rows(asked)
    searcher = asked if state == "pending" else make_searcher(study)  # lost: a fresh one
    assert reconcile(searcher, finals) == 3
    told = {o["id"]: o["status"] for o in searcher.observations}
    assert told == {"0": "completed", "1": "stopped", "2": "infeasible"}
    assert searcher.observations[2]["costs"] == {"params": 9000.0}
    assert searcher.observations[2]["violation"] == pytest.approx(0.8)  # (9000 - 5000) / 5000
    assert searcher.ask().id == "3"  # ids go on after the rebuilt ones
    assert reconcile(searcher, finals) == 3 and len(searcher.observations) == 3  # idempotent


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other searcher"])
def test_an_unreadable_state_is_rebuilt_from_the_rows_with_a_warning(tmp_path, damage):
    study = _study(tmp_path)
    store = StudyStore(tmp_path, make_searcher(study))
    with store.locked() as searcher:
        finals = _rows(searcher)
    path = tmp_path / "searcher.json"
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff not json")
    else:
        other = search.create("grid", study.space(), metric="val_acc").state_dict()
        path.write_text(json.dumps(other))
    with pytest.warns(RuntimeWarning, match="random state") as caught:
        store, done = open_store(study, tmp_path, None)  # no rows: the 3 trials never finished
    assert done == 0 and "searcher.json" in str(caught[0].message)
    assert len(list(tmp_path.glob("searcher.json.unreadable-*"))) == 1
    with store.locked() as searcher:
        assert searcher.observations == [] and searcher.pending == {}
    table_rows = [dict(row, study="s") for row in finals.values()]
    store, done = open_store(study, tmp_path, _table(table_rows, study))
    assert done == 3
    state = json.loads(path.read_text())
    assert [o["id"] for o in state["observations"]] == ["0", "1", "2"]


def _table(rows, study):
    import pyarrow as pa

    from cluster.study import results

    schema = results.schema(study.space(), ["val_acc", "params"])
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema)


def test_a_rebuilt_searcher_never_reuses_the_id_of_a_trial_that_was_running(tmp_path):
    study = _study(tmp_path)
    store = StudyStore(tmp_path, make_searcher(study))
    with store.locked() as searcher:
        finals = _rows(searcher)
    running = dict(finals.pop("2"), status="running", final=False)
    (tmp_path / "searcher.json").write_text("{")
    table = _table([dict(row, study="s") for row in [*finals.values(), running]], study)
    with pytest.warns(RuntimeWarning):
        store, done = open_store(study, tmp_path, table)
    with store.locked() as searcher:
        assert done == 2 and searcher.ask().id == "3"  # "2" names the lost trial's rows


def test_a_resume_forgets_a_dead_runners_trials_but_not_a_service_clients(tmp_path):
    from cluster.study.resume import prepare_dir

    study = _study(tmp_path)
    prepare_dir(study, resume=False)
    store = StudyStore(tmp_path, make_searcher(study))
    with store.locked() as searcher:
        by_runner, by_client = searcher.ask(), searcher.ask()
        store.claim(by_runner.id)
    store, done = open_store(study, tmp_path, None)
    with store.locked() as searcher:
        assert done == 0 and list(searcher.pending) == [by_client.id]
