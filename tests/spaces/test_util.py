"""`write_atomic` is durable: the data reach the disk before the rename, the rename after."""

import os

import pytest

from spaces.util import write_atomic


@pytest.mark.parametrize("data", [b"bytes", "text"])
def test_write_atomic_fsyncs_the_file_then_renames_then_fsyncs_the_folder(
    tmp_path, monkeypatch, data
):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        stat = os.fstat(fd)
        events.append(("fsync", stat.st_dev, stat.st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace",))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "state.json"
    write_atomic(path, data)
    file, folder = path.stat(), tmp_path.stat()
    expected = [("fsync", file.st_dev, file.st_ino), ("replace",)]
    if os.name == "posix":
        expected.append(("fsync", folder.st_dev, folder.st_ino))
    assert events == expected
    assert path.read_bytes() == (data if isinstance(data, bytes) else data.encode())
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left
