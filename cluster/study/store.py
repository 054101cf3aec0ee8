"""A study's searcher shared between processes (`paretune run`, `paretune serve`): every
read-modify-write of its JSON state happens under an exclusive lock on `STUDY/.lock`, after
reloading the state if another process changed it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import search
from spaces.util import write_json

STATE_FILE = "searcher.json"
RUNNER_TRIALS = "runner-trials.txt"


class StateUnreadable(ValueError):
    """`searcher.json` is truncated, corrupt or of another searcher."""


class StudyStore:
    """`with store.locked() as searcher:` gives the study's searcher, current with the file,
    and saves it when the outermost block ends. Reentrant within a thread."""

    def __init__(self, folder: str | Path, searcher: search.Searcher):
        self.folder = Path(folder)
        self.searcher = searcher
        self.state_path = self.folder / STATE_FILE
        self._init_locks()

    def _init_locks(self):
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._stamp = None

    def __getstate__(self):  # Ray Tune pickles its search algorithm, and this with it
        state = self.__dict__.copy()
        for key in ("_thread_lock", "_depth", "_stamp"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_locks()

    def _file_stamp(self):
        try:
            info = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def _reload(self) -> None:
        try:
            self.searcher.load_state_dict(json.loads(self.state_path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise StateUnreadable(f"{self.state_path}: {type(error).__name__}: {error}") from error

    def claim(self, trial_id: str) -> None:
        """Note that a runner asked `trial_id` (one line appended to `runner-trials.txt`): a
        resume forgets the unfinished trials a runner asked, and leaves those asked through the
        study service pending for their clients."""
        with open(self.folder / RUNNER_TRIALS, "a") as file:
            file.write(f"{trial_id}\n")

    def runner_trials(self) -> set[str] | None:
        """The trials runners asked; None for a study from before this was kept (then every
        unfinished trial counts as a runner's)."""
        path = self.folder / RUNNER_TRIALS
        return set(path.read_text().split()) if path.exists() else None

    def set_aside(self) -> Path:
        """Move an unreadable state file out of the way; returns where it went."""
        kept = self.state_path.with_name(f"{STATE_FILE}.unreadable-{time.time_ns()}")
        os.replace(self.state_path, kept)
        return kept

    @contextmanager
    def locked(self):
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.searcher
                finally:
                    self._depth -= 1
                return
            with open(self.folder / ".lock", "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    stamp = self._file_stamp()
                    if stamp is not None and stamp != self._stamp:
                        self._reload()
                    self._depth = 1
                    try:
                        yield self.searcher
                    finally:
                        self._depth = 0
                        write_json(self.state_path, self.searcher.state_dict())
                        self._stamp = self._file_stamp()
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


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
