"""`paretune results`, and results as the command line shows and writes them: aligned text,
SQL, files."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from cluster.study.rows import candidates, config_columns, resolve, short_name

SHOWN = ("trial", "status", "val_acc", "test_acc", "latency_ms", "size_bytes", "macs")


def add_parser(commands) -> None:
    """The `results` subcommand on `commands` (argparse subparsers)."""
    res = commands.add_parser("results", help="query a study's results")
    res.add_argument("study")
    res.add_argument("--every-step", action="store_true", help="every report, not final rows")
    res.add_argument("--where", help='an SQL condition, e.g. "latency_ms < 5" (DuckDB)')
    res.add_argument("--sql", help="a whole SQL query over the table `results` (DuckDB)")
    res.add_argument("--pareto", help="keep the front, e.g. val_acc:max,latency_ms:min")
    res.add_argument("--sort", help="COLUMN or COLUMN:desc")
    res.add_argument("--columns", help="comma-separated columns to print")
    res.add_argument("--limit", type=row_limit, default=50, help="rows to print")
    res.add_argument("--out", help="write .csv, .json or .parquet instead of printing")
    res.set_defaults(func=_cmd_results)


def _cmd_results(args) -> int:
    from cluster.study import results

    if args.where or args.sql:  # DuckDB reads the study's Parquet files lazily
        table = query_study(args.study, every_step=args.every_step, where=args.where, sql=args.sql)
    else:
        table = results.load(args.study, every_step=args.every_step)
    table = judged(table, args.study)
    if args.pareto:
        table = results.pareto(table, objective_pairs(args.pareto))
    if args.sort:
        name, _, order = args.sort.partition(":")
        column = resolve(name, table.column_names, what="--sort")
        table = results.sort_rows(table, column, descending=order == "desc")
    if args.out:
        write(table, Path(args.out))
        print(f"wrote {table.num_rows} rows to {args.out}")
        return 0
    names = [c.strip() for c in args.columns.split(",")] if args.columns else []
    columns = [resolve(name, table.column_names, what="--columns") for name in names]
    print(format_table(table, columns or (None if args.sql else SHOWN), limit=args.limit))
    return 0


def judged(table, study_dir):
    """`table` with its statuses as `cluster.study.judge` decides them under the bounds of the
    study saved in `study_dir` (as they are without one)."""
    from cluster.study import judge
    from cluster.study.resume import STUDY_FILE, load_study

    if "status" not in table.column_names or not (Path(study_dir) / STUDY_FILE).exists():
        return table
    return judge.rejudged(table, load_study(study_dir).constraints)


def format_table(table, columns=None, *, limit: int = 50) -> str:
    """An aligned text table of the first `limit` rows (`limit` >= 0); the last column is not
    padded, so a long config text leaves no run of spaces behind the others."""
    columns = [c for c in (columns or table.column_names) if c in table.column_names]
    rows = table.select(columns).slice(0, limit).to_pylist()

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    cells = [[cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    if table.num_rows > limit:
        lines.append(f"... {table.num_rows - limit} more rows")
    return "\n".join(lines)


def row_limit(text: str) -> int:
    """`--limit`'s value: a whole number of rows, 0 or more."""
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if limit < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of rows, 0 or more; got {text!r}")
    return limit


def with_config_text(table):
    """The table with a `config` column: each row's active config as `key=value` text."""
    import pyarrow as pa

    keys = config_columns(table.column_names)
    names = {key: short_name(key, table.column_names) for key in keys}
    rows = table.select(keys).to_pylist()
    text = [
        " ".join(f"{names[k]}={_short(v)}" for k, v in row.items() if v is not None) for row in rows
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


# The study's files as DuckDB reads them: lazily, each query scanning only the columns and row
# groups it needs. `_file` and `file_row_number` put the rows in the order they were written.
EVERY_STEP = """SELECT * EXCLUDE (_file, file_row_number) FROM read_parquet([{files}],
    union_by_name = true, filename = '_file', file_row_number = true)
    ORDER BY _file, file_row_number"""
LAST_ROWS = """SELECT * EXCLUDE (_file, file_row_number, _rank) FROM (
    SELECT *, row_number() OVER (PARTITION BY trial
        ORDER BY coalesce(final, false) DESC, _file DESC, file_row_number DESC) AS _rank
    FROM read_parquet([{files}],
        union_by_name = true, filename = '_file', file_row_number = true))
    WHERE _rank = 1
    ORDER BY NOT coalesce(regexp_full_match(trial, '[0-9]+'), false),
        TRY_CAST(trial AS HUGEINT), trial"""


def query_study(study_dir, *, every_step=False, where=None, sql=None):
    """`--where` then `--sql` over the study's results (`results`: a row per trial, its final
    row or else its last, like `results.load`; `every_step`: every report), read lazily by
    DuckDB from the study's Parquet files; a query without `sql` gives the rows `where` keeps."""
    from cluster.study import parts

    duckdb = _duckdb()
    with parts.reading(study_dir) as files:  # no file is deleted while the query runs
        if not files:
            raise ValueError(f"no results under {str(parts.folder_of(study_dir))!r}")
        listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        connection = duckdb.connect()
        view = (EVERY_STEP if every_step else LAST_ROWS).format(files=listing)
        try:
            connection.sql(f"CREATE VIEW study_rows AS {view}")
            columns = connection.sql("SELECT * FROM study_rows LIMIT 0").columns
            condition = f" WHERE {quote_dotted(where, columns)}" if where else ""
            connection.sql(f"CREATE VIEW results AS SELECT * FROM study_rows{condition}")
            text = quote_dotted(sql, columns) if sql else "SELECT * FROM results"
            return connection.sql(text).to_arrow_table()
        except duckdb.Error as error:
            raise ValueError(f"query failed: {error}") from error


def _duckdb():
    try:
        import duckdb
    except ImportError as error:
        raise ValueError("--where and --sql need DuckDB: pip install 'paretune[sql]'") from error
    return duckdb


# SQL text: a quoted string or name (kept as it is), or a bare name, dotted or not
SQL_PARTS = re.compile(
    r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"""
)


def quote_dotted(sql: str, columns) -> str:
    """`sql` with each bare name of a config column, in any form `rows.resolve` takes
    (`s0_width`, `arch.s0_width`, `config.arch.s0_width`), as the column's quoted name; a name
    followed by `(` (a function) or meaning no column stays, one meaning several is refused."""

    def quoted(match: re.Match) -> str:
        name = match.group(2)
        if name is None or sql[match.end() :].lstrip().startswith("("):
            return match.group(0)
        if name in columns:
            return f'"{name}"' if "." in name else name
        if not candidates(name, columns):
            return name
        return f'"{resolve(name, columns, what="--where/--sql")}"'

    return SQL_PARTS.sub(quoted, sql)


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
