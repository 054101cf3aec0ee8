"""Studies on a URI (`s3://bucket/study`, `gs://...`, any `pyarrow.fs` URI with its query
options, e.g. `s3://bucket/study?endpoint_override=127.0.0.1:9000&scheme=http`; credentials from
the usual environment): a local staging folder mirrored to the URI, as Ray Tune does with its
experiment state.

The design. Everything that writes a study (the Parquet parts, the searcher's snapshot and
journal, `flock`, atomic renames) works on a local folder; a study on a URI runs in a fresh
staging folder on the driver (`staged`), first filled from the URI (so `paretune resume URI`
continues on any machine), then mirrored back by a `Mirror` thread that every part and state
write wakes (`changed`), and once more when the run ends. One pass reads the changed state files
(searcher state, journal, trial list, models) into memory *before* it lists the results, uploads
the new parts, then those state files (the searcher's snapshot, then its journal, last: an ask's
claim in `runner-trials.txt` is up before the journal line that asked it), and deletes last what
compaction removed: the URI never holds a tell whose Parquet row it lacks, an ask no runner
claimed, nor loses a row a compacted part had covered. What a
kill -9 of the driver can lose is what was written after the last pass began (`PASS_S` plus
one pass: a few tenths of a second on a near store): those trials' rows are missing, so the
resume runs them again and the budget stays exact. Read-only commands read a local copy
(`local_copy`), pulled again by the dashboard's feed (only new files). Tune writes its own
files to `URI/ray` (`tune_storage`). Not covered: two drivers on two machines (the `flock` is
per machine).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pyarrow.fs as pafs

from cluster.study.journal import JOURNAL_FILE, STATE_FILE

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
TUNE = "ray"  # Tune's own files (`URI/ray`): written there by Tune, never mirrored
SKIPPED = (TUNE, "cache")  # not copied for reading
STATE_LAST = "results/"  # uploaded first; everything else after them
STUDY_FILE = "study.json"  # what makes a folder (or a URI) a study
STORE_LOCK = ".lock"  # `cluster.study.store.StudyStore.locked` holds it
SEARCHER_LAST = (STATE_FILE, JOURNAL_FILE)  # uploaded after the other state files, in this order
PASS_S = 0.1  # a pass starts this long after the write that wakes it
_mirrors: dict[str, Mirror] = {}  # staged local folder -> its mirror


def is_uri(path) -> bool:
    """Whether `path` names a study on a `pyarrow.fs` URI rather than a local folder."""
    return isinstance(path, str) and bool(SCHEME.match(path))


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The `pyarrow.fs` file system of `uri` and the study's path in it."""
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as error:
        raise ValueError(
            f"study {uri!r}: not a URI pyarrow.fs opens ({error}); use a local folder, "
            "s3://bucket/path, gs://bucket/path or another pyarrow.fs URI"
        ) from None
    return fs, root.rstrip("/")


def read_text(study_dir, name: str) -> str | None:
    """The text of `study_dir/name` (a folder or a URI); None when it does not exist."""
    if not is_uri(study_dir):
        path = Path(study_dir).expanduser() / name
        return path.read_text() if path.exists() else None
    fs, root = filesystem(study_dir)
    if fs.get_file_info(f"{root}/{name}").type != pafs.FileType.File:
        return None
    with fs.open_input_stream(f"{root}/{name}") as stream:
        return stream.readall().decode()


def saved_study(study_dir) -> dict | None:
    """The study saved in `study_dir` (a folder or a URI), None where none is; one saved before
    `deploy` existed timed in eager torch."""
    text = read_text(study_dir, STUDY_FILE)
    return None if text is None else {"deploy": "torch", **json.loads(text)}


class Mirror:
    """The files of the study at `uri` and of the local folder `local`, kept alike: `pull`
    brings the URI's files down (only those new or changed since the last pull), `push` sends
    the local changes up (see the module's note for the order). `start` runs `push` in a thread
    each time `wake` is called; `close` stops it after a last push. `skip`: top-level names
    not pulled."""

    def __init__(self, uri: str, local: str | Path, *, skip: tuple[str, ...] = (TUNE,)):
        self.uri, self.local, self.skip = uri, Path(local), skip
        self.fs, self.root = filesystem(uri)
        self.pulled: dict[str, tuple] = {}  # remote file -> (size, mtime) as pulled
        self.pushed: dict[str, tuple] = {}  # local file -> (size, mtime_ns) as pushed
        self._lock, self._wake, self._stop = threading.Lock(), threading.Event(), False
        self._thread: threading.Thread | None = None

    def _kept(self, name: str) -> bool:
        parts = name.split("/")
        return parts[0] not in self.skip and parts[0] != TUNE and not parts[-1].startswith(".")

    def pull(self) -> None:
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        remote = {}
        for info in self.fs.get_file_info(selector):
            name = info.path[len(self.root) + 1 :]
            if info.type == pafs.FileType.File and self._kept(name):
                remote[name] = (info.size, info.mtime_ns)
        for name, key in sorted(remote.items()):
            if self.pulled.get(name) != key:
                target = self.local / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with self.fs.open_input_stream(f"{self.root}/{name}") as stream:
                    temp = target.with_name(f".{target.name}.pull")
                    temp.write_bytes(stream.readall())
                os.replace(temp, target)
                self.pulled[name] = key
                stat = target.stat()
                self.pushed[name] = (stat.st_size, stat.st_mtime_ns)
        for name in set(self.pulled) - set(remote):  # removed there (compacted): here too
            (self.local / name).unlink(missing_ok=True)
            del self.pulled[name]
            self.pushed.pop(name, None)

    def _scan(self, results: bool) -> dict[str, tuple]:
        found = {}
        for path in self.local.rglob("*"):
            name = path.relative_to(self.local).as_posix()
            if name.startswith(STATE_LAST) != results or not self._kept(name):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                stat = path.stat()
                if path.is_file():
                    found[name] = (stat.st_size, stat.st_mtime_ns)
        return found

    def push(self) -> None:
        with self._lock:
            with self._store_locked():  # the searcher's files as one change left them
                state = self._scan(results=False)
                held = {}
                for name, key in state.items():  # read before the results are listed
                    if self.pushed.get(name) != key:
                        with contextlib.suppress(FileNotFoundError):
                            held[name] = ((self.local / name).read_bytes(), key)
            rows = self._scan(results=True)
            for name, key in rows.items():
                if self.pushed.get(name) != key:
                    with contextlib.suppress(FileNotFoundError):
                        self._upload(name, (self.local / name).read_bytes(), key)
            for name, (data, key) in sorted(held.items(), key=lambda item: _last(item[0])):
                self._upload(name, data, key)
            for name in sorted(set(self.pushed) - set(state) - set(rows)):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(f"{self.root}/{name}")
                del self.pushed[name]

    @contextlib.contextmanager
    def _store_locked(self):
        """The study store's `flock` (`cluster.study.store`), held while the state files are
        read: an ask writes its claim (`runner-trials.txt`) and then its journal line under it,
        and a pass that read the claims before that ask and the journal after it uploaded a trial
        no runner had claimed (a resume then kept it pending for a client, a trial short)."""
        with open(self.local / STORE_LOCK, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _upload(self, name: str, data: bytes, key: tuple) -> None:
        with self.fs.open_output_stream(f"{self.root}/{name}") as stream:
            stream.write(data)
        self.pushed[name] = key

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Mirror:
        _mirrors[str(self.local)] = self
        self._thread = threading.Thread(target=self._run, name="paretune-mirror", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait()
            time.sleep(PASS_S)  # the writes of this moment, in one pass
            self._wake.clear()
            try:
                self.push()
            except OSError as error:  # the store is unreachable: the next write tries again
                warnings.warn(f"study not synced to {self.uri} yet: {error}", stacklevel=1)

    def close(self) -> None:
        """Stop the thread, then push what is left (an error here is raised)."""
        _mirrors.pop(str(self.local), None)
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
        self.push()


def _last(name: str) -> int:
    return SEARCHER_LAST.index(name) + 1 if name in SEARCHER_LAST else 0


def changed(path) -> None:
    """A writer's note that it wrote under `path`: a staged study's mirror pushes soon."""
    text = str(path)
    for local, mirror in list(_mirrors.items()):
        if text == local or text.startswith(local + os.sep):
            mirror.wake()


def tune_storage(folder) -> dict:
    """`RunConfig` keywords for Tune's own files: under the URI of a staged study, else
    `STUDY/ray`."""
    mirror = _mirrors.get(str(folder))
    if mirror is None:
        return {"storage_path": str((Path(folder) / TUNE).resolve())}
    return {"storage_path": f"{mirror.root}/{TUNE}", "storage_filesystem": mirror.fs}


@contextlib.contextmanager
def staged(study, *, resume: bool):
    """`study` (whose `dir` is a URI) as a study in a fresh local staging folder filled from
    the URI and mirrored to it while the block runs; the folder is removed after the last push."""
    from cluster.study.errors import ConfigError

    if not resume and read_text(study.dir, STUDY_FILE) is not None:
        raise ConfigError(
            f"{study.dir!r} already holds a study: `paretune resume {study.dir}` continues it, "
            "or choose another dir"
        )
    # Tune's own per-trial logs (result.json, progress.csv, TensorBoard) repeat the Parquet
    # rows, and Tune would upload them file by file (20 s for 200 trials on a loopback S3);
    # without them, its result grid warns of each trial that it found none: nothing is missing
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    local = tempfile.mkdtemp(prefix="paretune-study-")
    mirror = Mirror(study.dir, local)
    try:
        mirror.pull()
        mirror.start()
        try:
            yield dataclasses.replace(study, dir=local)
        finally:
            mirror.close()
    finally:
        shutil.rmtree(local, ignore_errors=True)


def local_copy(study_dir, *, models: bool = False) -> str:
    """`study_dir` itself when it is a folder; for a URI, a local copy of its study (removed
    when the process exits; `models`: with `models/`, which `export` needs)."""
    return study_dir if not is_uri(study_dir) else str(reader(study_dir, models=models).local)


def reader(uri: str, *, models: bool = False) -> Mirror:
    """A `Mirror` of `uri` into a fresh local folder, pulled once (`pull` again for more)."""
    local = tempfile.mkdtemp(prefix="paretune-read-")
    atexit.register(shutil.rmtree, local, ignore_errors=True)
    mirror = Mirror(uri, local, skip=SKIPPED + (() if models else ("models",)))
    mirror.pull()
    if read_text(local, STUDY_FILE) is None:
        raise ValueError(f"no study in {uri!r} (no {STUDY_FILE})")
    return mirror
