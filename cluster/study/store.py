"""A study's searcher shared between processes (`paretune run`, `paretune serve`): every change
to it happens under an exclusive lock on `STUDY/.lock`, after catching up with what another
process changed. Changes are appended to a journal (`cluster.study.journal`); now and then the
whole state is written as a snapshot (`searcher.json`, atomically) and a new journal begun, so
the bytes written per trial stay flat however long the study runs."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import search
from cluster.study import journal, storage, warm
from cluster.study.journal import STATE_FILE, bytes_written
from cluster.study.journal import stamp as _stamp
from spaces.util import write_atomic

JOURNAL_FILE, RUNNER_TRIALS = journal.JOURNAL_FILE, "runner-trials.txt"
# a snapshot is written once the journal's changes reach this many bytes, or the snapshot's size
JOURNAL_MIN_BYTES = 64 << 10


class StateUnreadable(ValueError):
    """`searcher.json` or its journal is truncated, corrupt or of another searcher."""


def _budget(folder: Path) -> int | None:
    """The study's trial budget, from its `study.json` (None where there is none)."""
    try:
        return int(json.loads((folder / storage.STUDY_FILE).read_text())["trials"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class StudyStore:
    """`with store.locked() as searcher:` gives the study's searcher, current with the files,
    and records what the block changed when the outermost block ends. Reentrant within a
    thread. Changes made through the yielded searcher are journaled; any other change to the
    searcher is caught and saved with a snapshot, as is the state once the study's budget is
    told (`searcher.json` then holds it whole); a block that raises saves nothing of its own.
    `bytes_written`: what this store wrote."""

    def __init__(self, folder: str | Path, searcher: search.Searcher):
        self.folder = Path(folder)
        self.searcher = searcher
        self.state_path = self.folder / STATE_FILE
        self.journal_path = self.folder / JOURNAL_FILE
        self.bytes_written = 0
        self._init_locks()

    def _init_locks(self):
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._recording = journal.Recording(self.searcher)
        self._token = None  # the snapshot's journal token: None, no snapshot to journal after
        self._stamp = None  # the snapshot's, as last read or written
        self._journal = None  # (inode, where its complete lines end, where its events begin)
        self._written = 0  # the study's bytes of state before the journal
        self._snapshot_bytes = 0
        self._compact = False
        self._budget = _budget(self.folder)

    def __getstate__(self):  # Ray Tune pickles its search algorithm, and this with it
        keep = ("folder", "searcher", "state_path", "journal_path", "bytes_written")
        return {key: self.__dict__[key] for key in keep}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_locks()

    def claim(self, trial_id: str) -> None:
        """Note that a runner asked `trial_id` (one line appended to `runner-trials.txt`): a
        resume forgets the unfinished trials a runner asked, and leaves those asked through the
        study service pending for their clients."""
        with open(self.folder / RUNNER_TRIALS, "a") as file:
            file.write(f"{trial_id}\n")
        storage.changed(self.folder)

    def runner_trials(self) -> set[str] | None:
        """The trials runners asked; None for a study from before this was kept (then every
        unfinished trial counts as a runner's)."""
        path = self.folder / RUNNER_TRIALS
        return set(path.read_text().split()) if path.exists() else None

    def set_aside(self) -> Path:
        """Move an unreadable state file (and its journal) out of the way; returns where the
        state file went."""
        kept = self.state_path.with_name(f"{STATE_FILE}.unreadable-{(moment := time.time_ns())}")
        if self.journal_path.exists():
            os.replace(self.journal_path, f"{self.journal_path}.unreadable-{moment}")
        os.replace(self.state_path, kept)
        return kept

    def compact(self) -> None:
        """Write the snapshot now, so `searcher.json` alone holds the whole state (`open_store`
        does after reconciling; so does, by itself, a round that tells the budget's last trial)."""
        with self.locked():
            self._compact = True

    @contextmanager
    def locked(self):
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._recording
                finally:
                    self._depth -= 1
                return
            with open(self.folder / storage.STORE_LOCK, "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    changed_outside = journal.summary(self.searcher) != self._recording.after
                    if not self._catch_up() and changed_outside:
                        self._token = None  # changed outside a block: save it all
                    self._recording.restart()
                    self._depth = 1
                    try:
                        yield self._recording
                    except BaseException:
                        self._depth = 0
                        self._forget()
                        raise
                    self._depth = 0
                    try:
                        self._save()
                        storage.changed(self.folder)  # a study on a URI: mirrored soon
                    except BaseException:  # not saved (a full disk): load the files next time
                        self._stamp = None
                        self._recording.restart()
                        raise
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    # -- reading ----------------------------------------------------------------------------
    def _catch_up(self) -> bool:
        """Bring the searcher up to the files; True when it was loaded from them afresh."""
        stamp = _stamp(self.state_path)
        if stamp is None:  # a new study, or one whose state was set aside: the searcher stands
            self._token, self._stamp, self._journal, self._written = None, None, None, 0
            return False
        if stamp == self._stamp and self._journal is None:
            return False  # an older study's state file, with no journal after it
        if stamp == self._stamp:
            info = _stamp(self.journal_path)
            inode, end, begin = self._journal
            if info is not None and info[2] == inode and info[1] == end:
                return False
            head = journal.header(self.journal_path)
            if info and info[2] == inode and info[1] > end and head and self._continues(head):
                self._apply_from(end, inode, begin)
                return False
        self._load(stamp)
        return True

    def _continues(self, head: tuple[dict, int]) -> bool:
        return self._token is not None and head[0]["journal"] == self._token

    def _apply_from(self, end: int, inode: int, begin: int) -> None:
        try:
            events, end = journal.read(self.journal_path, end)
            journal.replay(self.searcher, events)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            self._stamp = None  # the searcher may hold part of it: load it all next time
            raise StateUnreadable(
                f"{self.journal_path}: {type(error).__name__}: {error}"
            ) from error
        self._journal = (inode, end, begin)

    def _load(self, stamp) -> None:
        """The snapshot, then the journal that continues it. A snapshot with no journal of its
        own (its writer died before beginning one) gets one."""
        try:
            text = self.state_path.read_text()
            state = json.loads(text)
            self.searcher.load_state_dict(state)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise StateUnreadable(f"{self.state_path}: {type(error).__name__}: {error}") from error
        self._token, self._stamp, self._journal = state.get("journal"), stamp, None
        self._snapshot_bytes = len(text)
        head = journal.header(self.journal_path)
        if head is not None and self._continues(head):
            self._written = int(head[0].get("written", 0))
            self._apply_from(head[1], os.stat(self.journal_path).st_ino, head[1])
        elif self._token is not None:
            self._written = len(text) + (bytes_written(self.folder) if head else 0)
            self._begin_journal(self._token)

    def _forget(self) -> None:
        """A block raised: what it changed is not saved, and the next block loads the files
        again (a tell whose Parquet row could not be written is not kept, so it can be retried)."""
        if self._recording.lines or journal.summary(self.searcher) != self._recording.after:
            self._stamp = None
        self._recording.restart()

    # -- writing ----------------------------------------------------------------------------
    def _save(self) -> None:
        recording = self._recording
        if journal.summary(self.searcher) != recording.after:
            self._token = None  # changed other than through the yielded searcher: save it all
        if (self._compact or self._finished()) and (recording.lines or self._journaled()):
            self._token = None
        self._compact = False
        if self._token is None:
            self._snapshot()
        elif recording.lines:
            if self._journal is None:
                self._begin_journal(self._token)
            inode, end, begin = self._journal
            size = journal.append(self.journal_path, recording.lines, end)
            self.bytes_written += size - end
            self._journal = (inode, size, begin)
            if size - begin >= max(JOURNAL_MIN_BYTES, self._snapshot_bytes):
                self._snapshot()
        recording.restart()

    def _journaled(self) -> bool:
        return self._journal is not None and self._journal[1] > self._journal[2]

    def _finished(self) -> bool:
        """The study's budget is told (warm start rows not counted), nothing pending: its final
        state is saved whole."""
        if not self._budget or self.searcher.pending:
            return False
        trained = self.searcher.trained()
        return trained >= self._budget and trained - warm.count(self.folder) >= self._budget

    def _snapshot(self) -> None:
        """The whole state, atomically, then a new journal that continues it. Killed between
        the two, the old journal's token is not the snapshot's: it is never replayed."""
        before = self._written + (self._journal[1] if self._journal else 0)
        token = uuid.uuid4().hex
        text = json.dumps({**self.searcher.state_dict(), "journal": token}, default=journal.plain)
        for stale in self.folder.glob(f".{STATE_FILE}.*.tmp"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        write_atomic(self.state_path, text)
        self._stamp, self._snapshot_bytes = _stamp(self.state_path), len(text)
        self._token, self._written = token, before + len(text)
        self.bytes_written += len(text)
        self._begin_journal(token)

    def _begin_journal(self, token: str) -> None:
        size = journal.start(self.journal_path, token, self._written)
        self.bytes_written += size
        self._journal = (os.stat(self.journal_path).st_ino, size, size)


class StudyBusy(ValueError):
    """Another live driver runs this study."""


@contextmanager
def driver_lock(folder: str | Path):
    """Held while one driver (`paretune run` or `resume`) runs the study in `folder`; a second
    one is refused with `StudyBusy`. The lock is the kernel's (`flock`), so it ends with its
    process: a killed driver's lock never blocks a resume."""
    path = Path(folder) / ".driver"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise StudyBusy(
                f"study {str(folder)!r} is being run by {holder}: wait for it to end, or stop "
                "it (Ctrl-C) and `paretune resume` the study"
            ) from None
        handle.truncate(0)
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
