"""The dashboard's API under random addresses and query parameters: every answer is JSON a
browser can parse, every refusal a `NotFound` (404) or `ValueError` (400) with a message,
never another exception (500) or a hang."""

import json
import time

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from cluster.dashboard import views
from cluster.dashboard.feed import StudyFeed
from cluster.dashboard.server import Dashboard
from cluster.study import results
from tests.cluster.test_dashboard import add_trial, make_study


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "study"
    writer = results.ResultWriter(folder, results.schema(make_study(folder).space()))
    add_trial(writer, 0, acc=90.0, ms=1.5)
    add_trial(writer, 1, acc=93.0, ms=1.0, quantize=True)
    add_trial(writer, 2, acc=20.0, ms=0.5, status="failed")
    add_trial(writer, 3, acc=80.0, ms=0.0, status="running")
    board = Dashboard([StudyFeed(folder, min_interval=60)])
    board.refresh()
    return board


SEGMENTS = st.sampled_from(
    ["api", "studies", "study", "0", "1", "-1", "00", "9" * 30, "board", "b%6Fard", "%ZZ",
     "trials", "front", "best", "trial", "3", "7", "..", "", " ", "é", "trial%2F1"]
) | st.text(max_size=6)  # fmt: skip
VALUES = st.sampled_from(
    ["", "trial", "val_acc", "latency_ms", "layers", "arch.layers", "config.arch.layers",
     "quantize", "time", "status", "-1", "0", "1", "500", "501", "1e9", "9" * 40, "NaN",
     "completed", "running", "done", "val_acc > 90", "val_acc >= 'x'", "quantize = true",
     "quantize = maybe", "status = completed", "time > 3", "val_acc > 1 and layers != 2",
     "val_acc > 1 AND", "and", "val_acc >", "'", "val_acc = nan", "layers = 1e400",
     "size_bytes", "macs", "nope"]
) | st.text(max_size=12)  # fmt: skip
PATHS = st.sampled_from(
    ["/api/studies", "/api/study/0/trials", "/api/study/board/trials", "/api/study/0/front",
     "/api/study/0/best", "/api/study/0/trial/1", "/api/study/0/trial/3", "/api/study/0/trial/x"]
)  # fmt: skip
RANDOM_PATHS = st.builds(
    lambda shape, parts: shape + "/".join(parts),
    st.sampled_from(["/api/study/0/", "/api/study/board/", "/api/", "/"]),
    st.lists(SEGMENTS, max_size=5),
)
KEYS = st.sampled_from(["sort", "desc", "status", "where", "offset", "limit", "cost"])


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    path=st.tuples(st.integers(0, 3), PATHS, RANDOM_PATHS).map(lambda t: t[1] if t[0] else t[2]),
    query=st.dictionaries(st.one_of(KEYS, KEYS, st.text(max_size=4)), VALUES, max_size=5),
)
@example(path="/api/study/0/trials", query={"where": "time > 3"})  # was a 500: no kernel
def test_any_address_and_query_answers_json_or_a_clear_refusal(dashboard, path, query):
    began = time.monotonic()
    try:
        body = dashboard.answer(path, query)
    except (views.NotFound, ValueError) as error:
        event(f"refused: {type(error).__name__}")
        assert str(error).strip(), (path, query)
    else:
        event("answered")
        json.dumps(body, allow_nan=False)  # what JSON.parse takes: no NaN, no Infinity
    assert time.monotonic() - began < 5, (path, query)
