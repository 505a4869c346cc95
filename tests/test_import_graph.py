"""Dependencies go one way: no import cycle among cheers' modules, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import cheers

PACKAGE = Path(cheers.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(path: Path, names: dict[str, Path]) -> set[str]:
    """The cheers modules ``path`` imports anywhere (in functions too), except under
    ``if TYPE_CHECKING:``; ``from pkg import sub`` counts as importing ``pkg.sub``."""

    def module_of(dotted: str) -> str | None:
        while dotted and dotted not in names:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # type-only imports create no runtime dependency
        if isinstance(node, ast.Import):
            found |= {module_of(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {module_of(f"{node.module}.{alias.name}") for alias in node.names}
    return {m for m in found if m is not None and m.startswith("cheers")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back():
    names = module_names()
    graph = {m: imports_of(p, names) - {m} for m, p in names.items()}
    assert "cheers.pipeline.facade" in graph["cheers.pipeline"]  # the graph is not empty
    assert cycles(graph) == []


def test_no_two_top_level_parts_depend_on_each_other():
    names = module_names()

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = {
        (part(m), part(t))
        for m, p in names.items()
        for t in imports_of(p, names)
        if part(m) != part(t)
    }
    assert ("cheers.pipeline", "cheers.model") in edges
    assert sorted((a, b) for a, b in edges if (b, a) in edges) == []
