"""A study on `s3://` (moto's S3 server on loopback, in a process of its own) against the same
study in a local folder: seconds per trial, and the resume of a finished 1,000-trial study.

    python -W ignore -m benchmarks.study_uri [--trials 200] [--resume-trials 1000]

Per-trial time: the wall time of a `--trials` study of trivial trials (a study's own trainable
that reports at once, `benchmarks.scale:trivial`, after `--trial-seconds` of sleep), on the same
Ray (2 CPUs), after a warm-up, divided by its trials; the URI's over the folder's is the
overhead of mirroring (target: at most 1.2x). Resume: a finished `--resume-trials` study (its
files written as a run writes them: the searcher's snapshot and journal, compacted Parquet
parts) resumed with nothing left to run, from the URI (staged from it, pushed back) and from a
folder. Run it alone on the machine: it times.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
for _key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    os.environ.setdefault(_key, "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

ROOT = Path(__file__).resolve().parents[1]


def moto_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free loopback port, and the URI options that reach it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    from cluster.study import storage

    deadline = time.monotonic() + 30
    while True:
        try:
            fs, _ = storage.filesystem(f"s3://bench?{options}&allow_bucket_creation=true")
            fs.create_dir("bench")
            return server, options
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


SLEEP = "PARETUNE_BENCH_TRIAL_S"  # how long `sleepy` trials take (set before Ray starts)


def sleepy(config, report):
    """A trial of a fixed length (`SLEEP` seconds), then `benchmarks.scale:trivial`'s report."""
    from benchmarks.scale import trivial

    time.sleep(float(os.environ.get(SLEEP, "0")))
    trivial(config, report)


def timed_run(where: str, trials: int) -> float:
    """Seconds per trial of a `trials`-trial study living in `where`."""
    import dataclasses

    from benchmarks.scale import study_of
    from cluster.raytune import runner

    study = study_of("random", trials, where)  # type: ignore[arg-type]
    study = dataclasses.replace(study, trainable="benchmarks.study_uri:sleepy")
    start = time.perf_counter()
    table = runner.run(study)
    assert table.num_rows == trials, table.num_rows
    return (time.perf_counter() - start) / trials


def finished_study(folder: Path, trials: int):
    """A finished `trials`-trial study in `folder`, written through the store and the writer
    as a run writes it (no Ray: every trial asked, its final row written, then told)."""
    from benchmarks.scale import sphere, study_of
    from cluster.study import results
    from cluster.study.resume import make_searcher, prepare_dir
    from cluster.study.rows import make_row
    from cluster.study.store import StudyStore

    study = study_of("random", trials, folder)
    prepare_dir(study, resume=False)
    store = StudyStore(folder, make_searcher(study))
    writer = results.ResultWriter(folder, results.schema(study.space(), ["y"]), interval=0)
    for _ in range(trials):
        with store.locked() as searcher:
            trial = searcher.ask()
            store.claim(trial.id)
        values = {"y": sphere(trial.config)}
        writer.add(
            make_row(
                values,
                study=study.name,
                trial=trial.id,
                status="completed",
                config=trial.config,
                final=True,
            )
        )
        with store.locked() as searcher:
            searcher.tell(trial.id, values)
    store.compact()
    results.compact(folder)
    return study


def resume_seconds(study, where: str) -> float:
    import dataclasses

    from cluster.raytune import runner

    start = time.perf_counter()
    table = runner.run(dataclasses.replace(study, dir=where), resume=True)
    assert table.num_rows == study.trials, table.num_rows
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--resume-trials", type=int, default=1000)
    parser.add_argument("--trial-seconds", type=float, default=0.0, help="each trial's length")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "study_uri.json")
    args = parser.parse_args(argv)
    import ray

    from cluster.study import storage

    os.environ[SLEEP] = str(args.trial_seconds)  # before Ray: its workers inherit it
    server, options = moto_server()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            timed_run(str(Path(scratch) / "warm-up"), 20)  # workers started, modules imported
            row = {
                "folder_s_per_trial": timed_run(str(Path(scratch) / "local"), args.trials),
                "uri_s_per_trial": timed_run(f"s3://bench/run?{options}", args.trials),
            }
            row["uri_over_folder"] = row["uri_s_per_trial"] / row["folder_s_per_trial"]
            study = finished_study(Path(scratch) / "finished", args.resume_trials)
            uri = f"s3://bench/finished?{options}"
            storage.Mirror(uri, Path(scratch) / "finished").push()  # the same files, there
            row["resume_folder_s"] = resume_seconds(study, str(Path(scratch) / "finished"))
            row["resume_uri_s"] = resume_seconds(study, uri)
    finally:
        ray.shutdown()
        server.terminate()
    result = {"trials": args.trials, "trial_seconds": args.trial_seconds, **row}
    result["resume_trials"] = args.resume_trials
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


if __name__ == "__main__":
    main()
