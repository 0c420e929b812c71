"""No import circle inside a package of ``src/``.

The graph is drawn from the source text (the AST), not by importing: every ``import`` and ``from ...
import`` of a module, at module level or inside a function alike, is an arrow to the module it
names (for ``from pkg import name``, to ``pkg.name`` when that is a module, else to ``pkg``), and to
the packages above it that the importing module is not itself inside (importing ``a.b.c`` runs
``a/b/__init__.py``). Imports under ``if TYPE_CHECKING:`` never run and draw no arrow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())

#: Circles known today, by a module they pass through, each to be ended by the change that owns it.
#: A circle that is gone must leave this table, so that it cannot come back unnoticed.
KNOWN: dict[str, set[str]] = {}

Edge = tuple[str, str, str]  # (from module, to module, "file:line")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, wherever it is (``if TYPE_CHECKING:`` bodies skipped)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path, package: str) -> dict[str, list[Edge]]:
    """Module -> its arrows to other modules of the same package."""
    paths = {_module_name(root, p): p for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, list[Edge]] = {name: [] for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = here[:len(here) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in paths else module for a in node.names]
            where = f"{path.relative_to(root)}:{node.lineno}"
            for target in targets:
                for reached in [target, *_ancestors(target)]:
                    if reached in paths and reached != name and reached not in _ancestors(name):
                        graph[name].append((name, reached, where))
    return graph


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """Each strongly connected group of two modules or more, as the arrows inside it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graphs are a few dozen modules deep
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for _src, dst, _where in graph[node]:
            if dst not in index:
                visit(dst)
                low[node] = min(low[node], low[dst])
            elif dst in on_stack:
                low[node] = min(low[node], index[dst])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [sorted({e for m in sorted(g) for e in graph[m] if e[1] in g}) for g in groups]


def _describe(cycle: list[Edge]) -> str:
    return "\n".join(f"  {src} -> {dst}  ({where})" for src, dst, where in cycle)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package: str) -> None:
    found = cycles(import_graph(SRC, package))
    known = KNOWN.get(package, set())
    new = [c for c in found if not known & {e[0] for e in c}]
    assert not new, "import circles:\n" + "\n\n".join(_describe(c) for c in new)
    gone = sorted(k for k in known if not any(k in {e[0] for e in c} for c in found))
    assert not gone, f"no circle passes through {gone} any more: remove it from KNOWN"


def test_the_graph_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    """A circle closed by an import inside a function is found; one closed only under
    TYPE_CHECKING is not; a submodule importing its own package is no circle."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import x\n")
    (pkg / "d.py").write_text("import pkg.c\n")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import y\n")
    (pkg / "sub" / "leaf.py").write_text("from . import other\nfrom ..a import z\n")
    (pkg / "sub" / "other.py").write_text("")
    (pkg / "e.py").write_text("from .sub.leaf import y\n")
    graph = import_graph(tmp_path, "pkg")
    assert ("pkg.e", "pkg.sub", "pkg/e.py:1") in graph["pkg.e"]  # the package's __init__ runs too
    found = cycles(graph)
    assert [sorted({e[0] for e in c}) for c in found] == [["pkg.a", "pkg.b"]]
    assert ("pkg.b", "pkg.a", "pkg/b.py:2") in found[0]
