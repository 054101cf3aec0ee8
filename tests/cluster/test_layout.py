"""Only `cluster.raytune` imports ray; every module stays small, and so does every function of
the trial pipeline."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("package", ["trainers", "spaces", "search"])
def test_no_module_of_the_other_packages_is_over_300_lines(package):
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / package).rglob("*.py")
    }
    assert max(sizes.values()) <= 300, sorted(sizes.items(), key=lambda item: -item[1])[:3]


def test_the_trial_pipeline_has_no_function_over_60_lines():
    tree = ast.parse((ROOT / "trainers" / "trial.py").read_text())
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    assert "run_trial" in lengths and max(lengths.values()) <= 60, lengths


# cluster's parts, lowest first: a module imports only from its own part or from lower ones
# (the package `cluster` itself, a facade naming `results` and `ParetuneSearch`, sits on top)
LAYERS = ("study", "remote", "dashboard", "raytune", "cli", "")


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, known: set[str]) -> list[str]:
    """The modules of `known` an import statement loads (`from P import m` loads P.m when
    that is a module, else P)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if not isinstance(node, ast.ImportFrom) or node.level or node.module not in known:
        return []
    inner = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
    return inner if len(inner) == len(node.names) else [node.module, *inner]


def import_graph(package: str = "cluster") -> dict[str, set[str]]:
    """Each module of `package` -> the modules of `package` it imports, anywhere in its code
    (imports inside functions too)."""
    paths = {_module_of(p): p for p in (ROOT / package).rglob("*.py")}
    known = set(paths)
    return {
        module: {
            target
            for node in ast.walk(ast.parse(path.read_text()))
            for target in _imported(node, known)
            if target != module
        }
        for module, path in paths.items()
    }


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One import circle through each module that lies on one (depth-first search)."""
    found, done = [], set()

    def visit(module, trail):
        if module in trail:
            found.append(trail[trail.index(module) :] + [module])
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return found


FACADES = ("cluster", "cluster.results")  # `cluster.results` is `cluster.study.results`


def _layer(module: str) -> int:
    return LAYERS.index("" if module in FACADES else module.split(".")[1])


def test_the_graph_sees_lazy_imports_and_finds_circles():
    graph = import_graph()
    assert "cluster.raytune.adapter" in graph["cluster"]  # imported inside `__getattr__`
    assert "cluster.study.results" in graph["cluster.study.warm"]  # `from P import module`
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_has_import_circles(package):
    assert _circles(import_graph(package)) == []


def test_cluster_imports_run_down_the_layers_only():
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    )
    assert upward == [], f"layers, lowest first: {LAYERS}"


def _loaded_after(modules: list[str], watched: list[str]) -> dict[str, bool]:
    code = f"import sys, {', '.join(modules)}; print(*(w in sys.modules for w in {watched!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(zip(watched, (word == "True" for word in out.stdout.split())))


def test_reading_a_study_leaves_torch_unloaded():
    modules = ["cluster.dashboard", "cluster.remote.service", "cluster.study.results"]
    modules += ["cluster.cli", "cluster.dashboard.server", "cluster.cli.plot"]
    assert _loaded_after(modules, ["torch"]) == {"torch": False}


def test_the_study_service_client_needs_no_study_code():
    loaded = _loaded_after(["cluster.remote.service_client"], ["cluster.study", "torch"])
    assert loaded == {"cluster.study": False, "torch": False}
