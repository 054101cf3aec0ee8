"""A study searcher's changes as a journal: one JSON line per change, appended to
`STUDY/searcher.journal`, so recording a trial costs the same at the 10,000th as at the first.

The journal's first line names the snapshot it continues, `{"journal": token, "written": n}`
(`n`: bytes of searcher state the study wrote before this journal, snapshot included); the
snapshot (`searcher.json`) carries the same token. A journal whose token is not the snapshot's
is one the snapshot already covers (the writer died between the two files) and is never
replayed. A line counts once it ends in a newline: the torn last line a killed writer leaves is
ignored, and cut before the next append.

Each line is a searcher's event (`Searcher.record` writes it, `Searcher.apply` makes it again:
the contract in `search.base`), so replay is exact without proposing again.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import search
from spaces.util import write_atomic

STATE_FILE = "searcher.json"
JOURNAL_FILE = "searcher.journal"


plain = search.plain  # the journal's and the snapshot's JSON default


def line(event: dict) -> bytes:
    return (json.dumps(event, default=plain) + "\n").encode()


def summary(searcher: search.Searcher) -> tuple:
    """What any change to the searcher moves: told trials, next id, random state, pending."""
    state = searcher.rng.bit_generator.state
    return len(searcher.observations), searcher.next_id, state, dict(searcher.pending)


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
        if name in search.CHANGES:
            return functools.partial(self._record, name)
        return getattr(self._searcher, name)

    def __setattr__(self, name, value):
        setattr(self._searcher, name, value)

    def restart(self) -> None:
        """Forget the recorded lines; the searcher as it is now is the starting point."""
        object.__setattr__(self, "lines", [])
        object.__setattr__(self, "after", summary(self._searcher))

    def _record(self, change: str, /, *args, **kwargs):
        try:
            result, event = self._searcher.record(change, *args, **kwargs)
        except search.NothingFits as error:  # its refusals and prices are a change all the same
            if error.event is not None:
                self._keep(error.event)
            raise
        self._keep(event)
        return result

    def _keep(self, event: dict) -> None:
        self.lines.append(line(event))
        object.__setattr__(self, "after", summary(self._searcher))


def replay(searcher: search.Searcher, events: list[dict]) -> None:
    """Apply journal `events` in order."""
    for event in events:
        searcher.apply(event)


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
