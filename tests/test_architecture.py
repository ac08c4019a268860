"""The package's shape (issue #21): parts as subpackages, no import cycle, no module a reader must scroll through.

The import graph is read from the sources with :mod:`ast` (nothing is imported): an edge for every ``import`` or
``from ... import`` of a flexfix module, at module level or inside a function (a lazy import is still a dependency).
``from pkg import name`` is an edge to the module ``pkg.name`` where there is one, else to ``pkg``.  Importing a
submodule also runs its parent packages' ``__init__``; that is not counted as an edge (it is not a dependency the
code chose).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "flexfix"
PARTS = ("mechanism", "integration", "measure", "edition")
TOP_LEVEL = {"__init__", "__main__", "cli"}
# Lines per module: a module of one concept fits a few screens; past this it holds two.
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> set[str]:
    """The flexfix modules that module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    assert GRAPH["flexfix.measure.record.kernel"] >= {"flexfix.measure.repro", "flexfix.measure.record.pool"}
    assert "flexfix.mechanism.persistent" in GRAPH["flexfix.integration.vllm_patch"]


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_is_short():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    too_long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_long, f"split these by concept (at most {MAX_LINES} lines each): {too_long}"


def test_every_module_belongs_to_a_part():
    # the replay guard, flexfix.guard, is the fifth part (it comes with its own tests)
    allowed = {*PARTS, *TOP_LEVEL, "guard"}
    outside = [n for n in MODULES if n != "flexfix" and n.split(".")[1] not in allowed]
    assert outside == [], outside
    for part in PARTS:
        assert ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text())), part
