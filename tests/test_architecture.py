"""The package's import graph: no cycles, and no arrow that runs back up the layers of docs/design.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medmdm"
# Lowest first; a package may import its own layer's and lower layers' packages, never a higher one's.
LAYERS = (
    ("errors",),
    ("devices", "geometry", "io", "explainers", "metrics", "writers", "pacs"),
    ("bundle", "settings", "testing"),
    ("pipeline",),
    ("evaluation", "batch"),
    ("cli",),
)
LAYER_OF = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Every medmdm module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # the package uses absolute imports only
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module or ""]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {name: imported_modules(path, modules) - {name} for name, path in files.items()}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: not an arrow of the design, so left out
    return {name: {t for t in targets if not name.startswith(f"{t}.")} for name, targets in graph.items()}


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    packages = {top_package(m) for m in import_graph()} - {""}
    assert packages <= set(LAYER_OF), sorted(packages - set(LAYER_OF))


def test_no_arrow_runs_back_up():
    upward = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        for target in targets
        if top_package(source)
        and top_package(target)
        and LAYER_OF[top_package(target)] > LAYER_OF[top_package(source)]
    ]
    assert upward == []


def test_relative_imports_are_not_used():
    relative = [
        p.name
        for p in PACKAGE.rglob("*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ImportFrom) and n.level
    ]
    assert relative == []


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("module", ["medmdm", "medmdm.cli.main", "medmdm.errors"])
def test_the_command_line_loads_without_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'monai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
