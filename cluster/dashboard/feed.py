"""A study's results held in memory and brought up to date by reading only the files that
appeared since the last look (a compacted file whose rows are already held is not read again)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cluster.study import judge, parts, results, storage
from cluster.study.resume import load_study


@dataclass(frozen=True)
class Tables:
    """What a feed holds at one moment: `steps` (every row read so far, in the order the files
    were written), `latest` (one row per trial, as `results.load` gives, its status as
    `cluster.study.judge` decides it; both None before any row) and `version`, which grows
    whenever they change."""

    steps: pa.Table | None = None
    latest: pa.Table | None = None
    version: int = 0


class StudyFeed:
    """One study folder: `study` (its saved config) and `tables` (a `Tables`, replaced as a
    whole, so a reader takes it once and sees one moment). `refresh()` looks at most once per
    `min_interval` seconds; it is safe to call from several threads."""

    def __init__(self, folder: str | Path, *, min_interval: float = 0.5):
        # a study on a URI: a local copy, pulled again (its new files only) at each refresh
        self.source = storage.reader(folder) if storage.is_uri(folder) else None
        self.folder = self.source.local if self.source else Path(folder)
        self.study = load_study(folder)
        self.min_interval = min_interval
        self.lock = threading.Lock()
        self.checked = -float("inf")
        self.tables = Tables()
        self.held: set[str] = set()  # files whose rows are in `tables`
        self.covered: dict[str, set[str]] = {}  # compacted file held -> the files it covers

    def _reset(self) -> None:
        self.held, self.covered = set(), {}
        self.tables = Tables(version=self.tables.version + 1)

    @property
    def version(self) -> int:
        return self.tables.version

    def refresh(self) -> int:
        """Read what is new; returns `version`."""
        with self.lock:
            if time.monotonic() - self.checked < self.min_interval:
                return self.version
            if self.source is not None:
                self.source.pull()
            with parts.reading(self.folder) as files:
                fresh = self._new_files(files)
                if fresh is None or self._lost_rows(files):  # compacted over rows never read,
                    # or rows gone (deleted, replaced): start over
                    self._reset()
                    fresh = self._new_files(files)
                if fresh:
                    self._add(parts.open_dataset(fresh).to_table())
            self.checked = time.monotonic()
            return self.version

    def _lost_rows(self, files: list[Path]) -> bool:
        """Whether a held file is gone without a held compacted file covering it (someone
        deleted or replaced the results)."""
        live = {f.name for f in files}
        kept = set().union(*self.covered.values()) if self.covered else set()
        return any(name not in live and name not in kept for name in self.held)

    def _new_files(self, files: list[Path]) -> list[Path] | None:
        """The files to read; None when a new compacted file mixes held and unheld rows."""
        fresh = []
        for path in files:
            if path.name in self.held:
                continue
            if path.name.endswith(parts.COMPACT):
                inside = set(parts.covers(path))
                if inside and inside <= self.held:
                    self.held.add(path.name)
                    self.covered[path.name] = inside
                    continue
                if inside & self.held:
                    return None
                self.covered[path.name] = inside
                self.held |= inside
            self.held.add(path.name)
            fresh.append(path)
        return fresh

    def _add(self, rows: pa.Table) -> None:
        held = self.tables
        if rows.num_rows == 0:
            return
        if held.steps is None:
            self.tables = Tables(rows, self._latest(rows), held.version + 1)
            return
        steps = _concat([held.steps, rows])
        if steps["trial"].num_chunks > 64:
            steps = steps.combine_chunks()
        # a trial's latest row is among its held latest row and the new rows
        latest = self._latest(_concat([held.latest, rows]))
        self.tables = Tables(steps, latest, held.version + 1)

    def _latest(self, rows: pa.Table) -> pa.Table:
        return judge.rejudged(results.last_rows(rows), self.study.constraints)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive")
