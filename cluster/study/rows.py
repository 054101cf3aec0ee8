"""A study's result rows, spelled in one place: a config (the searcher's flat keys,
`{"arch.s0_width": 32}`) is held in a row as one column per key, `config.arch.s0_width`, and
every row is built by `make_row`. A config column goes by three names, all accepted wherever a
column is named (`paretune results --where/--columns/--sort`, the dashboard's filter and sort):
`config.arch.s0_width`, its key `arch.s0_width`, and its last part `s0_width` when no other
column ends so (`short_name`, the name the tables print)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from spaces import Space
from spaces.util import did_you_mean

PREFIX = "config."


def column(key: str) -> str:
    """The row column holding the searcher's flat config key `key`."""
    return PREFIX + key


def config_columns(names: Iterable[str]) -> list[str]:
    """The config columns among column `names`, in their order."""
    return [name for name in names if name.startswith(PREFIX)]


def candidates(name: str, columns: Sequence[str]) -> list[str]:
    """The columns `name` may mean: itself when it is one, else `config.<name>`, else each
    config column whose key ends in `.<name>`."""
    if name in columns:
        return [name]
    if column(name) in columns:
        return [column(name)]
    return [c for c in config_columns(columns) if c.endswith(f".{name}")]


def resolve(name: str, columns: Sequence[str], *, what: str = "column") -> str:
    """The one column of `columns` that `name` means (see `candidates`); ValueError naming the
    candidates when several are, and the closest column when none is."""
    found = candidates(name, columns)
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{what}: {name!r} may mean any of {found}; write one of them")
    shown = [short_name(c, columns) for c in columns]
    hint = did_you_mean(name, [*shown, *(c.rsplit(".", 1)[-1] for c in columns)])
    raise ValueError(f"{what}: no column {name!r}{hint}; columns: {shown}")


def short_name(name: str, columns: Sequence[str]) -> str:
    """The name a table prints for column `name`: a config column's last part when that means
    only it among `columns` (`s0_width`), else its key (`arch.s0_width`); any other as it is."""
    if not name.startswith(PREFIX):
        return name
    key = name.removeprefix(PREFIX)
    last = key.rsplit(".", 1)[-1]
    return last if candidates(last, columns) == [name] else key


def flat(config: Mapping) -> dict:
    """`config` as a row's config columns."""
    return {column(key): value for key, value in config.items()}


def config_of(row: Mapping) -> dict:
    """The config a row holds, in the searcher's flat keys; a parameter the config leaves
    inactive (a null cell) is left out."""
    return unprefixed(row, PREFIX)


def unprefixed(values: Mapping, prefix: str) -> dict:
    """The entries of `values` named `prefix<key>`, as `{key: value}`, nulls left out."""
    return {
        key: value for key, value in Space.subconfig(values, prefix).items() if value is not None
    }


def make_row(
    values: Mapping,
    *,
    study: str,
    trial: str,
    status: str,
    config: Mapping,
    time: datetime | None = None,
    **columns,
) -> dict:
    """A study's row for `results.ResultWriter.add`: `values` (a report: metrics and columns of
    its own) with the trial's study, id, status and config, the `time` it is written (None:
    now), and any other `columns` (`final`, `node`, ...) over them."""
    time = time or datetime.now(UTC)
    fixed = {"study": study, "trial": trial, "status": status, "config": dict(config)}
    return {**values, **fixed, "time": time, **columns}
