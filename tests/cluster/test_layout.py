"""Only `cluster.raytune` imports ray; every module stays small."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("spaces", "search", "trainers", "cluster")


def _imports_ray(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ray" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
            return True
    return False


def test_only_the_ray_tune_part_imports_ray():
    importing = {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if _imports_ray(path)
    }
    assert importing and all(p.startswith("cluster/raytune/") for p in importing), importing


def test_the_rest_of_cluster_runs_without_loading_ray():
    modules = [
        "cluster",
        "cluster.cli",
        "cluster.cli.plot",
        "cluster.study.config",
        "cluster.study.resume",
        "cluster.remote.service",
        "cluster.remote.device",
        "cluster.dashboard.server",
        "cluster.study.warm",
        "cluster.cli.export",
    ]
    code = f"import sys, {', '.join(modules)}; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_is_over_about_250_lines():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / "cluster").rglob("*.py")
    }
    assert max(sizes.values()) <= 280, sorted(sizes.items(), key=lambda item: -item[1])[:3]


def test_no_trainers_module_is_over_300_lines():
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / "trainers").rglob("*.py")
    }
    assert max(sizes.values()) <= 300, sorted(sizes.items(), key=lambda item: -item[1])[:3]
