"""Results as the command line shows and writes them: aligned text, SQL, files."""

from __future__ import annotations

import json
import re
from pathlib import Path


def format_table(table, columns=None, *, limit: int = 50) -> str:
    """An aligned text table of the first `limit` rows."""
    columns = [c for c in (columns or table.column_names) if c in table.column_names]
    rows = table.select(columns).slice(0, limit).to_pylist()

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    if table.num_rows > limit:
        lines.append(f"... {table.num_rows - limit} more rows")
    return "\n".join(lines)


def with_config_text(table):
    """The table with a `config` column: each row's active config as `key=value` text."""
    import pyarrow as pa

    keys = [c for c in table.column_names if c.startswith("config.")]
    rows = table.select(keys).to_pylist()
    text = [
        " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in row.items() if v is not None)
        for row in rows
    ]
    return table.append_column("config", pa.array(text, pa.string()))


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def objective_pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        metric, _, mode = part.partition(":")
        pairs.append((metric.strip(), mode.strip() or "max"))
    return pairs


def query(table, sql: str):
    """`sql` run by DuckDB over `table` registered as `results`; a dotted column name
    (`config.arch.s0_width`) written bare is quoted first, since SQL reads it as table.column."""
    try:
        import duckdb
    except ImportError as error:
        raise ValueError("--where and --sql need DuckDB: pip install 'paretune[sql]'") from error
    connection = duckdb.connect()
    connection.register("results", table)
    try:
        return connection.sql(quote_dotted(sql, table.column_names)).to_arrow_table()
    except duckdb.Error as error:
        raise ValueError(f"query failed: {error}") from error


def quote_dotted(sql: str, columns) -> str:
    """`sql` with each bare dotted column name in double quotes (quoted ones stay as they are)."""
    dotted = sorted((c for c in columns if "." in c), key=len, reverse=True)
    if not dotted:
        return sql
    names = "|".join(re.escape(c) for c in dotted)
    return re.sub(rf'(?<![\w."])({names})(?![\w"])', r'"\1"', sql)


def write(table, path: Path) -> None:
    import pyarrow.csv as csv
    import pyarrow.parquet as pq

    if path.suffix == ".csv":
        csv.write_csv(table, path)
    elif path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(table.to_pylist(), default=str, indent=1))
    else:
        raise ValueError(f"--out {str(path)!r}: the suffix must be .csv, .json or .parquet")
