"""Every reader of a study agrees on which trials are feasible (`cluster.study.judge`), a
resume marks the trials a stopped run cut off, one name per column everywhere, and the plots
say what they show (issue 37, items 1, 7, 8 and 10). No Ray: the studies are built here."""

import json
from datetime import UTC, datetime, timedelta

import matplotlib
import pytest

from cluster import cli
from cluster.cli import commands, plot
from cluster.dashboard import views
from cluster.dashboard.feed import StudyFeed
from cluster.dashboard.server import Dashboard
from cluster.study import results, warm
from cluster.study.config import Study
from cluster.study.front import axis_limits, front_layout
from cluster.study.resume import load_study, make_searcher, open_store

matplotlib.use("Agg")
START = datetime(2026, 1, 1, tzinfo=UTC)
# trial 0 was measured over the 3 ms bound after training, and older code wrote `completed`
TRIALS = [(99.0, 4.288, "completed"), (90.0, 2.0, "completed"), (85.0, 1.0, "completed")]


def _study(folder, **changes) -> Study:
    raw = {"name": "bounded", "arch": "mlp", "compress": False, "train": False}
    raw |= {"dir": str(folder), "searcher": "random", "trials": 6}
    raw |= {"objectives": {"val_acc": "max"}, "constraints": {"latency_ms": 3.0}} | changes
    study = Study.from_dict(raw)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps(study.to_dict()))
    return study


def _write(folder, study, trials, *, running=()):
    writer = results.ResultWriter(folder, results.schema(study.space()), compact=False)
    for i, (acc, ms, status) in enumerate(trials):
        config = {"arch.layers": 1 + i % 3, "arch.width": 32}
        row = {"trial": str(i), "status": status, "final": True, "config": config}
        row |= {"val_acc": acc, "latency_ms": ms, "size_bytes": 100 * ms, "violations": "{}"}
        writer.add(row | {"time": START + timedelta(seconds=i), "study": study.name})
    for trial in running:  # an epoch reported, then the run was stopped
        row = {"trial": trial, "status": "running", "final": False, "step": 1, "val_acc": 50.0}
        writer.add(
            row
            | {"config": {"arch.layers": 2, "arch.width": 32}, "time": START, "study": study.name}
        )
    writer.flush()


@pytest.fixture
def bounded(tmp_path):
    folder = tmp_path / "bounded"
    study = _study(folder)
    _write(folder, study, TRIALS)
    return folder, study


def test_a_completed_row_over_a_bound_is_on_no_front_and_never_best(bounded, capsys):
    folder, study = bounded
    commands._print_front(study, results.load(folder))  # the end-of-run front
    shown = [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()[2:]]
    assert shown == ["1"]
    pareto = ["results", str(folder), "--pareto", "val_acc:max,latency_ms:min"]
    assert cli.main(pareto) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["1", "2"]
    assert cli.main(["results", str(folder), "--columns", "trial,status"]) == 0
    assert "0      infeasible" in capsys.readouterr().out
    layout = front_layout(results.load(folder), study, "latency_ms")
    assert layout["front"] == [(1.0, 85.0), (2.0, 90.0)]
    import matplotlib.pyplot as plt

    curve = plot._draw_best(plt, results.load(folder), study).axes[0].lines[0].get_ydata()
    assert max(v for v in curve if v is not None) == 90.0  # best-so-far
    board = Dashboard([StudyFeed(folder, min_interval=0)])  # answers refresh the feeds
    best = board.answer("/api/study/0/best", {})
    assert [p[1] for p in best["points"] if p[2] is not None] == [90.0]
    assert board.answer("/api/study/0/front", {})["front"] == [(1.0, 85.0), (2.0, 90.0)]
    summary = board.answer("/api/studies", {})["studies"][0]
    assert summary["best"]["trial"] == "1" and summary["counts"]["infeasible"] == 1
    detail = board.answer("/api/study/0/trial/0", {})
    assert detail["status"] == "infeasible" and detail["violations"]["latency_ms"] > 0.4
    taken = warm._rows(study, make_searcher(study), str(folder))
    assert [row["status"] for row in taken] == ["infeasible", "completed", "completed"]
    store, done = open_store(study, folder, results.load(folder, every_step=True))
    told = {o["id"]: o["status"] for o in store.searcher.observations}
    assert done == 3 and told == {"0": "infeasible", "1": "completed", "2": "completed"}


def test_a_resume_marks_the_trials_a_stopped_run_cut_off(tmp_path):
    folder = tmp_path / "cut"
    study = _study(folder)
    _write(folder, study, TRIALS[1:], running=["2", "3"])
    _, done = open_store(study, folder, results.load(folder, every_step=True))
    statuses = dict(zip(*(results.load(folder)[c].to_pylist() for c in ("trial", "status"))))
    assert done == 2 and statuses == {"0": "completed", "1": "completed"} | {
        "2": "interrupted",
        "3": "interrupted",
    }
    assert results.load(folder)["error"].to_pylist()[2].startswith("cut off when its run")
    _, done = open_store(study, folder, results.load(folder, every_step=True))
    assert done == 2  # not in the budget, and marked once
    assert results.load(folder, every_step=True).num_rows == 2 + 2 * 2
    feed = StudyFeed(folder)
    feed.refresh()
    assert views.summary(feed)["counts"] == {"completed": 2, "interrupted": 2}
    assert views.trials_page(feed, status="interrupted")["total"] == 2


def test_a_column_goes_by_the_name_the_tables_print(bounded, capsys):
    folder, study = bounded
    assert cli.main(["results", str(folder), "--where", "layers >= 2", "--sort", "layers"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["1", "2"]
    for name in ("layers", "arch.layers", "config.arch.layers"):
        assert cli.main(["results", str(folder), "--columns", f"trial,{name}"]) == 0
        head, *rows = capsys.readouterr().out.splitlines()
        assert head.split() == ["trial", "config.arch.layers"] and rows[2].split() == ["2", "3"]
    assert cli.main(["results", str(folder), "--sql", "SELECT max(layers) AS m FROM results"]) == 0
    assert capsys.readouterr().out.split() == ["m", "3"]
    feed = StudyFeed(folder)
    feed.refresh()
    for where in ("layers >= 2", "arch.layers >= 2", "config.arch.layers >= 2"):
        assert views.trials_page(feed, where=where, sort="layers")["total"] == 2
    assert views.trials_page(feed)["names"][-2:] == ["layers", "width"]
    text = commands.table_io.with_config_text(results.load(folder))["config"].to_pylist()
    assert text[0] == "layers=1 width=32"  # the end-of-run table: the same names


def test_a_short_name_meaning_two_columns_is_refused_naming_both(tmp_path, capsys):
    from cluster.study.rows import resolve

    columns = ["trial", "config.arch.width", "config.teacher.width"]
    with pytest.raises(ValueError, match=r"'width' may mean any of \['config.arch.width', "):
        resolve("width", columns)
    with pytest.raises(ValueError, match=r"no column 'widht' \(did you mean 'width'\?\)"):
        resolve("widht", columns)
    assert resolve("arch.width", columns) == "config.arch.width"


def test_the_dashboard_api_takes_a_studys_name(bounded, tmp_path):
    folder, _ = bounded
    other = tmp_path / "other"
    _write(other, _study(other, name="other"), TRIALS[1:])
    board = Dashboard([StudyFeed(folder), StudyFeed(other)])
    assert board.answer("/api/study/other/trials", {})["total"] == 2
    assert board.answer("/api/study/bounded/trials", {})["total"] == 3
    with pytest.raises(views.NotFound, match=r"no study 'nosuch'.*\['bounded', 'other'\]"):
        board.answer("/api/study/nosuch/best", {})


def test_plots_count_whole_trials_and_say_when_nothing_is_feasible(tmp_path, capsys):
    import matplotlib.pyplot as plt

    folder = tmp_path / "none"
    study = _study(folder)
    _write(folder, study, [(90.0, 5.0, "completed"), (80.0, 4.0, "infeasible")])
    paths = plot.plot_study(folder, load_study(folder))
    assert [p.name for p in paths] == ["best-so-far.png"]
    assert "no feasible trial yet" in capsys.readouterr().out
    figure = plot._draw_best(plt, results.load(folder), study)
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert any("no feasible trial yet" in t for t in texts)
    three = tmp_path / "three"
    _write(three, _study(three), TRIALS)
    for table in (results.load(folder), results.load(three)):
        figure = plot._draw_best(plt, table, study)
        figure.canvas.draw()
        ticks = [t for t in figure.axes[0].get_xticks() if 0.5 <= t <= table.num_rows + 0.5]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_a_one_point_front_stays_within_100_percent(tmp_path):
    low, high, _ = axis_limits([99.0], percent=True)
    assert 97 < low < 99 < high <= 100.0
    low, high, _ = axis_limits([100.0], percent=True)
    assert 98 < low < 100 == high
    folder = tmp_path / "one"
    study = _study(folder)
    _write(folder, study, [(99.0, 1.0, "completed")])
    layout = front_layout(results.load(folder), study, "latency_ms")
    assert layout["ylim"][1] <= 100.0 and layout["ylim"][0] > 90.0


def test_plot_on_a_read_only_study_suggests_out(bounded, capsys, monkeypatch):
    folder, _ = bounded

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(type(folder), "mkdir", refused)  # as a read-only folder answers, as root
    assert cli.main(["plot", str(folder)]) == 2
    assert "give --out DIR to write them elsewhere" in capsys.readouterr().err


def test_the_recorder_judges_a_final_report_over_a_bound(tmp_path):
    from cluster.raytune.recorder import Recorder
    from cluster.study.store import StudyStore

    folder = tmp_path / "recorded"
    study = _study(folder)
    writer = results.ResultWriter(folder, results.schema(study.space()), compact=False)
    quiet = type("Quiet", (), {"show": lambda self, *args, **kwargs: None})()
    store = StudyStore(folder, make_searcher(study))
    recorder = Recorder(store, study=study, writer=writer, done=0, progress=quiet)
    recorder.ask("tune-0")
    final = {"final": True, "val_acc": 99.0, "latency_ms": 4.288}  # a trainable that did not judge
    recorder.complete("tune-0", final, error=False)
    row = results.load(folder).to_pylist()[0]
    assert row["status"] == "infeasible" and json.loads(row["violations"])["latency_ms"] > 0.4
    told = store.searcher.observations[0]
    assert told["status"] == "infeasible" and told["metrics"]["val_acc"] == 99.0
