"""Two small fixes: warm-started rows take the new study's time (the dashboard's best-so-far
axis starts with the new study), and `--where`/`--sql` leave dotted names inside string
literals alone."""

import json
from datetime import UTC, datetime

from cluster.cli.table import quote_dotted
from cluster.study import results, warm
from cluster.study.config import Study
from cluster.study.resume import make_searcher, prepare_dir
from cluster.study.rows import make_row

OLD = datetime(2020, 1, 1, tzinfo=UTC)


def _study(folder, name: str, **extra) -> Study:
    raw = {"name": name, "dir": str(folder)}
    return Study.from_dict(raw | {"objectives": {"val_acc": "max"}} | extra)


def test_warm_rows_take_the_new_studys_time(tmp_path):
    old = _study(tmp_path / "old", "old")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "study.json").write_text(json.dumps(old.to_dict()))
    writer = results.ResultWriter(tmp_path / "old", results.schema(old.space(), ["val_acc"]))
    searcher = make_searcher(old)
    for trial in range(3):
        config = searcher.ask().config
        row = make_row({"val_acc": 50.0 + trial}, study="old", trial=str(trial),
                       status="completed", config=config, time=OLD, final=True)  # fmt: skip
        writer.add(row, flush=True)
    new = _study(tmp_path / "new", "new", warm_start=[str(tmp_path / "old")])
    began = datetime.now(UTC)
    table = warm.seed(new, make_searcher(new), prepare_dir(new, resume=False), None)
    times = table["time"].to_pylist()
    assert len(times) == 3 and all(t >= began for t in times), times
    assert "warm_time" not in table.column_names  # the old time is dropped, not kept


def test_dotted_names_inside_string_literals_are_left_alone():
    columns = ["trial", "status", "config.arch.s0_width", "note"]
    sql = "note = 'config.arch.s0_width' AND s0_width > 8 AND note <> 'it''s arch.s0_width'"
    assert quote_dotted(sql, columns) == (
        "note = 'config.arch.s0_width' AND \"config.arch.s0_width\" > 8 "
        "AND note <> 'it''s arch.s0_width'"
    )
