"""What the gRPC servers refuse: submitted code, requests past their limits, a token in clear
text; and the study service's leases on the trials it hands out."""

import io
import threading
import time
import tracemalloc

import grpc
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from cluster.remote import device, service
from cluster.remote import wire as rpc
from cluster.study import results
from tests.cluster.drivers import status_of
from tests.cluster.test_services import _Context, _study_folder

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")


class Writer(nn.Module):
    """The exploit: a scripted forward that writes a file through a shared memory map."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        target = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
        target.fill_(88)
        return x + target.sum()


def _exploit(path) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Writer(str(path))), buffer)
    return buffer.getvalue()


def _identity(rank=2, **tensor_options) -> bytes:
    """A one-node ONNX graph (Identity) on a float input of `rank` dimensions of any size."""
    dims = [f"d{i}" for i in range(rank)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    nodes, initializers = [helper.make_node("Identity", ["x"], ["y"])], []
    if tensor_options:
        weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
        weight.data_location = TensorProto.EXTERNAL
        for key, value in tensor_options.items():
            weight.external_data.add(key=key, value=value)
        weight.ClearField("float_data")
        initializers.append(weight)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.fixture
def server():
    server, port = device.serve(limits=device.Limits(memory_mb=1024, timeout_s=0.5))
    yield device.DeviceClient(f"127.0.0.1:{port}")
    server.stop(grace=None)


def test_the_exploit_runs_in_process_so_the_test_means_something(tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"safe")
    torch.jit.load(io.BytesIO(_exploit(target)))(torch.zeros(1))
    assert target.read_bytes() == b"XXXX"


def test_a_default_server_refuses_torchscript_and_the_disk_is_untouched(server, tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"safe")
    code, details = status_of(
        lambda: server.measure_bytes(_exploit(target), format="torchscript", input_shape=[1])
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "--allow-torchscript" in details and "onnx" in details
    assert target.read_bytes() == b"safe"


def test_the_4_gib_request_is_refused_before_allocating(server):
    request = {"format": "onnx", "input_shape": [1, 2048, 2048], "batch_sizes": [1, 256]}
    started = time.monotonic()
    code, details = status_of(lambda: server.measure_bytes(_identity(4), **request))
    assert time.monotonic() - started < 5.0
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"needs {4 * 256 * 2048 * 2048 + len(_identity(4))} bytes" in details
    assert "batch 256" in details and "memory budget of 1024 MiB (--memory-mb)" in details
    handler = device.DeviceService().measure  # the same, measured in this process
    tracemalloc.start()
    with pytest.raises(rpc.OverLimit):
        handler(rpc.encode(request, _identity(4)), _Context())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_a_measurement_past_the_timeout_is_ended(server, tmp_path):
    request = {"format": "onnx", "input_shape": [4], "batch_sizes": [1], "repeats": 1000}
    slow = {**request, "input_shape": [4096, 64], "batch_sizes": [64], "warmup": 100}
    code, details = status_of(lambda: server.measure_bytes(_identity(3), **slow))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "timeout of 0.5 s (--timeout-s)" in details
    assert server.measure_bytes(_identity(), **{**request, "repeats": 5})["results"]


def test_onnx_is_checked_and_may_name_no_file(server, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"\0" * 16)
    outside = _identity(location=str(secret))
    onnx_request = {"format": "onnx", "input_shape": [4]}
    code, details = status_of(lambda: server.measure_bytes(outside, **onnx_request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "outside files" in details
    model = onnx.load_model_from_string(_identity())
    model.graph.node[0].op_type = "NoSuchOperator"
    bad = model.SerializeToString()
    code, details = status_of(lambda: server.measure_bytes(bad, **onnx_request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ONNX checker" in details


def test_torchscript_when_allowed_runs_in_a_limited_child(tmp_path):
    class Greedy(nn.Module):
        def forward(self, x):
            return x + torch.ones(1 << 33, dtype=torch.uint8).sum()  # 8 GiB

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Greedy()), buffer)
    limits = device.Limits(memory_mb=64, allow_torchscript=True)
    server, port = device.serve(limits=limits)
    client = device.DeviceClient(f"127.0.0.1:{port}")
    try:
        request = {"input_shape": [1], "repeats": 1, "warmup": 0}
        code, details = status_of(lambda: client.measure_bytes(buffer.getvalue(), **request))
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "memory" in details or "allocate" in details
    finally:
        server.stop(grace=None)


def test_loading_never_overlaps_timing(monkeypatch):
    """Two requests at once: the second model's load waits for the first one's timing."""
    spans, lock = [], threading.Lock()

    def traced(kind, function):
        def call(*args, **kwargs):
            start = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                time.sleep(0.3) if kind == "time" else None
                with lock:
                    spans.append((kind, start, time.monotonic()))

        return call

    monkeypatch.setattr(device.runtimes, "OnnxModel", traced("load", device.runtimes.OnnxModel))
    monkeypatch.setattr(device, "measure", traced("time", device.measure))
    service_ = device.DeviceService()
    threads = [
        threading.Thread(
            target=service_.measure,
            args=(rpc.encode({"format": "onnx", "input_shape": [4], "repeats": n}, _identity()),),
            kwargs={"context": _Context()},
        )
        for n in (3, 4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loads = [s for s in spans if s[0] == "load"]
    times = [s for s in spans if s[0] == "time"]
    assert len(loads) == len(times) == 2
    for _, load_start, load_end in loads:
        for _, time_start, time_end in times:
            assert load_end <= time_start or time_end <= load_start, spans


def test_a_token_off_loopback_needs_tls():
    with pytest.raises(ValueError, match="needs TLS"):
        device.serve(host="0.0.0.0", security=rpc.Security(token="t"))


# -- leases on the study service's trials ---------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _call(handler, **header):
    return rpc.decode(handler(rpc.encode({"study": "svc", **header}), _Context()))[0]


def test_a_dead_clients_trial_fails_with_lease_expired(tmp_path):
    folder, clock = _study_folder(tmp_path, trials=2), Clock()
    study = service.StudyService(folder, lease_s=10.0, clock=clock)
    kept, dead = _call(study.ask)["trial_id"], _call(study.ask)["trial_id"]
    with pytest.raises(Exception, match="budget of 2 trials is taken"):
        _call(study.ask)
    clock.now = 8.0
    assert _call(study.heartbeat, trial_id=kept)["lease_s"] == 10.0
    clock.now = 12.0  # `dead` sent nothing for 12 s, `kept` a heartbeat 4 s ago
    state = _call(study.state)
    assert state["pending"] == [kept] and state["finished"] == 1
    with pytest.raises(LookupError, match="lease of 10 s expired"):
        _call(study.tell, trial_id=dead, metrics={"val_acc": 1.0})
    _call(study.tell, trial_id=kept, metrics={"val_acc": 1.0})
    rows = results.load(folder).to_pylist()
    failed = [r for r in rows if r["trial"] == dead]
    assert failed[0]["status"] == "failed" and "lease expired" in failed[0]["error"]


def test_requeue_hands_a_dead_clients_trial_to_the_next_ask(tmp_path):
    folder, clock = _study_folder(tmp_path, trials=1), Clock()
    study = service.StudyService(folder, lease_s=5.0, on_expiry="requeue", clock=clock)
    first = _call(study.ask)
    clock.now = 6.0
    _call(study.heartbeat, trial_id=first["trial_id"])  # late, not dead: kept
    with pytest.raises(Exception, match="budget of 1 trials is taken"):
        _call(study.ask)
    clock.now = 12.0
    again = _call(study.ask)
    assert (again["trial_id"], again["config"]) == (first["trial_id"], first["config"])
    assert _call(study.tell, trial_id=first["trial_id"], metrics={"val_acc": 2.0})
    with pytest.raises(ValueError, match="on_expiry must be one of"):
        service.StudyService(folder, on_expiry="retry")


def test_the_client_heartbeats_while_a_trial_runs(tmp_path):
    folder = _study_folder(tmp_path, trials=4)
    server, port = service.serve(folder, lease_s=2.0)
    try:
        client = service.StudyClient(f"127.0.0.1:{port}", "svc")
        alive, _ = client.ask()
        with client.running(alive):
            dead, _ = client.ask()  # never heartbeaten
            time.sleep(5.0)
        assert client.tell(alive, {"val_acc": 1.0}) == "completed"
        code, details = status_of(lambda: client.tell(dead, {"val_acc": 1.0}))
        assert code == grpc.StatusCode.NOT_FOUND and "lease" in details
    finally:
        server.stop(grace=None)
