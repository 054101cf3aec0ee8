"""The Parquet files under `STUDY/results/`, their compaction, and reading them consistently.

A writer adds `part-<ns>-<hex>.parquet` files and never changes one. Compaction merges files
into `part-<ns>-<hex>-compact.parquet` (named after its first input, so files still sort in
the order their rows were written) whose Parquet metadata lists the files it covers: it is
written under a temporary name, fsynced and renamed into place, and only then are its inputs
deleted. A reader skips every file a listed compacted file covers, so at any moment, a kill -9
included, it sees each row once. Readers hold a shared lock on `.read.lock` while they list and
read; compaction deletes only when it gets that lock exclusively (else the covered files stay,
skipped, and the next compaction deletes them), so no file vanishes under a reader.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

COVERS = b"paretune.covers"
COMPACT = "-compact.parquet"
TEMP = ".compacting-"
PILE = 64  # small parts that make a writer compact them
LEVELS = 8  # compacted files that make a writer merge the newest of them
GROUP_BYTES = 32 << 20  # rows held in memory for one row group of a compacted file


def folder_of(study_dir: str | Path) -> Path:
    return Path(study_dir) / "results"


def part_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def _lock(folder: Path, name: str, mode: int, *, wait: bool):
    """An open lock file holding `flock(mode)`, or None when it is held elsewhere (`wait`
    False) or cannot be made (a read-only study folder: reading then goes unlocked)."""
    try:
        handle = open(folder / name, "a+b")  # noqa: SIM115 (closed by the caller)
    except OSError:
        return None
    try:
        fcntl.flock(handle, mode | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def reading(study_dir: str | Path) -> Iterator[list[Path]]:
    """The live files in row order (no file twice through a compacted file), none of them
    deleted until the block ends."""
    folder = folder_of(study_dir)
    handle = _lock(folder, ".read.lock", fcntl.LOCK_SH, wait=True) if folder.exists() else None
    try:
        yield live_files(folder)
    finally:
        if handle is not None:
            handle.close()


def covers(path: Path) -> list[str]:
    """The names of the files compacted file `path` covers (its Parquet key-value metadata)."""
    return list(_footer(str(path))[0])


def rows_in(path: Path) -> int:
    return _footer(str(path))[1]


@functools.lru_cache(maxsize=1024)  # a compacted file never changes, and its name is unique
def _footer(path: str) -> tuple[tuple[str, ...], int]:
    """What a compacted file covers, and its rows."""
    footer = pq.read_metadata(path)
    return tuple(json.loads((footer.metadata or {}).get(COVERS, b"[]"))), footer.num_rows


def _listing(folder: Path) -> tuple[list[Path], dict[Path, list[str]]]:
    """All part files in name order, and what each compacted one covers."""
    files = sorted(folder.glob("part-*.parquet")) if folder.exists() else []
    return files, {f: covers(f) for f in files if f.name.endswith(COMPACT)}


def live_files(folder: Path) -> list[Path]:
    files, covered = _listing(folder)
    hidden = {name for names in covered.values() for name in names}
    return [f for f in files if f.name not in hidden]


def open_dataset(files: list[Path]) -> ds.Dataset:
    """`files` as one dataset in their order, over the union of their schemas (a metric column
    that appeared later reads as null in the older files)."""
    factory = ds.FileSystemDatasetFactory(
        pa.fs.LocalFileSystem(), [str(f) for f in files], ds.ParquetFileFormat()
    )
    schema = factory.inspect(promote_options="permissive").remove_metadata()
    return factory.finish(schema)


def compact(study_dir: str | Path, *, wait: bool = True, small_only: bool = False, tier=False):
    """Merge the study's live result files into one compacted file and delete what it covers;
    returns how many files it merged (0 when there were fewer than 2, or `wait` is False and
    another process is compacting). `small_only`: only the parts not compacted yet; `tier`:
    only the newest compacted files of about the same size (`newest_tier`), so that a row is
    rewritten a logarithmic number of times over a study, not once per merge."""
    folder = folder_of(study_dir)
    if not folder.exists():
        return 0
    handle = _lock(folder, ".compact.lock", fcntl.LOCK_EX, wait=wait)
    if handle is None:
        return 0
    try:
        for stale in folder.glob(f"{TEMP}*"):  # left by a compaction that was killed
            stale.unlink(missing_ok=True)
        _delete_covered(folder)
        files, covered = _listing(folder)
        hidden = {name for names in covered.values() for name in names}
        inputs = [f for f in files if f.name not in hidden]
        if small_only:
            inputs = [f for f in inputs if not f.name.endswith(COMPACT)]
        elif tier:
            inputs = newest_tier([f for f in inputs if f.name.endswith(COMPACT)])
        if len(inputs) < 2:
            return 0
        present = {f.name for f in files}
        leftovers = [n for f in inputs for n in covered.get(f, ()) if n in present]
        _write_compacted(folder, inputs, [f.name for f in inputs] + leftovers)
        _delete_covered(folder)
        return len(inputs)
    finally:
        handle.close()


def newest_tier(compacted: list[Path]) -> list[Path]:
    """The newest compacted files (in row order) to merge: from the newest back, while the
    next older one holds at most twice the rows of the largest taken; at least the newest two."""
    if len(compacted) < 2:
        return compacted
    taken, largest = [compacted[-1]], rows_in(compacted[-1])
    for older in reversed(compacted[:-1]):
        rows = rows_in(older)
        if len(taken) >= 2 and rows > 2 * largest:
            break
        taken.insert(0, older)
        largest = max(largest, rows)
    return taken


def _write_compacted(folder: Path, inputs: list[Path], names: list[str]) -> None:
    dataset = open_dataset(inputs)
    stamp = inputs[0].name.split("-")[1]
    final = folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}{COMPACT}"
    temp = folder / f"{TEMP}{final.name}"
    with pq.ParquetWriter(temp, dataset.schema, compression="snappy") as writer:
        writer.add_key_value_metadata({COVERS: json.dumps(names)})
        group, size = [], 0
        for batch in dataset.to_batches():  # row groups of GROUP_BYTES, not one per input
            group.append(batch)
            size += batch.nbytes
            if size >= GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(group, dataset.schema))
                group, size = [], 0
        writer.write_table(pa.Table.from_batches(group, dataset.schema))
    with open(temp, "rb") as written:
        os.fsync(written.fileno())
    os.replace(temp, final)
    _sync_folder(folder)


def _delete_covered(folder: Path) -> None:
    """Delete the files a compacted file covers, unless a reader is reading."""
    handle = _lock(folder, ".read.lock", fcntl.LOCK_EX, wait=False)
    if handle is None:
        return
    try:
        _, covered = _listing(folder)
        hidden = {name for names in covered.values() for name in names}
        for name in sorted(hidden):
            (folder / name).unlink(missing_ok=True)
        _sync_folder(folder)
    finally:
        handle.close()


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system that cannot sync a folder
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def compact_if_piled(study_dir: str | Path) -> int:
    """What a writer calls after adding a part: when `PILE` parts are not compacted yet, they
    are merged (the newest tier of compacted files, once more than `LEVELS` of them pile up);
    never waits for another process's compaction."""
    live = live_files(folder_of(study_dir))  # a reader may have kept covered files around
    compacted = sum(f.name.endswith(COMPACT) for f in live)
    if compacted > LEVELS:
        return compact(study_dir, wait=False, tier=True)
    if len(live) - compacted >= PILE:
        return compact(study_dir, wait=False, small_only=True)
    return 0
