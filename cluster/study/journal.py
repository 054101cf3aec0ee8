"""A study searcher's changes as a journal: one JSON line per change, appended to
`STUDY/searcher.journal`, so recording a trial costs the same at the 10,000th as at the first.

The journal's first line names the snapshot it continues, `{"journal": token, "written": n}`
(`n`: bytes of searcher state the study wrote before this journal, snapshot included); the
snapshot (`searcher.json`) carries the same token. A journal whose token is not the snapshot's
is one the snapshot already covers (the writer died between the two files) and is never
replayed. A line counts once it ends in a newline: the torn last line a killed writer leaves is
ignored, and cut before the next append.

Replay is exact without proposing again: an ask is recorded with its config, the random state
after it and, where the ask changed them, the searcher's own extras (`_extra_state`); the other
changes (`tell`, `revise`, `discard`, `add`, `reserve_ids`) are replayed through the searcher's
methods, each with the random state after it where it drew, and a tell's or add's recorded
status is checked against the replayed one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import search
from spaces.util import write_atomic

STATE_FILE = "searcher.json"
JOURNAL_FILE = "searcher.journal"


def plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a journal event holds {value!r} ({type(value).__name__}), not JSON")


def line(event: dict) -> bytes:
    return (json.dumps(event, default=plain) + "\n").encode()


def summary(searcher: search.Searcher) -> tuple:
    """What any change to the searcher moves: told trials, next id, random state, pending."""
    state = searcher.rng.bit_generator.state
    return len(searcher.observations), searcher._next_id, state, dict(searcher.pending)


class Recording:
    """The searcher as `StudyStore.locked()` yields it: every change made through it is also
    kept as a journal line (`lines`); everything else is the searcher's own."""

    def __init__(self, searcher: search.Searcher):
        object.__setattr__(self, "_searcher", searcher)
        object.__setattr__(self, "lines", [])
        object.__setattr__(self, "after", summary(searcher))  # as the last recorded change left it

    def __getattr__(self, name):
        if name == "_searcher":  # not yet set (a copy being made)
            raise AttributeError(name)
        return getattr(self._searcher, name)

    def __setattr__(self, name, value):
        setattr(self._searcher, name, value)

    def restart(self) -> None:
        """Forget the recorded lines; the searcher as it is now is the starting point."""
        object.__setattr__(self, "lines", [])
        object.__setattr__(self, "after", summary(self._searcher))

    def _keep(self, event: dict, rng_before: dict) -> None:
        rng = self._searcher.rng.bit_generator.state
        if rng != rng_before:
            event["rng"] = rng
        self.lines.append(line(event))
        object.__setattr__(self, "after", summary(self._searcher))

    def ask(self) -> search.Trial:
        searcher = self._searcher
        extra, rng = (
            json.dumps(searcher._extra_state(), default=plain),
            searcher.rng.bit_generator.state,
        )
        trial = searcher.ask()
        event = {"op": "ask", "id": trial.id, "config": trial.config}
        now = searcher._extra_state()
        if json.dumps(now, default=plain) != extra:
            event["extra"] = now
        self._keep(event, rng)
        return trial

    def tell(self, trial_id, metrics, *, status=None) -> dict:
        rng = self._searcher.rng.bit_generator.state
        record = self._searcher.tell(trial_id, metrics, status=status)
        metrics = None if metrics is None else dict(metrics)
        event = {"op": "tell", "id": trial_id, "metrics": metrics, "status": status}
        self._keep(event | {"told": record["status"]}, rng)
        return record

    def add(self, config, metrics, *, status=None, trial_id=None) -> dict:
        rng = self._searcher.rng.bit_generator.state
        record = self._searcher.add(config, metrics, status=status, trial_id=trial_id)
        metrics = None if metrics is None else dict(metrics)
        event = {"op": "add", "id": record["id"], "config": dict(config), "metrics": metrics}
        self._keep(event | {"status": status, "told": record["status"]}, rng)
        return record

    def revise(self, trial_id, config) -> None:
        rng = self._searcher.rng.bit_generator.state
        self._searcher.revise(trial_id, config)
        self._keep({"op": "revise", "id": trial_id, "config": dict(config)}, rng)

    def discard(self, trial_id) -> None:
        rng = self._searcher.rng.bit_generator.state
        self._searcher.discard(trial_id)
        self._keep({"op": "discard", "id": trial_id}, rng)

    def reserve_ids(self, first_free) -> None:
        rng = self._searcher.rng.bit_generator.state
        self._searcher.reserve_ids(first_free)
        self._keep({"op": "reserve", "first_free": int(first_free)}, rng)


def _check(event: dict, record: dict) -> None:
    if record["status"] != event["told"]:
        raise ValueError(
            f"journal: trial {event['id']!r} was told {event['told']!r}, "
            f"replayed as {record['status']!r}"
        )


def replay(searcher: search.Searcher, events: list[dict]) -> None:
    """Apply journal `events` in order. The extras an ask recorded are loaded once, after the
    last ask (or before a tell, for a searcher that learns in `_observe`)."""
    learns = type(searcher)._observe is not search.Searcher._observe
    extra = None
    for event in events:
        op = event.get("op")
        if op in ("tell", "add") and learns and extra is not None:
            searcher._load_extra_state(extra)
            extra = None
        if op == "ask":
            searcher._hold(str(event["id"]), dict(event["config"]))
            extra = event.get("extra", extra)
        elif op == "tell":
            _check(event, searcher.tell(event["id"], event["metrics"], status=event["status"]))
        elif op == "add":
            record = searcher.add(
                event["config"], event["metrics"], status=event["status"], trial_id=event["id"]
            )
            _check(event, record)
        elif op == "revise":
            searcher.revise(event["id"], event["config"])
        elif op == "discard":
            searcher.discard(event["id"])
        elif op == "reserve":
            searcher.reserve_ids(event["first_free"])
        else:
            raise ValueError(
                f"journal: unknown event {op!r}; known: ask, tell, add, revise, discard, reserve"
            )
        if "rng" in event:
            searcher.rng.bit_generator.state = event["rng"]
    if extra is not None:
        searcher._load_extra_state(extra)


def read(path: Path, start: int) -> tuple[list[dict], int]:
    """The events of the complete lines from byte `start` on, and where the last one ends (a
    torn last line is left out). A complete line that is not JSON raises ValueError."""
    with open(path, "rb") as file:
        file.seek(start)
        data = file.read()
    complete = data[: data.rfind(b"\n") + 1]
    events = []
    for number, text in enumerate(complete.splitlines()):
        try:
            events.append(json.loads(text))
        except ValueError as error:
            raise ValueError(f"{path}: line {number + 1} after byte {start}: {error}") from None
    return events, start + len(complete)


def header(path: Path) -> tuple[dict, int] | None:
    """The journal's first line and its length; None if it has none, or no journal exists."""
    try:
        with open(path, "rb") as file:
            first = file.readline()
    except FileNotFoundError:
        return None
    if not first.endswith(b"\n"):
        return None
    try:
        head = json.loads(first)
    except ValueError:
        return None
    return (head, len(first)) if isinstance(head, dict) and "journal" in head else None


def start(path: Path, token: str, written: int) -> int:
    """A new journal (atomically) continuing the snapshot `token`; returns its size."""
    data = line({"journal": token, "written": written})
    write_atomic(path, data)
    return len(data)


def append(path: Path, lines: list[bytes], end: int) -> int:
    """Append `lines` where the complete lines end (`end`: a torn tail is cut first); returns
    the journal's new size."""
    with open(path, "r+b") as file:
        if os.fstat(file.fileno()).st_size != end:
            file.truncate(end)
        file.seek(end)
        data = b"".join(lines)
        try:
            file.write(data)
            file.flush()
        except OSError:  # a full disk: none of these lines count, not some of them
            file.truncate(end)
            raise
    return end + len(data)


def stamp(path: Path):
    """When and how a file was last written, as far as `os.stat` tells; None if absent."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def bytes_written(folder: str | Path) -> int:
    """Bytes of searcher state the study in `folder` has written: every snapshot and journal
    (as the current journal's first line counts them), or the state file of an older study."""
    folder = Path(folder)
    head = header(folder / JOURNAL_FILE)
    if head is None:
        state = stamp(folder / STATE_FILE)
        return state[1] if state else 0
    return int(head[0].get("written", 0)) + os.stat(folder / JOURNAL_FILE).st_size
