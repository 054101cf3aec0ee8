"""The gRPC services, measured against the alternative in the same run.

    python -m benchmarks.services latency    # device server vs in-process, default chain, batch 64
    python -m benchmarks.services asktell    # 8 clients: our study service vs Optuna's gRPC proxy
    python -m benchmarks.services asktell --trials 10000   # the first and the last 1,000
    python -m benchmarks.services results    # 100,000 rows: over the network vs local Parquet
    python -m benchmarks.services handlers --trials 10000   # the study's handlers, no gRPC

Everything listens on 127.0.0.1. Prints Markdown-ready lines.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def latency(repeats: int) -> None:
    """The same ONNX bytes timed by the same routine, in this process and through the device
    server (both on this machine, one thread, batch 64)."""
    import tempfile

    import torch

    from cluster.remote import device
    from cluster.remote.runtimes import OnnxModel
    from trainers.deploy import export_onnx
    from trainers.models import build_model
    from trainers.settings import DEFAULT_CHAIN

    torch.manual_seed(0)
    model = build_model("chain", DEFAULT_CHAIN, in_shape=(1, 8, 8), num_classes=10).eval()
    with tempfile.TemporaryDirectory() as folder:
        payload = export_onnx(model, (1, 8, 8), Path(folder) / "m.onnx").read_bytes()
    run = OnnxModel(payload)
    server, port = device.serve()
    client = device.DeviceClient(f"127.0.0.1:{port}")
    local, remote = [], []
    try:
        for i in range(repeats):  # alternate, so drift hits both; repeats differ, so no cache
            request = {"input_shape": [1, 8, 8], "batch_sizes": [64], "repeats": 30 + i}
            if i % 2:
                remote.append(
                    client.measure_bytes(payload, format="onnx", **request)["results"][0][
                        "median_ms"
                    ]
                )
            here = device.measure(run, {**request, "warmup": 5, "threads": 1})
            local.append(here[0]["median_ms"])
            if i % 2 == 0:
                remote.append(
                    client.measure_bytes(payload, format="onnx", **request)["results"][0][
                        "median_ms"
                    ]
                )
    finally:
        server.stop(grace=None)
    lm, rm = statistics.median(local), statistics.median(remote)
    print(f"in-process medians (ms): {[round(v, 3) for v in local]}")
    print(f"device server medians (ms): {[round(v, 3) for v in remote]}")
    print(
        f"median of medians: in-process {lm:.3f} ms, device server {rm:.3f} ms, ratio {rm / lm:.3f}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _hammer(clients: int, round_trip, *, seconds: float, trials: int | None) -> list[float]:
    """The moments (monotonic) at which `clients` threads calling `round_trip(i)` finished
    each round trip: for `seconds`, or until `trials` round trips in all when given."""
    done: list[float] = []
    stop = time.monotonic() + seconds
    claimed = iter(range(trials)) if trials else None
    lock = threading.Lock()

    def more() -> bool:
        if claimed is None:
            return time.monotonic() < stop
        with lock:
            return next(claimed, None) is not None

    def run(i):
        while more():
            round_trip(i)
            done.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [start, *sorted(done)]


def _rates(moments: list[float], block: int) -> str:
    """Round trips per second overall, and over the first and the last `block` of them."""
    start, done = moments[0], moments[1:]
    line = f"{len(done) / (done[-1] - start):.0f}/s"
    if block > 1 and len(done) >= 2 * block:  # a timed run (no --trials) has no blocks
        first = block / (done[block - 1] - start)
        last = (block - 1) / (done[-1] - done[-block])
        line += f" (first {block:,}: {first:.0f}/s, last {block:,}: {last:.0f}/s)"
    return line


def asktell(
    seconds: float, trials: int | None = None, clients: int = 8, optuna_too: bool = True
) -> None:
    import optuna

    from cluster.remote import service
    from cluster.study.config import Study
    from cluster.study.resume import prepare_dir

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        study = Study.from_dict(
            {
                "name": "bench",
                "dir": f"{folder}/bench",
                "arch": "mlp",
                "train": {"lr": [1e-4, 1e-1]},
                "compress": False,
                "searcher": "random",
                "trials": 10**9,
            }
        )
        prepare_dir(study, resume=False)
        server, port = service.serve(study.dir)
        ours = [service.StudyClient(f"127.0.0.1:{port}", "bench") for _ in range(clients)]

        def our_round_trip(i):
            trial, config = ours[i].ask()
            ours[i].tell(trial, {"val_acc": config["train.lr"]})

        try:
            paretune_rate = _hammer(clients, our_round_trip, seconds=seconds, trials=trials)
        finally:
            server.stop(grace=None)

    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        journal = optuna.storages.journal.JournalFileBackend(f"{folder}/journal.log")
        storages = {
            "in memory": optuna.storages.InMemoryStorage(),
            "journal file": optuna.storages.JournalStorage(journal),
        }
        for name, storage in storages.items() if optuna_too else ():
            rates[name] = _optuna_rate(storage, clients, seconds, trials)
    block = min(1000, (trials or 0) // 10) or 1
    line = "; ".join(f"Optuna gRPC proxy ({k}) {_rates(v, block)}" for k, v in rates.items())
    budget = f"{trials:,} round trips in all" if trials else f"{seconds:.0f} s each"
    print(
        f"{clients} clients, {budget}: paretune study service {_rates(paretune_rate, block)} "
        f"ask/tell round trips" + (f"; {line}" if line else "")
    )


def _optuna_rate(storage, clients: int, seconds: float, trials: int | None) -> list[float]:
    import optuna

    optuna_port = _free_port()
    thread = threading.Thread(
        target=optuna.storages.run_grpc_proxy_server,
        args=(storage,),
        kwargs={"host": "127.0.0.1", "port": optuna_port},
        daemon=True,
    )
    thread.start()
    time.sleep(1.0)
    proxies = [
        optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=optuna_port) for _ in range(clients)
    ]
    optuna.create_study(study_name="bench", storage=proxies[0])
    studies = [
        optuna.load_study(
            study_name="bench", storage=p, sampler=optuna.samplers.RandomSampler(seed=i)
        )
        for i, p in enumerate(proxies)
    ]

    def optuna_round_trip(i):
        trial = studies[i].ask()
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        studies[i].tell(trial, lr)

    return _hammer(clients, optuna_round_trip, seconds=seconds, trials=trials)


def results_query(repeats: int, rows: int = 100_000) -> None:
    import pyarrow.compute as pc

    from cluster.remote import service
    from cluster.study import results
    from cluster.study.config import Study
    from cluster.study.resume import prepare_dir

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        study = Study.from_dict(
            {"name": "big", "dir": f"{folder}/big", "arch": "mlp", "compress": False, "trials": 1}
        )
        prepare_dir(study, resume=False)
        writer = results.ResultWriter(study.dir, results.schema(study.space()), interval=1e9)
        for i in range(rows):
            writer.add(
                {
                    "study": "big",
                    "trial": str(i // 10),
                    "status": "running" if i % 10 else "completed",
                    "step": i % 10,
                    "val_acc": float(rng.uniform(50, 100)),
                    "latency_ms": float(rng.uniform(0.5, 10)),
                    "config": {"arch.layers": int(rng.integers(1, 4)), "arch.width": 64},
                }
            )
            if i % 20_000 == 19_999:
                writer.flush()
        server, port = service.serve(study.dir)
        client = service.StudyClient(f"127.0.0.1:{port}", "big")
        filters = [("latency_ms", "<", 5.0)]
        remote_times, local_times = [], []
        try:
            for _ in range(repeats):
                start = time.perf_counter()
                remote = client.results(every_step=True, filters=filters)
                remote_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                table = results.load(Path(study.dir), every_step=True)
                local = table.filter(pc.less(table["latency_ms"], 5.0))
                local_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            everything = client.results(every_step=True)
            everything_ms = 1000 * (time.perf_counter() - start)
        finally:
            server.stop(grace=None)
        assert remote.num_rows == local.num_rows
        r, loc = statistics.median(remote_times), statistics.median(local_times)
        print(
            f"{rows:,} rows, filter latency_ms < 5 keeps {local.num_rows:,}: over the network "
            f"{1000 * r:.0f} ms, local Parquet {1000 * loc:.0f} ms (medians of {repeats}), "
            f"ratio {r / loc:.2f}; unfiltered over the network:"
        )
        print(f"  all {everything.num_rows:,} rows in {everything_ms:.0f} ms")


class _Context:  # what the handlers use of gRPC's servicer context
    def peer(self) -> str:
        return "ipv4:127.0.0.1:0"

    def abort(self, code, details):
        raise RuntimeError(details)


def handlers(trials: int, block: int = 1000) -> None:
    """The study service's ask and tell handlers called in this thread, no network: seconds
    per `block` round trips, so that what grows with the study shows apart from gRPC."""
    from cluster.remote import service, wire
    from cluster.study.config import Study
    from cluster.study.resume import prepare_dir

    with tempfile.TemporaryDirectory() as folder:
        study = Study.from_dict(
            {"name": "bench", "dir": f"{folder}/bench", "arch": "mlp", "compress": False}
            | {"train": {"lr": [1e-4, 1e-1]}, "searcher": "random", "trials": 10**9}
        )
        prepare_dir(study, resume=False)
        handler, context = service.StudyService(study.dir), _Context()
        ask, seconds = wire.encode({"study": "bench"}), []
        for _ in range(trials // block):
            start = time.perf_counter()
            for _ in range(block):
                asked, _ = wire.decode(handler.ask(ask, context))
                metrics = {"val_acc": asked["config"]["train.lr"]}
                told = {"study": "bench", "trial_id": asked["trial_id"], "metrics": metrics}
                handler.tell(wire.encode(told), context)
            seconds.append(time.perf_counter() - start)
    print(
        f"ask+tell handlers, seconds per {block:,} round trips: "
        + ", ".join(f"{s:.2f}" for s in seconds)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["latency", "asktell", "results", "handlers"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--trials", type=int, help="asktell: this many round trips, not seconds")
    parser.add_argument("--no-optuna", action="store_true", help="asktell: our service only")
    args = parser.parse_args(argv)
    if args.mode == "latency":
        latency(args.repeats)
    elif args.mode == "asktell":
        for _ in range(args.repeats if args.no_optuna else 1):  # ours alone, repeated
            asktell(args.seconds, args.trials, optuna_too=not args.no_optuna)
    elif args.mode == "handlers":
        handlers(args.trials or 10_000)
    else:
        results_query(args.repeats)


if __name__ == "__main__":
    main()
