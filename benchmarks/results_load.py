"""`results.load` of two columns over many small Parquet parts, before and after compaction.

    python -W ignore -m benchmarks.results_load [--parts 10000]

Writes a synthetic study of `--parts` one-row parts with `ResultWriter` (compaction off, as a
study from before compaction, or one whose writer was killed, leaves them), then loads two
columns of it in a fresh process each time: as `load` did before compaction (every part read
whole, then the columns picked), with `load` over the parts, and with `load` after `compact`.
Per load: wall time, Arrow memory-pool peak, Python heap peak (tracemalloc), files read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

COLUMNS = ("trial", "val_acc")


def synthetic(folder: Path, parts: int) -> Path:
    """A study folder holding `parts` one-row parts (trial `i`, final, `val_acc` = i)."""
    from cluster.study import results
    from spaces import Float, Int, Space

    space = Space({"lr": Float(1e-4, 1e-1, log=True), "depth": Int(1, 4)})
    writer = results.ResultWriter(folder, results.schema(space), compact=False)
    for i in range(parts):
        row = {"study": "big", "trial": str(i), "status": "completed", "final": True}
        row |= {"val_acc": float(i), "config": {"lr": 0.01, "depth": 2}}
        writer.add(row, flush=True)
    return folder


def time_load(folder: str | Path, columns=COLUMNS, *, legacy: bool = False) -> dict:
    """Load `columns` (one row per trial) of the study in `folder` once: seconds, peak Arrow
    memory-pool bytes, peak Python heap bytes, files under `results/`, rows. Call it in a fresh
    process for a clean Arrow peak (the pool's peak never goes down)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cluster.study import results

    pool = pa.default_memory_pool()
    before = pool.max_memory() or 0
    tracemalloc.start()
    start = time.perf_counter()
    if legacy:  # what `load` did before: every part read whole, concatenated, then projected
        files = sorted((Path(folder) / "results").glob("part-*.parquet"))
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        table = results.last_rows(table).select(list(columns))
    else:
        table = results.load(folder, columns=list(columns))
    seconds = time.perf_counter() - start
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "seconds": seconds,
        "arrow_peak_bytes": max((pool.max_memory() or 0) - before, 0),
        "python_peak_bytes": python_peak,
        "files": len(list((Path(folder) / "results").glob("part-*.parquet"))),
        "rows": table.num_rows,
    }


def _in_fresh_process(folder: Path, legacy: bool) -> dict:
    code = (
        "import json, sys; from benchmarks.results_load import time_load; "
        f"print(json.dumps(time_load(sys.argv[1], legacy={legacy})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    from cluster.study import parts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        synthetic(Path(folder), args.parts)
        print(f"wrote {args.parts:,} one-row parts in {time.perf_counter() - start:.1f} s")
        report = {"before_legacy": _in_fresh_process(Path(folder), legacy=True)}
        report["before"] = _in_fresh_process(Path(folder), legacy=False)
        start = time.perf_counter()
        merged = parts.compact(folder)
        report["compact"] = {"seconds": time.perf_counter() - start, "merged": merged}
        report["after"] = _in_fresh_process(Path(folder), legacy=False)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
