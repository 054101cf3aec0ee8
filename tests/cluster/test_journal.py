"""The study's searcher journal: every change appended, a snapshot now and then, every kill -9
guarantee kept, older state files read, and the bytes written per trial flat."""

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import search
from cluster.study import journal
from cluster.study import store as store_module
from cluster.study.store import StateUnreadable, StudyStore
from search.testing import mixed_space, toy_metrics
from spaces import Float, Space
from spaces.util import write_json

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = {
    "random": {},
    "grid": {},  # its position: extras an ask changes
    "evolution": {"population": 4, "sample_size": 2},  # learns in `_observe`
    "bo": {"n_initial": 40},  # its design: extras an ask changes (no model fitted, so quick)
    "rl": {},  # a controller trained on each tell
}


def _searcher(name="random", seed=1):
    return search.create(name, mixed_space(), metric="score", seed=seed, **OPTIONS[name])


def _state(store) -> str:
    return json.dumps(store.searcher.state_dict())


def _round(store, *, fail=False, revise=False):
    """An ask and a tell, as the runner and the service make them."""
    with store.locked() as searcher:
        trial, other = searcher.ask(), searcher.ask()
        if revise:
            searcher.revise(other.id, trial.config)
        searcher.tell(trial.id, None if fail else toy_metrics(trial.config))
    with store.locked() as searcher:
        searcher.tell(other.id, toy_metrics(searcher.pending[other.id]), status="stopped")
    return trial.id, other.id


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_two_processes_see_every_change_and_a_reader_replays_it_exactly(
    tmp_path, monkeypatch, name
):
    monkeypatch.setattr(store_module, "JOURNAL_MIN_BYTES", 1500)  # snapshots every few rounds
    first, second = StudyStore(tmp_path, _searcher(name)), StudyStore(tmp_path, _searcher(name))
    for step in range(8):
        _round(first if step % 3 else second, fail=step == 4, revise=step == 2)
        for store in (first, second):  # each caught up before its next operation
            with store.locked():
                pass
        assert _state(first) == _state(second)
    with StudyStore(tmp_path, _searcher(name, seed=99)).locked() as searcher:
        assert json.dumps(searcher.state_dict()) == _state(first)
        assert searcher.ask() == first.searcher.ask()  # and goes on identically
    assert len(first.searcher.observations) == 16


def _told_ids(folder) -> list[str]:
    with StudyStore(folder, _searcher()).locked() as searcher:
        return [o["id"] for o in searcher.observations]


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    store = StudyStore(tmp_path, _searcher())
    for _ in range(3):
        _round(store)
    path = tmp_path / journal.JOURNAL_FILE
    whole = path.read_bytes()
    last = whole[:-1].rfind(b"\n") + 1
    path.write_bytes(whole[: last + (len(whole) - last) // 2])  # the last tell half written
    assert _told_ids(tmp_path) == ["0", "1", "2", "3", "4"]  # "5" pending, its tell torn
    with StudyStore(tmp_path, _searcher()).locked() as searcher:
        assert list(searcher.pending) == ["5"]
        searcher.tell("5", {"score": 1.0})
    assert path.read_bytes().count(b"\n") == whole.count(b"\n")  # the torn part cut, not kept
    assert _told_ids(tmp_path) == ["0", "1", "2", "3", "4", "5"]


def test_a_damaged_journal_line_is_unreadable_and_set_aside_with_the_state(tmp_path):
    from cluster.study.config import Study
    from cluster.study.resume import open_store

    study = Study.from_dict(
        {"arch": "mlp", "compress": False, "train": False, "searcher": "random", "trials": 4}
        | {"dir": str(tmp_path)}
    )
    store, _ = open_store(study, tmp_path, None)
    with store.locked() as searcher:
        searcher.tell(searcher.ask().id, {"val_acc": 1.0})
        searcher.ask()
    path = tmp_path / journal.JOURNAL_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[2:]))
    with pytest.raises(StateUnreadable, match="searcher.journal"), store.locked():
        pass
    with pytest.warns(RuntimeWarning, match="random state"):
        store, done = open_store(study, tmp_path, None)
    assert len(list(tmp_path.glob("searcher.journal.unreadable-*"))) == 1
    with store.locked() as searcher:
        assert searcher.observations == [] and searcher.pending == {}


def test_killed_between_the_snapshot_and_its_journal_nothing_is_applied_twice(tmp_path):
    store = StudyStore(tmp_path, _searcher())
    for _ in range(3):
        _round(store)
    expected = _state(store)
    # the snapshot of the whole state written, its new journal not yet begun
    write_json(tmp_path / "searcher.json", {**store.searcher.state_dict(), "journal": "next"})
    # and another snapshot's write cut short: a partial temporary file
    (tmp_path / ".searcher.json.x1.tmp").write_text(expected[:100])
    again = StudyStore(tmp_path, _searcher(seed=7))
    with again.locked():
        assert _state(again) == expected  # each tell once: a second would raise
    _round(again)
    assert len(_told_ids(tmp_path)) == 8
    again.compact()
    assert not list(tmp_path.glob(".searcher.json.*.tmp"))


def test_an_older_studys_state_file_loads_and_is_journaled_after(tmp_path):
    searcher = _searcher()
    for _ in range(4):
        trial = searcher.ask()
        searcher.tell(trial.id, toy_metrics(trial.config))
    write_json(tmp_path / "searcher.json", searcher.state_dict())  # as stores wrote it before
    store = StudyStore(tmp_path, _searcher(seed=5))
    with store.locked() as loaded:
        assert loaded.state_dict() == searcher.state_dict()
    _round(store)
    assert json.loads((tmp_path / "searcher.json").read_text())["journal"]  # a snapshot now
    _round(store)
    assert _told_ids(tmp_path) == [str(i) for i in range(8)]


def test_a_change_not_made_through_the_yielded_searcher_is_saved_whole(tmp_path):
    store = StudyStore(tmp_path, _searcher())
    _round(store)
    with store.locked():
        store.searcher.add(store.searcher.observations[0]["config"], {"score": 2.0})
    trial = store.searcher.ask()  # outside any block
    with store.locked() as searcher:
        assert searcher.pending == {trial.id: trial.config}
    with StudyStore(tmp_path, _searcher(seed=3)).locked() as searcher:
        assert json.dumps(searcher.state_dict()) == _state(store)


def test_a_told_budget_and_a_compaction_leave_the_whole_state_in_the_snapshot(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"trials": 4}))
    store = StudyStore(tmp_path, _searcher())
    with store.locked():
        pass  # the first snapshot: empty
    _round(store)
    assert json.loads((tmp_path / "searcher.json").read_text())["observations"] == []
    store.compact()
    assert len(json.loads((tmp_path / "searcher.json").read_text())["observations"]) == 2
    _round(store)  # the budget of 4 told
    assert len(json.loads((tmp_path / "searcher.json").read_text())["observations"]) == 4


SPACE_10D = Space({f"x{i}": Float(0.0, 1.0) for i in range(10)})


def test_the_bytes_written_per_trial_stay_flat_as_the_study_grows(tmp_path):
    written, snapshot = {}, {}
    for trials in (200, 2000):
        folder = tmp_path / str(trials)
        folder.mkdir()
        searcher = search.create("random", SPACE_10D, metric="y", mode="min", seed=0)
        store = StudyStore(folder, searcher)
        for _ in range(trials):
            with store.locked() as searcher:
                trial = searcher.ask()
                searcher.tell(trial.id, {"y": sum(trial.config.values())})
        written[trials] = store_module.bytes_written(folder) / trials
        snapshot[trials] = (folder / "searcher.json").stat().st_size
        assert store_module.bytes_written(folder) == store.bytes_written
    assert snapshot[2000] > 8 * snapshot[200]  # the state grew tenfold
    assert written[2000] < 3 * written[200] < 4000, written  # the bytes per trial did not


KILLED = textwrap.dedent(
    """
    import os, random, signal, sys, time
    import search
    from search.testing import mixed_space, toy_metrics
    from cluster.study.store import StudyStore

    folder, told = sys.argv[1], os.path.join(sys.argv[1], "told.txt")
    make = lambda: search.create("random", mixed_space(), metric="score", seed=1)
    store = StudyStore(folder, make())
    with store.locked() as searcher:  # a large state: each snapshot takes a while
        for _ in range(3000):
            trial = searcher.ask()
            searcher.tell(trial.id, toy_metrics(trial.config))

    def work():
        store = StudyStore(folder, make())
        for step in range(10**6):
            with store.locked() as searcher:
                trial = searcher.ask()
                searcher.tell(trial.id, toy_metrics(trial.config))
                if step % 3:
                    store.compact()  # a snapshot in this round
            with open(told, "a") as file:
                file.write(trial.id + "\\n")

    def writing() -> bool:  # a snapshot's temporary file is there
        return any(n.startswith(".searcher.json.") for n in os.listdir(folder))

    moments, midway = random.Random(int(sys.argv[2])), 0
    for cycle in range(12):
        if cycle >= 4 and midway:
            break
        child = os.fork()
        if child == 0:
            work()
            os._exit(0)
        time.sleep(moments.uniform(0.1, 0.35))
        deadline = time.monotonic() + 3
        while cycle % 2 and not writing() and time.monotonic() < deadline:
            pass  # odd cycles: killed while a snapshot is being written
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        midway += writing()
    print(midway)
    """
)


def test_a_driver_killed_while_writing_snapshots_loses_no_told_trial(tmp_path):
    command = [sys.executable, "-c", KILLED, str(tmp_path), "7"]
    midway = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    told = (tmp_path / "told.txt").read_text().split()
    with StudyStore(tmp_path, _searcher()).locked() as searcher:
        ids = [o["id"] for o in searcher.observations]
    assert told and set(told) <= set(ids) and len(ids) == len(set(ids))
    assert len(ids) >= 3000 + len(told)
    assert int(midway.stdout) >= 1  # at least one kill left a snapshot half written


def test_a_block_that_raises_keeps_nothing_of_its_own(tmp_path):
    store = StudyStore(tmp_path, _searcher())
    _round(store)
    with store.locked() as searcher:
        trial = searcher.ask()
    saved = _state(store)
    with pytest.raises(OSError), store.locked() as searcher:  # the row could not be written
        searcher.tell(trial.id, toy_metrics(trial.config))
        raise OSError("No space left on device")
    with store.locked() as searcher:  # loaded again: the trial is pending, and can be told
        assert _state(store) == saved and trial.id in searcher.pending
        searcher.tell(trial.id, toy_metrics(trial.config))
    reader = StudyStore(tmp_path, _searcher())
    with reader.locked():
        assert _state(reader) == _state(store)


def test_asks_that_spent_their_pricing_budget_are_journaled_before_the_one_that_fit(tmp_path):
    def priced():  # 1 config in 20 fits, an ask prices 3: its first 5 asks find nothing
        price = search.Price(lambda config: {"latency_ms": config["x"]}, calls=3)
        space = Space({"x": Float(0.0, 1.0)})
        return search.create(
            "random", space, metric="score", seed=3, constraints={"latency_ms": 0.05}, price=price
        )

    store = StudyStore(tmp_path, priced())
    with store.locked():
        pass  # the snapshot: what follows is journaled
    with store.locked() as searcher:  # as a study asks again after a spent budget
        for _ in range(6):
            with contextlib.suppress(search.NothingFits):
                trial = searcher.ask()
    assert trial.config["x"] <= 0.05 and len(store.searcher.refusals()) == 15
    reader = StudyStore(tmp_path, priced())
    with reader.locked():
        assert _state(reader) == _state(store)


OLD_JOURNALS = Path(__file__).parent / "data" / "journal_v1"


@pytest.mark.parametrize("name", sorted(p.name for p in OLD_JOURNALS.iterdir() if p.is_dir()))
def test_a_journal_written_before_replay_moved_into_search_still_replays(tmp_path, name):
    """Written by the code of f7b251f (`data/make_old_journals.py`): every kind of line, and
    the extras an ask changed (grid, bo, darts) or a tell learns from (evolution, rl, darts)."""
    from tests.cluster.data.make_old_journals import _make

    for file in ("searcher.json", "searcher.journal"):
        (tmp_path / file).write_bytes((OLD_JOURNALS / name / file).read_bytes())
    expected = json.loads((OLD_JOURNALS / name / "expected.json").read_text())
    with StudyStore(tmp_path, _make(name, seed=99)).locked() as searcher:
        state = json.loads(json.dumps(searcher.state_dict(), default=journal.plain))
        assert state.pop("price") == {"calls": 0, "hits": 0, "screened": 0, "seconds": 0.0}
        assert state == expected["state"]
        assert [searcher.ask().config for _ in range(2)] == expected["next"]


def test_rung_reports_are_journaled_and_a_resume_replays_them(tmp_path):
    def make(seed):
        return search.create("evolution", mixed_space(), metric="score", seed=seed, max_fidelity=9)

    store = StudyStore(tmp_path, make(1))
    with store.locked() as searcher:
        running, stopped = searcher.ask(), searcher.ask()
    with store.locked() as searcher:  # epoch reports, as the recorder makes them
        for trial in (running, stopped):
            searcher.report(trial.id, toy_metrics(trial.config), fidelity=1)
        searcher.report(stopped.id, {"score": 5.0}, fidelity=3)
    with store.locked() as searcher:
        searcher.tell(stopped.id, {"score": 5.0}, status="stopped", fidelity=3)
    lines = (tmp_path / journal.JOURNAL_FILE).read_text().splitlines()
    assert sum(json.loads(line).get("op") == "report" for line in lines) == 3
    with StudyStore(tmp_path, make(99)).locked() as resumed:
        assert resumed.state_dict() == store.searcher.state_dict()
        assert resumed.rungs[running.id][0]["fidelity"] == 1.0
        assert resumed.observations[-1]["fidelity"] == 3.0
        assert resumed.members == [stopped.id]  # in the population at its rung


def test_a_stopped_row_is_told_at_its_training_iteration():
    from cluster.study.resume import rung_of, told_as

    metrics, told = told_as({"score": 0.5, "step": 4}, "stopped", ["score", "cost"])
    assert (metrics, told) == ({"score": 0.5}, {"status": "stopped", "fidelity": 4})
    early = {"val_acc": 90.0, "start_latency_ms": 0.4, "latency_ms": None, "step": 2}
    metrics, _ = told_as(early, "stopped", ["val_acc", "latency_ms"])
    assert metrics == {"val_acc": 90.0, "latency_ms": 0.4}  # measured before training
    searcher = search.create("random", mixed_space(), metric="score", seed=0, max_fidelity=9)
    report = {"score": 0.5, "cost": 2, "training_iteration": 3, "phase": "train"}
    assert rung_of(report, searcher) == ({"score": 0.5}, 3.0)  # objectives and bounded costs
    assert rung_of({**report, "training_iteration": 9}, searcher) is None  # the final
    assert rung_of({"loss": 2, "training_iteration": 3}, searcher) is None
