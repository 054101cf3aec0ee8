"""Two small helpers every package shares: a "did you mean" hint and an atomic file write."""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def did_you_mean(name, allowed: Iterable) -> str:
    """` (did you mean 'x'?)` for the closest of `allowed` to `name` (or one it begins), or
    `""` when none is."""
    options = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(name), options, n=1)
    close = close or [o for o in options if str(name) and o.startswith(str(name))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` atomically and durably: a temporary file in the same folder,
    flushed to disk, then `os.replace`, then the folder flushed (on POSIX), so a reader sees
    the old file or the new one, never a part, after a kill or a power loss."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; Windows opens no folder for that."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, value) -> None:
    """`value` as JSON, written atomically."""
    write_atomic(path, json.dumps(value))  # dumps runs the C encoder; dump would not
