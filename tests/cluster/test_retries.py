"""A trial Tune retries: its failed attempt's rows are marked, and a trial whose worker node
is removed mid-trial (a darts supernet, a population-based training member) continues on
another node from its last checkpoint (a zero-CPU head and two worker nodes)."""

import threading
import time

import pytest
from ray import cluster_utils

from cluster.raytune.recorder import Progress, Recorder
from cluster.study import results
from cluster.study.store import StudyStore
from tests.cluster.test_cluster_data import _write, run_driver
from tests.cluster.test_darts import STUDY as DARTS

pytestmark = pytest.mark.xdist_group("drivers")

# Enough epochs that the node is removed well before the trial ends: it goes once a report of
# epoch 2 or later reaches the rows (the driver flushes them every 2 s), so Tune holds epoch 1's
# checkpoint by then (it takes a report's checkpoint before the next report)
EPOCHS = {"supernet": 100, "pbt": 400}  # some 0.1 s and 0.02 s each here


def test_a_retried_trials_earlier_rows_are_marked_failed_not_left_running(tmp_path):
    import search
    from cluster.study.config import read

    study = read(_write(tmp_path)[0])
    searcher = search.create("random", study.space(), metric="val_acc", seed=0)
    writer = results.ResultWriter(tmp_path, results.schema(study.space()))
    store = StudyStore(tmp_path, searcher)
    recorder = Recorder(store, study=study, writer=writer, done=0, progress=Progress(study))
    trial = recorder.ask("tune-1").id
    for step in (1, 2):
        recorder.result("tune-1", {"step": step, "val_acc": 10.0 * step, "final": False})
    recorder.retried("tune-1", why="its Ray worker failed (attempt 1 of 3)")
    writer.flush()
    (latest,) = results.load(tmp_path).to_pylist()  # in the retry's gap: failed, not running
    assert (latest["status"], latest["final"], latest["step"]) == ("failed", False, 2)
    assert latest["error"] == "retried: its Ray worker failed (attempt 1 of 3)"
    recorder.result("tune-1", {"step": 3, "val_acc": 30.0, "final": False})  # from step 2's
    recorder.complete("tune-1", {"step": 3, "val_acc": 30.0, "final": True}, error=False)
    every = results.load(tmp_path, every_step=True).to_pylist()
    assert [(r["step"], r["status"], r["final"]) for r in every] == [
        (1, "running", False),
        (2, "running", False),
        (2, "failed", False),
        (3, "running", False),
        (3, "completed", True),
    ]
    (final,) = results.load(tmp_path).to_pylist()  # the retry's final row
    assert (final["trial"], final["status"], final["error"]) == (trial, "completed", None)
    with store.locked() as told:  # told once, by the retry's end
        assert [o["id"] for o in told.observations] == [trial] and not told.pending


# -- a worker node removed mid-trial ------------------------------------------------------------


def drive(study_file: str, address: str) -> None:
    """The driver (a process of its own, `run_driver`): runs the study on the cluster."""
    from cluster.raytune import runner
    from cluster.study.config import read

    runner.run(read(study_file), address=address)


@pytest.fixture
def two_workers():
    """A zero-CPU head and two worker nodes of 1 CPU, each trial's node one of them."""
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield cluster, workers
    finally:
        cluster.shutdown()


def _removed_mid_trial(cluster, workers, study_file, folder, *, reported) -> str:
    """Runs the study; removes the node that runs the trial once a row satisfying `reported`
    (of its rows so far) arrives from it; returns that node's id."""
    errors = []

    def run():
        try:
            run_driver("tests.cluster.test_retries", study_file, cluster.address)
        except BaseException as error:  # noqa: BLE001 - raised again in the test's thread
            errors.append(error)

    driver = threading.Thread(target=run)
    driver.start()
    by_id, removed = {w.node_id: w for w in workers}, None
    deadline = time.monotonic() + 120
    while removed is None and driver.is_alive() and time.monotonic() < deadline:
        try:
            rows = results.load(folder, every_step=True).to_pylist()
        except (ValueError, OSError):
            rows = []
        seen = [r for r in rows if reported(r)]
        if seen and not any(r["final"] for r in rows):
            removed = seen[0]["node"]
            cluster.remove_node(by_id[removed])
        time.sleep(0.05)
    driver.join(timeout=240)
    assert not errors, errors
    assert removed is not None, "no report to remove the node after"
    return removed


def _attempts(rows: list[dict], trial: str) -> tuple[list[dict], list[dict], dict]:
    """A retried trial's reports before its `retried` row, after it, and its final row."""
    mine = [r for r in rows if r["trial"] == trial]
    marks = [i for i, r in enumerate(mine) if (r["error"] or "").startswith("retried: ")]
    assert len(marks) == 1, [(r["status"], r["error"]) for r in mine]
    before, after = mine[: marks[0]], mine[marks[0] + 1 :]
    assert after and after[-1]["final"], after
    return before, after[:-1], after[-1]


def test_a_supernet_trial_continues_from_its_checkpoint_on_another_node(two_workers, tmp_path):
    cluster, workers = two_workers
    text = DARTS.format(dir=tmp_path / "study").replace("trials: 3", "trials: 1")
    text = text.replace("epochs: 1, samples: 64", f"epochs: {EPOCHS['supernet']}, samples: 256")
    (tmp_path / "study.yaml").write_text(text)
    folder = tmp_path / "study"
    node = _removed_mid_trial(
        cluster, workers, tmp_path / "study.yaml", folder, reported=lambda r: (r["epoch"] or 0) >= 2
    )
    rows = results.load(folder, every_step=True).to_pylist()
    before, after, final = _attempts(rows, "0")
    assert {r["node"] for r in before} == {node} and before[0]["epoch"] == 1 < before[-1]["epoch"]
    assert {r["node"] for r in after} | {final["node"]} == {w.node_id for w in workers} - {node}
    resumed = [r["epoch"] for r in after if r["epoch"] is not None]
    # from the last checkpoint Tune took: the last report's, or one before (taken as it came)
    assert resumed and 1 < resumed[0] in (before[-1]["epoch"], before[-1]["epoch"] + 1), resumed
    assert resumed == list(range(resumed[0], EPOCHS["supernet"] + 1))
    assert final["status"] in ("completed", "infeasible") and final["error"] is None, final
    assert results.load(folder)["status"].to_pylist() == [final["status"]]


def test_a_population_member_continues_from_its_snapshot_on_another_node(two_workers, tmp_path):
    cluster, workers = two_workers
    pbt = {"scheduler": "pbt", "train": {"lr": [1e-3, 3e-2]}, "trials": 1, "parallel": 1}
    trial = {"epochs": EPOCHS["pbt"], "latency_repeats": 2}
    study_file, _ = _write(tmp_path, trial=trial, **pbt)
    folder = tmp_path / "study"
    node = _removed_mid_trial(
        cluster, workers, study_file, folder, reported=lambda r: (r["step"] or 0) >= 2
    )
    rows = results.load(folder, every_step=True).to_pylist()
    before, after, final = _attempts(rows, "0")
    assert {r["node"] for r in before} == {node} and before[0]["step"] == 1 < before[-1]["step"]
    assert {r["node"] for r in after} | {final["node"]} == {w.node_id for w in workers} - {node}
    resumed = [r["step"] for r in after]
    assert resumed and 1 < resumed[0] in (before[-1]["step"], before[-1]["step"] + 1), resumed
    assert resumed == list(range(resumed[0], EPOCHS["pbt"] + 1))
    assert (final["status"], final["error"]) == ("completed", None), final
