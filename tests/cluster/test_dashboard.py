"""`paretune dashboard`: the incremental reader, the JSON views, the server's token rule, and
the page itself in headless Chromium following a study as new trials land.

`python -m tests.cluster.test_dashboard DIR [TRIALS]` writes a synthetic study of TRIALS
(default 10,000) into DIR when it holds none and prints the server's load time and the page's
first paint there (a quick check, not a timed benchmark)."""

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cluster import cli
from cluster.dashboard import views
from cluster.dashboard.feed import StudyFeed
from cluster.dashboard.server import serve
from cluster.study import results
from cluster.study.config import Study

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START = datetime(2026, 1, 1, tzinfo=UTC)


def make_study(folder: Path) -> Study:
    study = Study.from_dict(
        {
            "name": "board",
            "arch": "mlp",
            "dir": str(folder),
            "compress": {"quantize": [False, True]},
            "objectives": {"val_acc": "max"},
            "constraints": {"latency_ms": 2.0},
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps(study.to_dict()))
    return study


def add_trial(
    writer, trial: int, *, acc, ms, quantize=False, status="completed", steps=3, flush=True
):
    """A trial's reports as the recorder writes them: one row per epoch, then its final row."""
    config = {"arch.layers": 1 + trial % 3, "compress.quantize": quantize}
    when = START + timedelta(seconds=10 * trial)
    for step in range(1, steps + 1):
        curve = acc * (1 - math.exp(-step))
        row = {"trial": str(trial), "status": "running", "final": False, "step": step}
        row |= {"phase": "train", "epoch": step, "val_acc": curve, "train_loss": 1 / step}
        writer.add(row | {"config": config, "time": when + timedelta(seconds=step)})
    if status == "running":
        writer.flush()
        return
    records = [{"step": "quantize", "bits": 8, "scales": [0.1] * 20}] if quantize else []
    final = {"trial": str(trial), "status": status, "final": True, "step": steps, "config": config}
    final |= {"val_acc": acc, "latency_ms": ms, "size_bytes": 1000 * ms, "macs": 50 * ms}
    final |= {"records": json.dumps(records), "time": when + timedelta(seconds=steps + 1)}
    writer.add(
        final if status == "completed" else final | {"error": "ValueError: boom"}, flush=flush
    )


@pytest.fixture
def study_dir(tmp_path):
    """Four finished trials (two compressed, one over the latency bound) and one running."""
    folder = tmp_path / "study"
    writer = results.ResultWriter(folder, results.schema(make_study(folder).space()))
    add_trial(writer, 0, acc=90.0, ms=1.5)
    add_trial(writer, 1, acc=93.0, ms=1.0, quantize=True)
    add_trial(writer, 2, acc=97.0, ms=3.0)
    add_trial(writer, 3, acc=20.0, ms=0.5, status="failed")
    add_trial(writer, 4, acc=80.0, ms=0.0, status="running")
    return folder


def test_the_feed_reads_new_files_and_holds_compacted_rows_once(study_dir):
    feed = StudyFeed(study_dir, min_interval=0)

    def held():
        return feed.tables.latest.num_rows, feed.tables.steps.num_rows

    assert feed.refresh() == 1 and held() == (5, 19)
    assert feed.refresh() == 1  # nothing new: same version
    writer = results.ResultWriter(study_dir, results.schema(feed.study.space()), compact=False)
    add_trial(writer, 5, acc=95.0, ms=0.8, quantize=True)
    assert feed.refresh() == 2 and held() == (6, 23)
    assert results.compact(study_dir) > 1  # what the feed holds, merged: not read again
    assert feed.refresh() == 2 and held() == (6, 23)
    add_trial(writer, 6, acc=91.0, ms=0.9)
    results.compact(study_dir)  # merged with a file the feed never read: read afresh, once
    assert feed.refresh() == 4 and held() == (7, 27)
    assert feed.tables.latest["trial"].to_pylist()[-1] == "6"


def test_the_grid_pages_filters_and_sorts_and_names_bad_input(study_dir):
    feed = StudyFeed(study_dir)
    feed.refresh()
    page = views.trials_page(feed, sort="val_acc", desc=True, where="latency_ms <= 1.5", limit=2)
    assert page["total"] == 3 and [row[0] for row in page["rows"]] == ["1", "0"]
    quantized = views.trials_page(feed, where="config.compress.quantize = true and val_acc > 1")
    assert [row[0] for row in quantized["rows"]] == ["1"]
    assert views.trials_page(feed, status="failed")["total"] == 1
    assert views.summary(feed)["best"] == {"trial": "1", "metric": "val_acc", "value": 93.0}
    with pytest.raises(ValueError, match="no column 'acc'"):
        views.trials_page(feed, where="acc > 3")
    with pytest.raises(ValueError, match="status must be one of"):
        views.trials_page(feed, status="done")
    with pytest.raises(ValueError, match="COLUMN OP VALUE"):
        views.trials_page(feed, where="val_acc is big")
    detail = views.trial_detail(feed, "1")
    assert detail["curve"]["step"] == [1, 2, 3] and detail["records"][0]["step"] == "quantize"
    assert detail["records"][0]["scales"][-1] == "... 12 more"


def _get(url: str, token: str | None = None, host: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers |= {"Host": host} if host else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_token_guards_the_data_and_another_host_needs_one(study_dir):
    server, port = serve([study_dir], token="s3cret")
    try:
        base = f"http://127.0.0.1:{port}"
        assert _get(f"{base}/api/studies")[0] == 401
        assert _get(f"{base}/api/studies", "wrong")[0] == 401
        status, body = _get(f"{base}/api/studies", "s3cret")
        assert status == 200 and body["studies"][0]["trials"] == 5
        missing = {"error": "no study '7': there are 1, from 0, named ['board']"}
        assert _get(f"{base}/api/study/7/front", "s3cret") == (404, missing)
        with urllib.request.urlopen(f"{base}/") as page:  # the page itself holds no results
            assert b"paretune" in page.read()
    finally:
        server.shutdown()
    server, port = serve([study_dir])  # no token: only requests naming a loopback host
    try:
        assert _get(f"http://127.0.0.1:{port}/api/studies", host="evil.example:80")[0] == 401
        assert _get(f"http://127.0.0.1:{port}/api/studies", host=f"localhost:{port}")[0] == 200
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="give a token"):
        serve([study_dir], host="0.0.0.0")
    assert cli.main(["dashboard", str(study_dir.parent / "none")]) == 2


def _needs(reason: str | None) -> None:
    """Skip for `reason` (a missing browser or driver), but fail under CI."""
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)


def test_the_page_draws_the_study_and_follows_a_new_trial_in_chromium(study_dir):
    _needs(None if Path(CHROMIUM).exists() else f"no {CHROMIUM}: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _needs("the playwright package is missing: pip install -e '.[dev]'")
    server, port = serve([study_dir], poll_s=0.3)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("body[data-painted]")
            assert page.locator("#grid tbody tr").count() == 5
            # trial 1 (trial 2, more accurate, is over the 2 ms bound: infeasible, off the front)
            assert page.locator("#front circle.front").count() == 1
            assert page.locator("#front path.compressed").count() == 1
            assert page.locator("#front circle.uncompressed").count() == 2
            assert page.locator("#front line.bound").count() == 1
            writer = results.ResultWriter(study_dir, results.schema(make_study(study_dir).space()))
            add_trial(writer, 5, acc=96.0, ms=0.7, quantize=True)  # while the page is open
            page.wait_for_selector("#grid tr[data-trial='5']", timeout=5000)
            assert "best val_acc 96 (trial 5)" in page.inner_text("#studies")
            page.click("#grid tr[data-trial='5']")
            page.wait_for_selector("#curves svg[data-metric='val_acc'] path.curve")
            assert '"quantize"' in page.inner_text("#trial-records")
            page.select_option("#status-filter", "failed")
            page.wait_for_function("document.querySelectorAll('#grid tbody tr').length === 1")
            assert not errors, errors
        finally:
            browser.close()
            server.shutdown()


def write_synthetic(folder: Path, trials: int) -> None:
    """`trials` finished trials of 5 reports each, in part files of 500 trials (as a study's
    parts stand once compacted)."""
    study = make_study(folder)
    writer = results.ResultWriter(
        folder, results.schema(study.space()), interval=math.inf, compact=False
    )
    for trial in range(trials):
        acc = 70 + 25 * math.sin(trial * 0.7) ** 2
        ms = 0.5 + 3 * math.cos(trial * 1.3) ** 2
        add_trial(writer, trial, acc=acc, ms=ms, quantize=trial % 3 == 0, steps=5, flush=False)
        if trial % 500 == 499:
            writer.flush()
    writer.flush()


def first_paint(folder: Path) -> None:
    """Print how long the server takes to load `folder` and the page to paint it."""
    from playwright.sync_api import sync_playwright

    began = time.monotonic()
    server, port = serve([folder])
    loaded = time.monotonic() - began
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        began = time.monotonic()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("body[data-painted]")
        painted = time.monotonic() - began
        rows = page.locator("#grid tbody tr").count()
        browser.close()
    server.shutdown()
    print(f"load {loaded:.2f} s, first paint {painted:.2f} s ({rows} grid rows shown)")


if __name__ == "__main__":
    where = Path(sys.argv[1])
    if not (where / "study.json").exists():
        write_synthetic(where, int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
    first_paint(where)
