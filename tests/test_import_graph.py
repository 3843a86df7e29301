"""framework/ (the ``cropseg`` package) has no import cycles: every ``import`` / ``from ... import`` of a cropseg
module, relative or absolute, at module level or inside a function, is an edge of the graph walked here.

One kind of import is not an edge: a submodule importing from a package that contains it (``from . import
__version__``). Python initialises a package before any of its submodules runs, so that import reads the
package's attributes and never starts its initialisation; the package's own imports of its submodules
(``cropseg/__init__.py`` importing ``.plugins``, or ``.api`` inside ``run``) are edges."""

from __future__ import annotations

import ast
from pathlib import Path

FRAMEWORK = Path(__file__).resolve().parents[1] / "framework"
PACKAGE = "cropseg"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(FRAMEWORK).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that ``name`` (a dotted module, or a module plus an imported attribute) names."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in FRAMEWORK.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" for a in node.names] + [stem]
            for t in targets:
                if t == PACKAGE or t.startswith(PACKAGE + "."):
                    dep = resolve(t, modules)
                    # ``from . import x`` names the package itself only when x is not a submodule
                    if dep and dep != mod and not mod.startswith(dep + "."):
                        graph[mod].add(dep)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; depth-first search with colours."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert "cropseg.pipeline" in graph and "cropseg.tracking" in graph
    assert "cropseg.scene_ops" in graph["cropseg.pipeline"]
    assert "cropseg.scene_ops" in graph["cropseg.inference"]
    assert sum(len(d) for d in graph.values()) > 50


def test_find_cycle_detects_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_framework_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
