"""A study's searcher shared between processes (`paretune run`, `paretune serve`): every
read-modify-write of its JSON state happens under an exclusive lock on `STUDY/.lock`, after
reloading the state if another process changed it."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import search

STATE_FILE = "searcher.json"


def write_json(path: Path, value) -> None:
    """Atomically: a temporary file in the same folder, then `os.replace`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(value))  # dumps runs the C encoder; dump would not
    os.replace(tmp, path)


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
                        self.searcher.load_state_dict(json.loads(self.state_path.read_text()))
                    self._depth = 1
                    try:
                        yield self.searcher
                    finally:
                        self._depth = 0
                        write_json(self.state_path, self.searcher.state_dict())
                        self._stamp = self._file_stamp()
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
