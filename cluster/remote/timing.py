"""Timing a loaded model in this process: what the device server (for ONNX) and its TorchScript
child process (`cluster.remote.sandbox`) both run. No torch, no ray."""

from __future__ import annotations

import resource
import statistics
import threading
import time

from cluster.remote import wire


def _reset_peak_memory() -> None:
    """Linux resets the peak resident set size (VmHWM) on this write; elsewhere it stays."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass


def _peak_memory() -> int:
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(run, request: dict, *, timeout_s: float = float("inf")) -> list[dict]:
    """Time `run(batch)` for every batch size of `request`: median, p90 and interquartile
    spread in ms, and this process's peak resident memory in bytes while that batch size ran
    (Linux resets the peak before each; elsewhere it is the process's peak so far). Past
    `timeout_s` in all it raises `wire.OverLimit` (calling `run.stop()` when `run` has one, to
    end a run under way); a failing run raises `wire.BadMessage`."""
    import numpy as np

    stop = threading.Timer(timeout_s, getattr(run, "stop", lambda: None))
    stop.daemon = True
    deadline = time.monotonic() + timeout_s
    if timeout_s != float("inf"):
        stop.start()
    rows = []
    try:
        for batch_size in request["batch_sizes"]:
            _reset_peak_memory()
            shape = (batch_size, *request["input_shape"])
            batch = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
            times = []
            for i in range(request["warmup"] + request["repeats"]):
                start = time.perf_counter()
                try:
                    run(batch)
                except Exception as error:
                    _check_time(deadline, timeout_s)
                    lines = [line for line in str(error).splitlines() if line.strip()] or [""]
                    message = f"the model failed on input {list(shape)}: {lines[-1][:300]}"
                    raise wire.BadMessage(message) from error  # the last line says why
                _check_time(deadline, timeout_s)
                if i >= request["warmup"]:
                    times.append(1000.0 * (time.perf_counter() - start))
            rows.append(_row(batch_size, times))
    finally:
        stop.cancel()
    return rows


def _check_time(deadline: float, timeout_s: float) -> None:
    if time.monotonic() > deadline:
        raise wire.OverLimit(
            f"the measurement ran past the server's timeout of {timeout_s:g} s (--timeout-s)"
        )


def _row(batch_size: int, times: list[float]) -> dict:
    import numpy as np

    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return {
        "batch_size": batch_size,
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "spread_ms": quartiles[2] - quartiles[0],
        "peak_memory_bytes": _peak_memory(),
    }
