import re
import subprocess
import sys
from pathlib import Path

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
