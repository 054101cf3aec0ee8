import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_is_the_quickstart_and_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert block == (ROOT / "examples" / "quickstart.py").read_text()
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "'layers'" in out.stdout


def test_cli_lists_searchers_and_prints_spaces():
    run = [sys.executable, "-m", "cluster.cli"]
    listing = subprocess.run([*run, "searchers"], capture_output=True, text=True, check=True)
    assert "grid" in listing.stdout and "points" in listing.stdout
    shown = subprocess.run([*run, "spaces", "nb201"], capture_output=True, text=True, check=True)
    assert '"edge_3_2"' in shown.stdout
    bad = subprocess.run([*run, "spaces", "nb2O1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def _study_blocks() -> list[str]:
    """Every YAML block of README.md that is a study file (or a part of one)."""
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", readme, re.S)


def test_every_readme_study_example_is_read_and_checked(tmp_path):
    import shutil

    from cluster.study.config import read

    blocks = _study_blocks()
    assert len(blocks) >= 3 and "dir: studies/mine" in blocks[0]
    for i, block in enumerate(blocks):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "token").write_text("secret\n")  # the remote latency example's token file
        shutil.copy(ROOT / "examples" / "own_model.py", folder)  # the trainable example's
        (folder / "study.yaml").write_text(block)
        study = read(folder / "study.yaml")
        study.validate()
        assert study.space().params
    main = read(tmp_path / "0" / "study.yaml")
    assert main.space()["train.lr"].low == 3e-4  # `3e-4` is a number, as YAML 1.2 reads it


@pytest.mark.xdist_group("drivers")  # it starts a Ray of its own
def test_the_readme_study_example_runs(tmp_path):
    """The README's study as written, run with 2 trials of 1 epoch each (not 40 of 8) in a
    folder of its own, and without its `warm_start` and `calibrate_from` (earlier studies it does
    not have)."""
    from cluster.study.checks import parse_yaml

    text = _study_blocks()[0]
    trial = {**parse_yaml(text)["trial"], "epochs": 1, "finetune_epochs": 1, "qat_epochs": 1}
    trial |= {"teacher_epochs": 1, "latency_repeats": 4}
    changes = {"dir": str(tmp_path / "mine"), "trials": 2, "trial": trial}
    for key, value in changes.items():  # JSON is YAML: each line replaced, the rest as written
        text = re.sub(rf"^{key}:.*$", f"{key}: {json.dumps(value)}", text, flags=re.M)
    text = re.sub(r"^(warm_start|calibrate_from):.*\n", "", text, flags=re.M)
    (tmp_path / "study.yaml").write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "run", str(tmp_path / "study.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    from cluster.study import results

    rows = results.load(tmp_path / "mine").to_pylist()
    trained = [r for r in rows if not r["refused"]]  # refused on price: rows, not trials
    assert len(trained) == 2 and {r["status"] for r in rows} <= {
        "completed",
        "infeasible",
        "stopped",
    }
