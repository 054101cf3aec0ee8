"""What the tests that drive `paretune` in processes of their own share: a tiny study, the CLI
in its own session (killing the group takes the Ray it started along), final rows, statuses."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import grpc
import pyarrow.compute as pc
import pytest
import yaml

from cluster.remote import service
from cluster.study import results

STUDY = {
    "arch": "mlp",
    "arch_options": {"layers": [1, 2], "widths": [16, 32]},
    "train": {"lr": [1e-3, 3e-2]},
    "compress": False,
    "searcher": "evolution",
    "searcher_options": {"population": 4, "sample_size": 2},
    "scheduler": "fifo",
    "parallel": 2,
    "trial": {"epochs": 3, "latency_repeats": 4},
}


def write_study(where, **changes):
    """`STUDY` with `changes` as `where/study.yaml`, living in `where/study`."""
    config = {**STUDY, "dir": str(where / "study"), **changes}
    (where / "study.yaml").write_text(yaml.safe_dump(config))
    return where / "study.yaml", where / "study"


def cli_command(*args) -> list[str]:
    """`paretune ARGS` as this interpreter runs it."""
    return [sys.executable, "-m", "cluster.cli", *map(str, args)]


def paretune(*args, **popen) -> subprocess.Popen:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}
    command = cli_command(*args)
    popen.setdefault("text", True)
    # Ctrl-C as in a terminal, also when the tests themselves run as a background job (whose
    # shell ignores SIGINT, which a child would inherit and Python would then leave ignored)
    popen.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(command, env=env, start_new_session=True, **popen)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def final_rows(folder):
    """The final rows written so far, or None before any row."""
    try:
        table = results.load(folder, every_step=True)
    except ValueError:
        return None
    return table.filter(pc.fill_null(table["final"], False))


def final_ids(folder) -> list[str]:
    table = final_rows(folder)
    return [] if table is None else table["trial"].to_pylist()


def status_of(call):
    """The status code and details a call fails with (a device call raises gRPC's own error, a
    study call `StudyError`)."""
    with pytest.raises((grpc.RpcError, service.StudyError)) as caught:
        call()
    error = caught.value
    if isinstance(error, service.StudyError):
        return error.code, error.details
    return error.code(), error.details()


def searcher_state(folder) -> dict:
    """The study's searcher state as a resume would read it (through the study's store)."""
    from cluster.study.resume import load_study, make_searcher
    from cluster.study.store import StudyStore

    store = StudyStore(folder, make_searcher(load_study(folder)))
    with store.locked() as searcher:
        return searcher.state_dict()


def killed_after(config, folder, finished: int) -> float:
    """Run the study `config` (living in `folder`) and SIGKILL its driver once `finished`
    trials have finished, then the Ray it started; returns the moment of the kill."""
    driver = paretune("run", config, "--cpus", "2", stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while (final_rows(folder) is None) or final_rows(folder).num_rows < finished:
            assert driver.poll() is None and time.monotonic() < deadline, "the study never went"
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        return time.time()
    finally:
        time.sleep(0.5)
        stop(driver)  # the Ray processes the driver started
