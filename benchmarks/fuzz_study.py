"""Study files fuzzed: the strategies of tests/cluster/test_fuzz_study.py (random keys, types,
sizes and nesting) given to `Study.from_dict`, and every fifth case written as YAML for
`read`. Counts the cases, the studies accepted, the refusals by the key their message starts
with, the crashes (anything but a `ConfigError`) and the slowest case.

    python -m benchmarks.fuzz_study [--cases 2000] [--random]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings

from cluster.study import config
from cluster.study.errors import ConfigError
from tests.cluster.test_fuzz_study import names_a_key, study_files


def _kind(message: str) -> str:
    """The key a refusal starts with (`arch_options.stages: ...` -> `arch_options`), and for
    the top level what it says (`study: unknown key`)."""
    head, _, rest = message.partition(":")
    key = re.split(r"[\s(]", head, maxsplit=1)[0].split(".")[0] or "?"
    return f"{key}: {' '.join(rest.split()[:2])}" if key == "study" else key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--random", action="store_true", help="not derandomized")
    args = parser.parse_args()
    counts, refusals, crashes, unnamed = Counter(), Counter(), Counter(), 0
    slowest = (0.0, None)
    folder = Path(tempfile.mkdtemp(prefix="fuzz-study-"))

    @settings(
        max_examples=args.cases,
        derandomize=not args.random,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(raw=study_files)
    def case(raw):
        nonlocal slowest, unnamed
        counts["cases"] += 1
        as_file = isinstance(raw, dict) and counts["cases"] % 5 == 0
        start = time.perf_counter()
        try:
            if as_file:
                path = folder / "study.yaml"
                path.write_text(yaml.safe_dump(raw))
                config.read(path)
            else:
                config.Study.from_dict(raw)
            counts["accepted"] += 1
        except ConfigError as error:
            refusals[_kind(str(error))] += 1
            unnamed += not as_file and not names_a_key(str(error), raw)
        except Exception as error:  # noqa: BLE001 (what the fuzzing looks for)
            where = traceback.extract_tb(error.__traceback__)[-1]
            crashes[f"{type(error).__name__} at {Path(where.filename).name}:{where.lineno}"] += 1
        elapsed = time.perf_counter() - start
        if elapsed > slowest[0]:
            slowest = (elapsed, raw)

    case()
    total = sum(refusals.values())
    print(f"cases: {counts['cases']} (every fifth mapping through read of a YAML file)")
    print(f"accepted: {counts['accepted']}  refused: {total}  crashes: {sum(crashes.values())}")
    print(f"refusals not naming a key of the file: {unnamed}")
    print("refusals by key:")
    for kind, n in refusals.most_common():
        print(f"  {kind:24} {n}")
    for where, n in crashes.most_common():
        print(f"crash: {where} x{n}")
    print(f"slowest case: {slowest[0] * 1000:.1f} ms  {str(slowest[1])[:100]}")


if __name__ == "__main__":
    main()
