"""Warm start: the finished trials of earlier studies seed a new study's searcher.

A study's `warm_start: [studies/old, ...]` (or `paretune run --warm-start DIR`) names earlier
study folders. Before the new study's first trial, each one's trained trials (final rows with
every objective and bounded cost measured) whose configs fit the new space become rows of the
new study: status judged anew under its bounds (`completed` or `infeasible`), phase `warm`,
`warm_from` the folder they came from and `warm_trial` their id there, `time` when they are
copied (their old time is dropped: the source's row has it), written once, under
trial ids `0 .. k-1`. The searcher is told them as it is told any row it never asked
(`resume.reconcile`), so it models them and never proposes their configs again; they are not
counted in the trial budget (`counted`), and `warm.json` records how many there are. A space
whose parameters are not the new one's is refused, naming the missing, extra and changed ones
(`earlier.check`); with the same names but other ranges, the configs outside the new
space are left out.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from cluster.study import judge, results
from cluster.study.errors import ConfigError
from cluster.study.rows import config_of, make_row
from spaces import Space
from spaces.util import write_json

WARM_FROM, WARM_TRIAL = "warm_from", "warm_trial"
PHASE = "warm"
WARM_FILE = "warm.json"
TRAINED = judge.TRAINED


def sources(raw, key: str = "warm_start") -> tuple[str, ...]:
    """A study file's `warm_start` (or `calibrate_from`, `key`): a folder or a list of them,
    made absolute from the cwd."""
    given = [raw] if isinstance(raw, str) else raw
    if not isinstance(given, list | tuple) or not all(isinstance(s, str) and s for s in given):
        raise ConfigError(f"{key}: a study folder or a list of them, got {raw!r}")
    return tuple(dict.fromkeys(str(Path(s).expanduser().resolve()) for s in given))


def added(study, folders, key: str = "warm_start"):
    """`study` with `folders` added to its `warm_start` (the CLI's `--warm-start`), or to its
    `key` (`calibrate_from`: `--calibrate-from`)."""
    if not folders:
        return study
    return type(study).from_dict({**study.to_dict(), key: [*getattr(study, key), *folders]})


def space_differences(space: Space, other: Space) -> list[str]:
    """How `other`'s parameters differ from `space`'s, one phrase each (empty: the same)."""
    missing = [k for k in space.params if k not in other.params]
    extra = [k for k in other.params if k not in space.params]
    changed = [k for k in space.params if k in other.params and space[k] != other[k]]
    phrases = [f"missing {missing}"] * bool(missing) + [f"extra {extra}"] * bool(extra)
    for key in changed:
        here, there = (json.dumps(s[key].to_dict()) for s in (space, other))
        phrases.append(f"{key} is {there} there, {here} here")
    return phrases


def _measured(row: dict, names) -> bool:
    """A trained trial's final row with every metric in `names` a finite number."""
    if row.get("status") not in TRAINED or not row.get("final"):
        return False
    values = [row.get(n) for n in names]
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def _rows(study, searcher, folder: str) -> list[dict]:
    """The warm rows from one earlier study, judged under `searcher`'s bounds."""
    names, objective = searcher.objective.names, searcher.objective
    now = datetime.now(UTC)
    taken, skipped = [], 0
    for row in results.load(folder).to_pylist():
        if not _measured(row, names):
            continue
        config = config_of(row)
        try:
            searcher.space.validate(config)
        except ValueError:
            skipped += 1
            continue
        metrics = {k: v for k, v in row.items() if isinstance(v, float) and k in results.METRICS}
        metrics |= {n: row[n] for n in names}
        over = judge.violations(metrics, dict(objective.constraints))
        origin = (row.get(WARM_FROM), row.get(WARM_TRIAL)) if row.get(WARM_FROM) else None
        taken.append(
            make_row(
                {**row, **metrics},
                study=study.name,
                trial=row["trial"],  # numbered anew by `seed`
                status="infeasible" if over else "completed",
                config=config,
                time=now,  # the new study's: its own time axis starts here, not the old one's
                phase=PHASE,
                violations=json.dumps(over),
                **{WARM_FROM: origin[0] if origin else folder},
                **{WARM_TRIAL: origin[1] if origin else row["trial"]},
            )
        )
    if skipped:
        warnings.warn(
            f"warm_start: {skipped} trained trials of {folder} left out: their configs lie "
            "outside this study's space",
            RuntimeWarning,
            stacklevel=3,
        )
    return taken


def seed(study, searcher, folder: Path, table: pa.Table | None) -> pa.Table | None:
    """Write the warm rows of `study.warm_start` into a study that has not started (`table`
    None, no searcher state), once; returns the study's rows (`table` when nothing was
    written). `searcher` gives the space and the objective; it is told nothing here."""
    if study.warm_start and table is not None and not (folder / WARM_FILE).exists():
        _note(study, folder, table)  # killed between writing the rows and noting them
    if not study.warm_start or table is not None or any(folder.glob("searcher.*")):
        return table
    rows, seen = [], set()
    for source in study.warm_start:
        for row in _rows(study, searcher, source):
            if (row[WARM_FROM], row[WARM_TRIAL]) not in seen:
                seen.add((row[WARM_FROM], row[WARM_TRIAL]))
                rows.append(row)
    if not rows:
        _note(study, folder, None)
        warnings.warn(
            f"warm_start: no trained trial of {list(study.warm_start)} measured "
            f"{list(searcher.objective.names)} in this study's space: the study starts cold",
            RuntimeWarning,
            stacklevel=2,
        )
        return table
    extra = [pa.field(WARM_FROM, pa.string()), pa.field(WARM_TRIAL, pa.string())]
    schema = results.schema(searcher.space, searcher.objective.names)
    # one part file, written atomically, then `warm.json`: a kill between the two is mended
    fields = pa.schema([*schema, *extra])
    writer = results.ResultWriter(folder, fields, interval=math.inf, compact=False)
    for number, row in enumerate(rows):
        writer.add({**row, "trial": str(number), "final": True})
    writer.flush()
    table = results.load(folder, every_step=True)
    _note(study, folder, table)
    return table


def _note(study, folder: Path, table: pa.Table | None) -> None:
    """`warm.json`: how many warm trials the study's rows hold (its budget leaves them out)."""
    warm = 0
    if table is not None and WARM_FROM in table.column_names:
        finals = table.filter(pc.fill_null(table["final"], False))
        warm = finals.num_rows - finals[WARM_FROM].null_count
    write_json(folder / WARM_FILE, {"trials": warm, "sources": list(study.warm_start)})


def count(folder: str | Path) -> int:
    """How many warm trials the study in `folder` was seeded with (0 without a warm start)."""
    path = Path(folder).expanduser() / WARM_FILE
    return int(json.loads(path.read_text())["trials"]) if path.exists() else 0


def counted(searcher, folder: str | Path) -> int:
    """The trials that count against the study's budget: told and pending, warm ones and
    configs refused on price left out."""
    return searcher.trained() + len(searcher.pending) - count(folder)
