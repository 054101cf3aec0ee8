"""Benchmark results on disk as JSON, gzipped where the name ends in `.gz` (a long run's
per-trial records are several MB as text)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)  # noqa: SIM115


def read(path: str | Path) -> dict | None:
    """The JSON in `path`; None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    with _open(path, "rt") as file:
        return json.load(file)


def write(path: str | Path, body: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "wt") as file:
        json.dump(body, file)
