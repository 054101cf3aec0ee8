import json

import pyarrow.parquet as pq
import pytest

from cluster import cli
from cluster.study import results
from spaces import Choice, Float, Int, Space

SPACE = Space(
    {
        "lr": Float(1e-3, 1.0, log=True),
        "depth": Int(1, 3),
        "act": Choice(("relu", "gelu")),
        "prune": Choice((False, True)),
    }
)


def _rows(writer):
    points = [(90.0, 3.0), (95.0, 5.0), (80.0, 1.0), (85.0, 4.0), (99.0, 9.0)]
    for i, (acc, lat) in enumerate(points):
        config = {"lr": 0.01, "depth": 2, "act": "relu", "prune": bool(i % 2)}
        for step in (1, 2):
            writer.add(
                {
                    "trial": str(i),
                    "status": "running",
                    "step": step,
                    "val_acc": acc - 5,
                    "config": config,
                    "study": "s",
                }
            )
        writer.add(
            {
                "trial": str(i),
                "status": "completed",
                "final": True,
                "step": 2,
                "val_acc": acc,
                "latency_ms": lat,
                "config": config,
                "study": "s",
                "records": [{"step": "prune"}],
            },
            flush=True,
        )


def test_parts_are_appended_never_rewritten(tmp_path):
    writer = results.ResultWriter(tmp_path, results.schema(SPACE), interval=3600)
    writer.add({"trial": "0", "status": "running", "step": 1, "config": {"lr": 0.1}})
    writer.flush()
    first = sorted((tmp_path / "results").glob("part-*.parquet"))
    stamp = first[0].stat().st_mtime_ns
    _rows(writer)
    parts = sorted((tmp_path / "results").glob("part-*.parquet"))
    assert len(parts) == 6 and parts[0] == first[0] and parts[0].stat().st_mtime_ns == stamp
    schema = pq.read_schema(parts[-1])
    assert str(schema.field("config.depth").type) == "int64"
    assert str(schema.field("config.prune").type) == "bool"
    assert str(schema.field("config.act").type) == "string"


def test_load_final_rows_and_pareto(tmp_path):
    _rows(results.ResultWriter(tmp_path, results.schema(SPACE)))
    every = results.load(tmp_path, every_step=True)
    final = results.load(tmp_path)
    assert every.num_rows == 15 and final.num_rows == 5
    assert sorted(final["val_acc"].to_pylist()) == [80, 85, 90, 95, 99]
    assert json.loads(final["records"][0].as_py()) == [{"step": "prune"}]
    front = results.pareto(final, {"val_acc": "max", "latency_ms": "min"})
    assert sorted(front["trial"].to_pylist()) == ["0", "1", "2", "4"]  # (85, 4) is dominated
    with pytest.raises(ValueError, match="no column 'acc'"):
        results.pareto(final, {"acc": "max"})
    with pytest.raises(ValueError, match="is this a study folder"):
        results.load(tmp_path / "elsewhere")


def test_results_command(tmp_path, capsys):
    _rows(results.ResultWriter(tmp_path, results.schema(SPACE)))
    assert (
        cli.main(["results", str(tmp_path), "--where", "latency_ms < 5", "--sort", "val_acc:desc"])
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[1].split()[0] == "0"  # 90 first
    assert (
        cli.main(
            [
                "results",
                str(tmp_path),
                "--pareto",
                "val_acc:max,latency_ms:min",
                "--out",
                str(tmp_path / "front.csv"),
            ]
        )
        == 0
    )
    assert len((tmp_path / "front.csv").read_text().strip().splitlines()) == 5
    assert cli.main(["results", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())) == 5
    assert (
        cli.main(
            [
                "results",
                str(tmp_path),
                "--sql",
                "SELECT count(*) AS n FROM results WHERE status = 'completed'",
            ]
        )
        == 0
    )
    assert "5" in capsys.readouterr().out.splitlines()[-1]
    assert cli.main(["results", str(tmp_path), "--where", "no_such_column > 1"]) == 2
    assert cli.main(["results", str(tmp_path), "--out", str(tmp_path / "r.xlsx")]) == 2


def test_a_built_row_round_trips_its_config_through_parquet(tmp_path):
    from cluster.study.rows import config_columns, config_of, make_row

    config = {"lr": 0.01, "depth": 2, "prune": True}  # `act` inactive: no value
    row = make_row({"val_acc": 90.0}, study="s", trial="7", status="completed", config=config)
    writer = results.ResultWriter(tmp_path, results.schema(SPACE))
    writer.add({**row, "final": True}, flush=True)
    stored = results.load(tmp_path).to_pylist()[0]
    assert config_of(stored) == config
    assert config_columns(stored) == [f"config.{k}" for k in SPACE.params]
    assert (stored["trial"], stored["status"], stored["val_acc"]) == ("7", "completed", 90.0)
    assert stored["time"] is not None
