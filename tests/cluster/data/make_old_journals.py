"""Writes `journal_v1/<searcher>/` (searcher.json, searcher.journal, expected.json): journals as
the code of commit f7b251f wrote them (before replay moved into search/), so that
`test_journal.py` checks that a study saved then still replays. Run from the repository root:
`python -m tests.cluster.data.make_old_journals`; kept for the record, not to be rerun (it would
write what the code of the day writes)."""

import json
import shutil
from pathlib import Path

import search
import spaces
from cluster.study.store import StudyStore
from search.darts import SUPERNET
from search.testing import mixed_space, toy_metrics

OUT = Path(__file__).parent / "journal_v1"
OPTIONS = {
    "grid": {},
    "evolution": {"population": 3, "sample_size": 2},
    "bo": {"n_initial": 3},
    "rl": {},
}


def _make(name: str, seed: int) -> search.Searcher:
    if name == "darts":
        space = spaces.Space.combine({"arch": spaces.nb201(), "train": spaces.training()})
        return search.create("darts", space, metric="score", seed=seed, epochs=2)
    return search.create(name, mixed_space(), metric="score", seed=seed, **OPTIONS[name])


def _rounds(store: StudyStore) -> None:
    """Every kind of journal line: asks, tells (completed, failed, stopped), revise, discard,
    add and reserve."""
    for step in range(4):
        with store.locked() as searcher:
            trial, other = searcher.ask(), searcher.ask()
            if step == 1:
                searcher.revise(other.id, trial.config)
            searcher.tell(trial.id, None if step == 2 else toy_metrics(trial.config))
        with store.locked() as searcher:
            status = "stopped" if step % 2 else None
            searcher.tell(other.id, toy_metrics(searcher.pending[other.id]), status=status)
    with store.locked() as searcher:
        lost = searcher.ask()
        searcher.discard(lost.id)
        searcher.add(searcher.observations[0]["config"], {"score": 3.0}, status="completed")
        searcher.reserve_ids(40)
        trial = searcher.ask()
        searcher.tell(trial.id, toy_metrics(trial.config))


def _darts_rounds(store: StudyStore) -> None:
    with store.locked() as searcher:
        supernet, meanwhile = searcher.ask(), searcher.ask()
        searcher.discard(supernet.id)  # its worker lost: asked again
        supernet = searcher.ask()
    with store.locked() as searcher:
        arch = {f"arch.{k}": "nor_conv_3x3" for k in spaces.nb201_edge_names()}
        searcher.revise(supernet.id, {**arch, **supernet.config[SUPERNET]["rest"]})
        searcher.tell(supernet.id, {"score": 50.0})
        searcher.tell(meanwhile.id, {"score": 10.0}, status="stopped")
    with store.locked() as searcher:
        for _ in range(2):
            trial = searcher.ask()
            searcher.tell(trial.id, {"score": 60.0})


def main() -> None:
    for name in (*OPTIONS, "darts"):
        folder = OUT / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        store = StudyStore(folder, _make(name, seed=1))
        with store.locked():
            pass  # the first snapshot: empty, so every change is a journal line
        (_darts_rounds if name == "darts" else _rounds)(store)
        (folder / ".lock").unlink()
        state = json.loads(json.dumps(store.searcher.state_dict()))  # not the live extras
        nexts = [store.searcher.ask().config for _ in range(2)]
        expected = {"state": state, "next": nexts}
        (folder / "expected.json").write_text(json.dumps(expected, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
