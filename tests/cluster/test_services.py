"""Real gRPC servers on 127.0.0.1: the device server and the study service."""

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from cluster.remote import device, service
from cluster.remote import wire as rpc
from cluster.study import results
from cluster.study.config import Study
from cluster.study.resume import prepare_dir
from tests.cluster.certs import self_signed
from tests.cluster.drivers import status_of
from trainers.settings import LATENCY_REPEATS


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))


def _onnx(model, in_shape, folder) -> bytes:
    from trainers import deploy

    return deploy.export_onnx(model, in_shape, folder / "m.onnx", batch_size=2).read_bytes()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    return _onnx(_model(), (1, 8, 8), tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def slow_onnx(tmp_path_factory):
    big = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1))
    return _onnx(big, (1, 32, 32), tmp_path_factory.mktemp("slow"))


@pytest.fixture
def device_server():
    server, port = device.serve(queue_limit=1, max_mb=1)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_device_server_measures_torchscript_in_a_child_when_allowed():
    server, port = device.serve(limits=device.Limits(allow_torchscript=True))
    client = device.DeviceClient(f"127.0.0.1:{port}")
    payload = device.torchscript_bytes(_model(), (1, 8, 8))
    request = {"input_shape": [1, 8, 8], "batch_sizes": [1, 16], "repeats": 10}
    try:
        answer = client.measure_bytes(payload, **request)
    finally:
        server.stop(grace=None)
    assert [r["batch_size"] for r in answer["results"]] == [1, 16]
    for row in answer["results"]:  # the child's own peak: torch in a fresh process
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["peak_memory_bytes"] > 50 << 20


def test_device_server_measures_onnx_and_caches(device_server, onnx_model):
    client = device.DeviceClient(device_server)
    request = {"format": "onnx", "input_shape": [1, 8, 8], "batch_sizes": [1, 4], "repeats": 5}
    answer = client.measure_bytes(onnx_model, **request)
    assert [r["batch_size"] for r in answer["results"]] == [1, 4] and not answer["cached"]
    for row in answer["results"]:
        assert 0 < row["median_ms"] <= row["p90_ms"] and row["spread_ms"] >= 0
        assert row["peak_memory_bytes"] > 1 << 20
    again = client.measure_bytes(onnx_model, **request)
    assert again["cached"] and again["model_hash"] == answer["model_hash"]


def test_the_device_client_and_server_repeat_as_trainers_do(device_server, monkeypatch):
    asked = []
    client = device.DeviceClient(device_server)
    monkeypatch.setattr(client, "measure_bytes", lambda payload, **wire: asked.append(wire))
    with contextlib.suppress(TypeError):  # the fake answers nothing
        client.latency(_model(), in_shape=(1, 8, 8), onnx=b"graph")
    assert asked[0]["repeats"] == LATENCY_REPEATS and asked[0]["input_shape"] == [1, 8, 8]
    header = {"format": "onnx", "input_shape": [1, 8, 8]}  # a request that names no repeats
    assert device._request(header)["repeats"] == LATENCY_REPEATS
    client.close()


def test_bad_requests_get_the_rightstatus_of(device_server, onnx_model):
    client = device.DeviceClient(device_server)
    onnx = {"format": "onnx", "input_shape": [1, 8, 8]}
    code, details = status_of(lambda: client.measure_bytes(b"not a model", **onnx))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ONNX" in details
    code, details = status_of(lambda: client.measure_bytes(b"x", input_shape=[1, -8]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "input_shape" in details
    code, _ = status_of(lambda: client.measure_bytes(b"x" * (2 << 20), **onnx))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # over the 1 MiB limit
    code, details = status_of(
        lambda: client.measure_bytes(onnx_model, **{**onnx, "input_shape": [3, 8, 8]}, repeats=1)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "failed on input" in details


def test_busy_past_the_queue(device_server, onnx_model, monkeypatch):
    started, release = threading.Event(), threading.Event()
    measure = device.measure

    def held(*args, **kwargs):  # the first request measures until the second one is answered
        started.set()
        release.wait(60)
        return measure(*args, **kwargs)

    monkeypatch.setattr(device, "measure", held)
    onnx = {"format": "onnx", "input_shape": [1, 8, 8], "repeats": 5}
    outcome = {}

    def first():
        outcome["first"] = device.DeviceClient(device_server).measure_bytes(onnx_model, **onnx)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(60)
    client = device.DeviceClient(device_server)
    code, details = status_of(lambda: client.measure_bytes(onnx_model, **{**onnx, "repeats": 4}))
    release.set()
    thread.join()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in details
    assert outcome["first"]["results"][0]["median_ms"] > 0


def test_tokens(tmp_path, onnx_model):
    (tmp_path / "token").write_text("s3cret\n")
    security = rpc.Security.from_files(tmp_path / "token")
    server, port = device.serve(security=security)
    try:
        for token in (None, "wrong"):
            client = device.DeviceClient(f"127.0.0.1:{port}", token=token)
            code, _ = status_of(lambda c=client: c.measure(_model(), (1, 8, 8), repeats=2))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        ok = device.DeviceClient(f"127.0.0.1:{port}", token="s3cret")
        assert ok.latency(None, (1, 8, 8), batch_size=2, repeats=2, onnx=onnx_model) > 0
    finally:
        server.stop(grace=None)
    with pytest.raises(ValueError, match="needs a bearer token"):
        device.serve(host="0.0.0.0")


def test_server_killed_mid_request(slow_onnx):
    server = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "device", "serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = server.stdout.readline().split(" on ")[1].split()[0]
        client = device.DeviceClient(address, timeout=60)
        threading.Timer(1.0, server.send_signal, (signal.SIGKILL,)).start()
        request = {"input_shape": [1, 32, 32], "batch_sizes": [64], "repeats": 1000}
        with pytest.raises(device.DeviceUnreachable, match="unreachable"):
            client.measure_bytes(slow_onnx, format="onnx", **request)
    finally:
        server.kill()
        server.wait()


def test_unreachable_device_fails_the_trial_but_keeps_what_it_trained():
    from trainers import TrialSettings, run_trial

    source = device.RemoteLatency("127.0.0.1:9", retry_s=1.0)  # nothing listens on port 9
    settings = TrialSettings.from_flat({"epochs": 1, "latency_source": source})
    started = time.monotonic()
    result = run_trial({"arch.layers": 1, "arch.width": 16}, settings=settings)
    assert result["status"] == "failed" and result["latency_ms"] is None
    assert result["val_acc"] > 10 and result["params"] > 0  # trained and kept
    assert "127.0.0.1:9 is unreachable" in result["error"] and "tried for 1 s" in result["error"]
    assert time.monotonic() - started >= 0.5


def test_a_device_server_that_comes_back_is_waited_for(onnx_model):
    with socket.socket() as probe:  # a free port, for a server that starts later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = []
    timer = threading.Timer(1.5, lambda: started.append(device.serve(port=port)[0]))
    timer.start()
    try:
        source = device.RemoteLatency(f"127.0.0.1:{port}", retry_s=30.0)
        latency = source(None, (1, 8, 8), batch_size=8, repeats=3, threads=1, onnx=onnx_model)
        assert latency > 0 and started
    finally:
        timer.join()
        for server in started:
            server.stop(grace=None)


def test_trial_latency_measured_on_the_device(device_server):
    from trainers import TrialSettings, run_trial

    source = device.RemoteLatency(device_server)
    flat = {"epochs": 1, "latency_source": source, "latency_repeats": 4}
    settings = TrialSettings.from_flat(flat)
    result = run_trial({"arch.layers": 1, "arch.width": 16}, settings=settings)
    assert result["latency_ms"] > 0


# -- the study service ----------------------------------------------------------------------


def _study_folder(tmp_path, trials=24):
    study = Study.from_dict(
        {
            "name": "svc",
            "dir": str(tmp_path / "svc"),
            "arch": "mlp",
            "train": {"lr": [1e-3, 1e-1]},
            "compress": False,
            "searcher": "random",
            "trials": trials,
        }
    )
    prepare_dir(study, resume=False)
    return tmp_path / "svc"


@pytest.fixture
def study_server(tmp_path):
    folder = _study_folder(tmp_path)
    server, port = service.serve(folder)
    yield folder, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_eight_clients_lose_and_duplicate_nothing(study_server):
    folder, address = study_server
    told, errors = [], []

    def worker():
        client = service.StudyClient(address, "svc")
        while True:
            try:
                trial, config = client.ask()
            except service.StudyError as error:
                if error.code != grpc.StatusCode.FAILED_PRECONDITION:
                    errors.append(error)
                return
            client.tell(trial, {"val_acc": 100 * config["train.lr"]})
            told.append(trial)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(told) == len(set(told)) == 24
    table = results.load(folder)
    assert sorted(table["trial"].to_pylist()) == sorted(told)
    state = service.StudyClient(address, "svc").state()
    assert state["finished"] == 24 and state["pending"] == []


def test_study_service_errors_and_results(study_server):
    folder, address = study_server
    client = service.StudyClient(address, "svc")
    for _ in range(5):
        trial, config = client.ask()
        client.tell(trial, {"val_acc": 100 * config["train.lr"], "latency_ms": 1.0})
    code, details = status_of(lambda: service.StudyClient(address, "other").ask())
    assert code == grpc.StatusCode.NOT_FOUND and "unknown study 'other'" in details
    code, _ = status_of(lambda: client.tell("999", {"val_acc": 1.0}))
    assert code == grpc.StatusCode.NOT_FOUND
    trial, _ = client.ask()
    code, details = status_of(lambda: client.tell(trial, {"val_acc": "high"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "must be a number" in details
    code, details = status_of(lambda: client.tell(trial, {"latency_ms": 1.0}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metrics lack ['val_acc']" in details
    with pytest.raises(service.StudyError, match=r"^Tell failed \(NOT_FOUND\): trial '999' is"):
        client.tell("999", {"val_acc": 1.0})
    remote = client.results(filters=[("val_acc", ">", 2.0)], columns=["trial", "val_acc"])
    local = results.load(folder)
    expected = sorted(v for v in local["val_acc"].to_pylist() if v > 2.0)
    assert sorted(remote["val_acc"].to_pylist()) == expected
    code, details = status_of(lambda: client.results(filters=[("nope", "==", 1)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown column" in details


class _Aborted(Exception):
    pass


class _Context:
    def abort(self, code, details):
        raise _Aborted(code, details)

    def peer(self):
        return "fuzz"


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    folder = _study_folder(tmp_path_factory.mktemp("fuzz"), trials=10_000)
    return {**service.StudyService(folder).handlers(), **device.DeviceService().handlers()}


def _valid_messages():
    header = {"study": "svc", "trial_id": "0", "metrics": {"val_acc": 1.0}, "filters": []}
    device_header = {"format": "onnx", "input_shape": [1, 8, 8], "batch_sizes": [1]}
    return [rpc.encode(header), rpc.encode(device_header, b"PK\x03\x04junk")]


CLEAR = {  # what a bad request may get: a status saying what is wrong, never a traceback
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def _answer_or_status(handler, message: bytes) -> None:
    """Call `handler` as the server does (its errors mapped to statuses, a stream read to its
    end); fail on anything but an answer or a clear status with a sentence saying why."""
    method = rpc._method(handler)
    try:
        if method.response_streaming:
            list(method.unary_stream(message, _Context()))
        else:
            rpc.decode(method.unary_unary(message, _Context()))
    except _Aborted as aborted:
        code, details = aborted.args
        assert code in CLEAR and len(str(details).split()) >= 3, aborted.args


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from(_valid_messages()), st.integers(0, 400), st.binary(max_size=8)),
    ),
    method=st.sampled_from(["Ask", "Tell", "Heartbeat", "State", "Results", "Measure"]),
)
def test_fuzzed_bytes_never_crash_a_decoder(handlers, data, method):
    if isinstance(data, tuple):  # a valid message with bytes overwritten somewhere
        message, at, junk = data
        at = min(at, len(message))
        data = message[:at] + junk + message[at + len(junk) :]
    _answer_or_status(handlers[method], data)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
FIELDS = [  # every field either service reads, and values near their edges
    "study", "trial_id", "metrics", "status", "filters", "columns", "every_step",
    "format", "input_shape", "batch_sizes", "repeats", "warmup", "threads",
]  # fmt: skip
NEAR = st.sampled_from(
    ["svc", "0", "1", "", "stopped", "infeasible", "onnx", "torchscript", [1, 8, 8], [0], [-1],
     [2048, 2048], [1] * 9, [["val_acc", ">", 1]], [["val_acc", ">", "x"]], [["val_acc"]],
     [["nope", "==", 1]], ["trial"], {"val_acc": float("nan")}, {"val_acc": 1e308}, 10**9]
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    method=st.sampled_from(["Ask", "Tell", "Heartbeat", "State", "Results", "Measure"]),
    changes=st.dictionaries(st.sampled_from(FIELDS), NEAR | JSON, max_size=4),
    dropped=st.sets(st.sampled_from(FIELDS), max_size=3),
    payload=st.sampled_from([b"", b"PK\x03\x04junk", b"\x08\x07" * 40]),
)
def test_mutated_headers_get_clear_statuses(handlers, method, changes, dropped, payload):
    header = {"study": "svc", "trial_id": "0", "metrics": {"val_acc": 1.0}, "filters": []}
    header |= {"format": "onnx", "input_shape": [1, 8, 8], "batch_sizes": [1]}
    header = {k: v for k, v in (header | changes).items() if k not in dropped}
    _answer_or_status(handlers[method], rpc.encode(header, payload))


def test_tls(tmp_path, onnx_model):
    self_signed(tmp_path)
    (tmp_path / "token").write_text("tls-token")
    security = rpc.Security.from_files(
        tmp_path / "token", tmp_path / "cert.pem", tmp_path / "key.pem"
    )
    server, port = device.serve(security=security)
    try:
        root = (tmp_path / "cert.pem").read_bytes()
        client = device.DeviceClient(f"localhost:{port}", token="tls-token", root_cert=root)
        assert client.latency(None, (1, 8, 8), batch_size=2, repeats=2, onnx=onnx_model) > 0
        plain = device.DeviceClient(f"localhost:{port}", token="tls-token", timeout=5)
        with pytest.raises((device.DeviceUnreachable, grpc.RpcError)):
            plain.latency(None, (1, 8, 8), batch_size=2, repeats=2, onnx=onnx_model)
    finally:
        server.stop(grace=None)
    with pytest.raises(ValueError, match="both"):
        rpc.Security.from_files(None, tmp_path / "cert.pem", None)
