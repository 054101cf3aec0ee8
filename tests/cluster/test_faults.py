"""Faults a study must survive with nothing lost and its trial budget exact: a Ray worker node
killed mid-trial, an unreadable `searcher.json` on resume, eight service clients next to the
runner for a whole study, and asking a searcher that has nothing left."""

import contextlib
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from cluster.remote import service
from cluster.study import results
from cluster.study.config import Study
from cluster.study.resume import load_study, prepare_dir
from tests.cluster.drivers import (
    STUDY,
    final_rows,
    paretune,
    searcher_state,
    status_of,
    stop,
    write_study,
)


def _finished(folder) -> dict[str, str]:
    """The node of each final row so far, by trial id."""
    finals = final_rows(folder)
    if finals is None:
        return {}
    return dict(zip(finals["trial"].to_pylist(), finals["node"].to_pylist()))


def _wait_for(condition, what, *, process, timeout, log=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            output = log.seek(0) or log.read() if log else ""
            raise AssertionError(f"{what}: the process ended with {process.returncode}\n{output}")
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def _assert_budget_exact(folder, trials):
    """Exactly `trials` final rows, none twice, and a searcher told exactly those trials."""
    finals = final_rows(folder).to_pylist()
    ids = [r["trial"] for r in finals]
    assert len(ids) == len(set(ids)) == trials, sorted(ids)
    state = searcher_state(folder)
    assert not state["pending"]
    told = [o["id"] for o in state["observations"]]
    assert len(told) == len(set(told)) == trials and set(told) == set(ids)
    return {r["trial"]: r for r in finals}


def test_ask_on_an_exhausted_grid_says_so(tmp_path):
    study = Study.from_dict(
        {
            "name": "grid",
            "dir": str(tmp_path / "grid"),
            "arch": "mlp",
            "arch_options": {"layers": [1, 2], "widths": [16]},
            "train": {"lr": [1e-3, 1e-1]},
            "compress": False,
            "searcher": "grid",
            "searcher_options": {"points": 2},
            "trials": 10,  # more than the grid's 2 x 2 configurations
        }
    )
    server, port = service.serve(prepare_dir(study, resume=False))
    try:
        client = service.StudyClient(f"127.0.0.1:{port}", "grid")
        asked = [client.ask() for _ in range(4)]
        assert len({tuple(sorted(config.items())) for _, config in asked}) == 4
        code, details = status_of(client.ask)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "no configuration left" in details and "4 configurations" in details
        for trial, config in asked:  # the trials already handed out are still told
            assert client.tell(trial, {"val_acc": 100 * config["train.lr"]}) == "completed"
        assert client.state()["finished"] == 4
        code, details = status_of(lambda: client.tell(asked[0][0], {"val_acc": 1.0}))
        assert code == grpc.StatusCode.NOT_FOUND  # told once only
        assert details == f"trial '{asked[0][0]}' is not pending in study 'grid'"
        code, _ = status_of(client.ask)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        server.stop(grace=None)


# -- a worker node dies mid-trial ---------------------------------------------------------------


def _two_nodes():
    """Run in a child process: a head and a worker node (1 CPU each) on loopback. Prints the
    address and the worker's node id, kills the worker's processes (SIGKILL) on a line from
    stdin, and stops both at the end of stdin. Kept out of the test process because
    `Cluster.shutdown` resets Ray's process-wide state that a local Ray there relies on."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    print(cluster.address, worker.node_id, flush=True)
    if sys.stdin.readline():
        cluster.remove_node(worker, allow_graceful=False)
        print("killed", flush=True)
        sys.stdin.readline()
    cluster.shutdown()


def _running_on(folder, node):
    """A trial reporting from `node` that has not finished, or None."""
    try:
        rows = results.load(folder, every_step=True).to_pylist()
    except ValueError:
        return None
    finished = {r["trial"] for r in rows if r["final"]}
    running = {r["trial"] for r in rows if r["node"] == node and not r["final"]}
    return min(running - finished, default=None)


def test_a_worker_node_dies_mid_trial(tmp_path):
    nodes = subprocess.Popen(
        [sys.executable, "-c", "from tests.cluster.test_faults import _two_nodes; _two_nodes()"],
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = (tmp_path / "driver.log").open("w+")
    driver, lost = None, []
    try:
        address, worker = nodes.stdout.readline().split()
        assert address.startswith("127.0.0.1:")
        trial = {"epochs": 500, "latency_repeats": 4}  # some 10 s a trial: time to see it run
        config, folder = write_study(
            tmp_path, trials=3, searcher="random", searcher_options={}, trial=trial
        )
        driver = paretune("run", config, "--address", address, stdout=log, stderr=log)
        _wait_for(
            lambda: lost.append(_running_on(folder, worker)) or lost[-1] is not None,
            "a trial running on the worker node",
            process=driver,
            timeout=120,
            log=log,
        )
        nodes.stdin.write("kill\n")
        nodes.stdin.flush()
        assert nodes.stdout.readline().strip() == "killed"
        assert driver.wait(timeout=120) == 0, log.seek(0) or log.read()
    finally:
        if driver is not None:
            stop(driver)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            nodes.communicate("", timeout=60)  # end of stdin: the nodes stop
        stop(nodes)
    after = _assert_budget_exact(folder, 3)
    assert {r["status"] for r in after.values()} == {"completed"}  # nothing recorded failed
    every = results.load(folder, every_step=True).to_pylist()
    assert any(r["trial"] == lost[-1] and r["node"] == worker for r in every)  # it ran there,
    assert after[lost[-1]]["node"] not in (None, worker)  # and again on the node that was left


# -- the study service and the runner on one study ---------------------------------------------


def _runner_rows(folder) -> int:
    """Final rows the runner (not the service) wrote."""
    return sum(not node.startswith("service:") for node in _finished(folder).values())


def _client(address, told, errors, runner_started):
    """Ask, work, tell until the budget is taken; after its first trial a client waits for
    the runner's first finished trial, so that both are sure to share the study."""
    client = service.StudyClient(address, "svc")
    while True:
        try:
            trial, config = client.ask()
        except service.StudyError as error:
            if error.code != grpc.StatusCode.FAILED_PRECONDITION:
                errors.append(("ask", error.code, error.details))
            return
        time.sleep(0.3)  # the work
        try:
            client.tell(trial, {"val_acc": 100 * config["train.lr"]})
        except service.StudyError as error:
            errors.append(("tell", trial, error.code, error.details))
            return
        told.append(trial)
        if not runner_started.wait(timeout=180):
            errors.append(("the runner never finished a trial",))
            return


def test_eight_clients_and_the_runner_share_a_whole_study(tmp_path):
    study = Study.from_dict(
        {**STUDY, "name": "svc", "dir": str(tmp_path / "svc"), "trials": 40, "searcher": "random"}
        | {"searcher_options": {}, "trial": {"epochs": 2, "latency_repeats": 4}}
    )
    folder = prepare_dir(study, resume=False)
    server, port = service.serve(folder)
    runner = paretune("resume", folder, "--cpus", "2", stdout=subprocess.DEVNULL)
    told, errors, runner_started = [], [], threading.Event()
    try:
        # the runner forgets pending trials it finds when it opens the study: start the
        # clients once it has (its first save of searcher.json)
        _wait_for((folder / "searcher.json").exists, "the runner", process=runner, timeout=120)
        arguments = (f"127.0.0.1:{port}", told, errors, runner_started)
        clients = [threading.Thread(target=_client, args=arguments) for _ in range(8)]
        for client in clients:
            client.start()
        _wait_for(lambda: _runner_rows(folder) > 0, "a runner trial", process=runner, timeout=180)
        runner_started.set()
        for client in clients:
            client.join()
        assert runner.wait(timeout=300) == 0
        state = service.StudyClient(f"127.0.0.1:{port}", "svc").state()
    finally:
        runner_started.set()
        stop(runner)
        server.stop(grace=None)
    assert not errors, errors
    assert len(told) == len(set(told)) > 8  # no trial told twice; more than one round each
    after = _assert_budget_exact(folder, 40)
    assert state["finished"] == 40 and state["pending"] == []
    by_service = {t for t, r in after.items() if r["node"].startswith("service:")}
    assert by_service == set(told) and _runner_rows(folder) == 40 - len(told) > 0


# -- an unreadable searcher.json on resume ------------------------------------------------------


def _truncated(text: str, study: Study) -> bytes:
    return text.encode()[: len(text) // 2]


# end to end with a truncated file only: tests/cluster/test_resume.py covers the other damage
@pytest.mark.parametrize("corrupt", [_truncated])
def test_resume_sets_an_unreadable_searcher_state_aside(killed_copy, corrupt):
    folder, _ = killed_copy
    before = {r["trial"]: r for r in final_rows(folder).to_pylist()}
    assert 3 <= len(before) < 6
    state_file = folder / "searcher.json"
    bad = corrupt(state_file.read_text(), load_study(folder))
    state_file.write_bytes(bad)

    resumed = paretune("resume", folder, "--cpus", "2", stderr=subprocess.PIPE, text=True)
    _, errors = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, errors
    assert "paretune: warning:" in errors and "Traceback" not in errors, errors
    assert str(state_file) in errors and "random state" in errors, errors
    kept = list(folder.glob("searcher.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].name in errors
    assert kept[0].read_bytes() == bad  # set aside as it was, for a person to look at

    after = _assert_budget_exact(folder, 6)
    for trial, row in before.items():  # the trials that finished are kept under their ids
        assert after[trial]["val_acc"] == row["val_acc"]
        assert after[trial]["time"] == row["time"]  # and not run again
