"""A study's result rows, spelled in one place: a config (the searcher's flat keys,
`{"arch.s0_width": 32}`) is held in a row as one column per key, `config.arch.s0_width`, and
every row is built by `row`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from spaces import Space

PREFIX = "config."


def column(key: str) -> str:
    """The row column holding the searcher's flat config key `key`."""
    return PREFIX + key


def config_columns(names: Iterable[str]) -> list[str]:
    """The config columns among column `names`, in their order."""
    return [name for name in names if name.startswith(PREFIX)]


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
