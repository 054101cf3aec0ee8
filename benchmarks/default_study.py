"""The built-in default study (`paretune run` with no file, what `make demo` runs), measured:
wall time, trials by status (stopped early by ASHA among them) and the Pareto front found.

    python -m benchmarks.default_study [--dir studies/bench-default]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time

from cluster.cli import table as cli
from cluster.raytune import runner
from cluster.study import results
from cluster.study.defaults import measured_default


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="keep the study here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        study = measured_default(args.dir or f"{folder}/default")
        print(f"budget measured here: {dict(study.constraints)}", flush=True)
        start = time.perf_counter()
        table = runner.run(study, num_cpus=2)
        wall = time.perf_counter() - start
        counts = collections.Counter(table["status"].to_pylist())
        print(f"wall time {wall:.0f} s for {table.num_rows} trials: {dict(counts)}")
        front = results.pareto(table, study.objectives).sort_by("val_acc")
        columns = ["trial", "val_acc", "latency_ms", "size_bytes", "test_acc", "config"]
        print(cli.format_table(cli.with_config_text(front), columns))


if __name__ == "__main__":
    main()
