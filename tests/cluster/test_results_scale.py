"""Results at scale: compaction that survives kill -9, readers that see each row once while it
runs, projected and filtered loads over evolving schemas, lazy SQL, and streamed `Results`."""

import os
import shutil
import signal
import subprocess
import sys
import threading

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cluster.cli import table as table_io
from cluster.remote import service, wire
from cluster.study import parts, results
from cluster.study.config import Study
from cluster.study.resume import prepare_dir
from spaces import Float, Space

SPACE = Space({"lr": Float(1e-3, 1.0, log=True)})
SCHEMA = results.schema(SPACE)


def _write_parts(folder, start: int, count: int, *, schema=SCHEMA, extra=None) -> None:
    """`count` one-row parts, row `i` of trial `i // 3` at step `i % 3`, the third final."""
    writer = results.ResultWriter(folder, schema, compact=False)
    for i in range(start, start + count):
        row = {"trial": str(i // 3), "step": i % 3, "val_acc": float(i), "config": {"lr": 0.1}}
        row |= {"status": "completed" if i % 3 == 2 else "running", "final": i % 3 == 2}
        writer.add(row | (extra or {}), flush=True)


def _ids(folder) -> list[float]:
    return sorted(results.load(folder, every_step=True, columns=["val_acc"])["val_acc"].to_pylist())


CHILD = """
import os, signal, sys
from cluster.study import parts
events, last = 0, int(sys.argv[2])

def count(frame, event, arg):  # every Python and C call and return inside compaction
    global events
    events += 1
    if events == last:
        os.kill(os.getpid(), signal.SIGKILL)

sys.setprofile(count)
parts.compact(sys.argv[1])
"""


def _events_of_compacting(folder, copy) -> int:
    """How many profile events compacting `folder` takes (counted on a copy)."""
    shutil.copytree(folder / "results", copy / "results")
    events = []
    sys.setprofile(lambda *_: events.append(1))
    try:
        parts.compact(copy)
    finally:
        sys.setprofile(None)
    shutil.rmtree(copy)
    return len(events)


def test_compaction_survives_kill_9_at_any_point(tmp_path):
    rng = np.random.default_rng(0)
    study, written = tmp_path / "study", 0
    for _ in range(4):
        _write_parts(study, written, 40)
        written += 40
        last = int(rng.integers(1, _events_of_compacting(study, tmp_path / "copy")))
        child = subprocess.run([sys.executable, "-c", CHILD, str(study), str(last)])
        assert child.returncode == -signal.SIGKILL
        assert _ids(study) == list(map(float, range(written)))  # each row once, none lost
    assert parts.compact(study) > 0
    assert _ids(study) == list(map(float, range(written)))
    left = sorted(n for n in os.listdir(study / "results") if not n.endswith(".lock"))
    assert len(left) == 1 and left[0].endswith(parts.COMPACT)  # no part, no temporary file


def test_readers_see_each_row_once_while_a_writer_compacts(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "PILE", 4)
    monkeypatch.setattr(parts, "LEVELS", 2)  # compacting small parts, and everything, often
    writer = results.ResultWriter(tmp_path, SCHEMA)

    def write():
        for i in range(80):
            writer.add({"trial": str(i), "val_acc": float(i), "final": True}, flush=True)

    thread = threading.Thread(target=write)  # its own lock files, as another process has
    thread.start()
    seen, reads = 0, 0
    while thread.is_alive() or reads < 2:
        try:
            values = _ids(tmp_path) if reads % 2 else _sql_ids(tmp_path)
        except ValueError:  # no part yet
            continue
        assert values == list(map(float, range(len(values))))  # each row once, in a prefix
        assert len(values) >= seen
        seen, reads = len(values), reads + 1
    thread.join()
    assert reads > 4 and _ids(tmp_path) == list(map(float, range(80)))
    assert len(parts.live_files(tmp_path / "results")) < 10  # what readers kept is covered
    parts.compact(tmp_path)  # no one reads: the covered files go
    assert len(list((tmp_path / "results").glob("part-*.parquet"))) == 1


def _sql_ids(folder) -> list[float]:
    table = table_io.query_study(folder, every_step=True, sql="SELECT val_acc FROM results")
    return sorted(table["val_acc"].to_pylist())


def test_covered_parts_left_behind_are_skipped_everywhere(tmp_path):
    _write_parts(tmp_path, 0, 12)
    with parts.reading(tmp_path):  # a reader holds the files: compaction deletes nothing
        assert parts.compact(tmp_path) == 12
    assert len(list((tmp_path / "results").glob("part-*.parquet"))) == 13
    _write_parts(tmp_path, 12, 3)
    assert _ids(tmp_path) == list(map(float, range(15)))
    assert _sql_ids(tmp_path) == list(map(float, range(15)))
    assert parts.compact(tmp_path, small_only=True) == 3  # the 12 leftovers stay covered
    assert _ids(tmp_path) == list(map(float, range(15)))
    assert parts.compact(tmp_path) == 2
    assert len(list((tmp_path / "results").glob("part-*.parquet"))) == 1
    assert _ids(tmp_path) == list(map(float, range(15)))


def test_load_projects_filters_and_unifies_schemas(tmp_path):
    _write_parts(tmp_path, 0, 9)
    wider = pa.schema([*SCHEMA, pa.field("energy_j", pa.float64())])
    _write_parts(tmp_path, 9, 6, schema=wider, extra={"energy_j": 2.5})
    for compacted in (False, True):
        if compacted:
            assert parts.compact(tmp_path) == 15
        every = results.load(tmp_path, every_step=True, columns=["trial", "energy_j"])
        assert every.column_names == ["trial", "energy_j"] and every.num_rows == 15
        assert every["energy_j"].to_pylist() == [None] * 9 + [2.5] * 6
        done = results.load(
            tmp_path, every_step=True, columns=["val_acc"], filter=pc.field("status") == "done"
        )
        assert done.num_rows == 0
        completed = pc.field("status") == "completed"
        final = results.load(tmp_path, columns=["trial", "val_acc"], filter=completed)
        assert final.column_names == ["trial", "val_acc"]
        assert final["val_acc"].to_pylist() == [2.0, 5.0, 8.0, 11.0, 14.0]
        # without every_step the filter applies to each trial's last row, not to its reports
        early = results.load(tmp_path, columns=["trial"], filter=pc.field("val_acc") < 1.5)
        assert early.num_rows == 0
        assert results.load(tmp_path).num_rows == 5
    with pytest.raises(ValueError, match=r"unknown columns \['nope'\]"):
        results.load(tmp_path, columns=["nope"])
    _write_parts(tmp_path, 15, 2)  # trial 5 never finishes: its last report stands for it
    last = table_io.query_study(tmp_path, sql="SELECT trial, val_acc, energy_j FROM results")
    assert last["val_acc"].to_pylist() == [2.0, 5.0, 8.0, 11.0, 14.0, 16.0]
    assert last["energy_j"].to_pylist() == [None, None, None, 2.5, 2.5, None]
    assert results.load(tmp_path, columns=["val_acc"]).equals(last.select(["val_acc"]))


@pytest.fixture
def study_folder(tmp_path):
    study = Study.from_dict(
        {"name": "big", "dir": str(tmp_path / "big"), "arch": "mlp", "compress": False}
    )
    return prepare_dir(study, resume=False), study


def test_results_larger_than_a_message_stream_whole(study_folder):
    study_folder, study = study_folder
    writer = results.ResultWriter(study_folder, results.schema(study.space()))
    for i in range(3000):
        row = {"trial": str(i), "status": "completed", "final": True, "val_acc": float(i)}
        writer.add(row | {"records": "x" * 100, "study": "big"})
    writer.flush()
    cap = 64 << 10
    whole = results.load(study_folder)
    assert whole.num_rows == 3000 and whole.nbytes > 4 * cap  # far past one message
    server, port = service.serve(study_folder, chunk_bytes=cap // 4)
    try:
        client = service.StudyClient(f"127.0.0.1:{port}", "big", max_mb=cap / (1 << 20))
        assert client.results().equals(whole)
        every = client.results(every_step=True, columns=["trial", "records"])
        assert every.num_rows == 3000 and every.column_names == ["trial", "records"]
        kept = client.results(filters=[("val_acc", ">=", 2990.0)], columns=["val_acc"])
        assert kept["val_acc"].to_pylist() == [float(i) for i in range(2990, 3000)]
        with pytest.raises(service.StudyError) as error:
            client.results(filters=[("trial", ">", 3)])
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "filters [['trial', '>', 3]]" in error.value.details
    finally:
        server.stop(grace=None)


def test_a_streamed_method_refuses_a_missing_token(study_folder):
    study_folder, _ = study_folder
    security = wire.Security(token="secret")
    server, port = service.serve(study_folder, security=security)
    try:
        assert (
            service.StudyClient(f"127.0.0.1:{port}", "big", token="secret").results().num_rows == 0
        )
        with pytest.raises(service.StudyError) as error:
            service.StudyClient(f"127.0.0.1:{port}", "big").results()
        assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop(grace=None)


def test_the_newest_tier_merges_files_of_about_one_size(tmp_path):
    def files(*sizes):
        made, start = [], 0
        for i, size in enumerate(sizes):
            _write_parts(tmp_path / f"{len(sizes)}-{i}", start, size)
            parts.compact(tmp_path / f"{len(sizes)}-{i}")
            made += parts.live_files(tmp_path / f"{len(sizes)}-{i}" / "results")
            start += size
        return made

    assert parts.newest_tier(made := files(20, 2, 2, 2)) == made[1:]
    assert parts.newest_tier(made := files(20, 10, 2)) == made  # the newest two, then 20
    assert parts.newest_tier(made := files(45, 10, 2)) == made[1:]


def test_a_long_study_rewrites_each_row_a_few_times_not_once_per_merge(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "PILE", 2)
    monkeypatch.setattr(parts, "LEVELS", 4)
    rewritten, write_compacted = [], parts._write_compacted

    def counted(folder, inputs, names):
        rewritten.append(parts.open_dataset(inputs).count_rows())
        write_compacted(folder, inputs, names)

    monkeypatch.setattr(parts, "_write_compacted", counted)
    writer = results.ResultWriter(tmp_path, SCHEMA)
    for i in range(64):
        writer.add({"trial": str(i), "val_acc": float(i), "final": True}, flush=True)
    assert _ids(tmp_path) == list(map(float, range(64)))
    # merging every compacted file each time rewrites each row linearly more often as the
    # study grows; merging tiers, logarithmically more
    assert sum(rewritten) / 64 < 4, rewritten
