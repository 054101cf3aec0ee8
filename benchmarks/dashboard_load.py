"""The dashboard under load: 10 concurrent clients on a 10,000-trial study.

    python -W ignore -m benchmarks.dashboard_load [--trials 10000] [--clients 10] [--seconds 20]
        [--dir FOLDER]

Writes a synthetic study (`tests.cluster.test_dashboard.write_synthetic`: `--trials` trials of
five reports each) into `--dir` when it holds none (default a temporary folder), serves it
with `paretune dashboard` in its own process on 127.0.0.1, and runs `--clients` threads for
`--seconds`, each asking what the page asks, in turn: the studies, a page of trials (sorted,
filtered by status or a condition, at an offset drawn from the first 100 pages), the front
(for each cost), best-so-far and one trial's detail. Prints requests done, errors, requests a
second, and latency p50/p95/max, overall and per kind of request.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def requests(rng: random.Random, trials: int):
    """(kind, address) pairs in the order one client asks them, forever."""
    base = "/api/study/0"
    while True:
        offset = 50 * rng.randrange(100)
        yield "studies", "/api/studies"
        yield "trials", f"{base}/trials?sort=val_acc&desc=1&offset={offset}"
        yield (
            "trials",
            f"{base}/trials?status=completed&where=latency_ms%20%3C%3D%202&offset={offset}",
        )
        sort = rng.choice(["layers", "macs", "trial", "latency_ms"])
        yield "trials", f"{base}/trials?sort={sort}&offset={offset}"
        yield "front", f"{base}/front" + rng.choice(["", "?cost=size_bytes", "?cost=macs"])
        yield "best", f"{base}/best"
        yield "trial", f"{base}/trial/{rng.randrange(trials)}"


def client(url: str, seed: int, trials: int, until: float, out: list, errors: list) -> None:
    rng = random.Random(seed)
    for kind, address in requests(rng, trials):
        if time.monotonic() >= until:
            return
        began = time.monotonic()
        try:
            with urllib.request.urlopen(url + address, timeout=30) as reply:
                json.loads(reply.read())
            out.append((kind, time.monotonic() - began))
        except Exception as error:  # an error is counted, and the client goes on
            errors.append(f"{kind} {address}: {error}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def report(done: list, errors: list, seconds: float) -> None:
    def line(name: str, times: list[float]) -> str:
        p50, p95 = (1000 * percentile(times, q) for q in (0.5, 0.95))
        return f"{name:8} {len(times):6} {p50:8.1f} {p95:8.1f} {1000 * max(times):8.1f}"

    rate = len(done) / seconds
    print(f"{len(done)} requests in {seconds:.1f} s ({rate:.1f}/s), {len(errors)} errors")
    print(f"{'kind':8} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    print(line("all", [t for _, t in done]))
    for kind in dict.fromkeys(k for k, _ in done):
        print(line(kind, [t for k, t in done if k == kind]))
    for error in errors[:5]:
        print("error:", error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", help="the study folder (written when it holds no study)")
    args = parser.parse_args()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="dashboard-load-")) / "study"
    if not (folder / "study.json").exists():
        from tests.cluster.test_dashboard import write_synthetic

        began = time.monotonic()
        write_synthetic(folder, args.trials)
        print(f"wrote {args.trials} trials in {time.monotonic() - began:.1f} s to {folder}")
    command = [sys.executable, "-m", "cluster.cli", "dashboard", str(folder), "--port", "0"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
        if not found:
            raise SystemExit("the dashboard did not start")
        url = f"http://127.0.0.1:{found.group(1)}"
        done, errors = [], []
        began = time.monotonic()
        until = began + args.seconds
        threads = [
            threading.Thread(target=client, args=(url, seed, args.trials, until, done, errors))
            for seed in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report(done, errors, time.monotonic() - began)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
