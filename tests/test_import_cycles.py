"""No import cycles between the broker's packages, lazy or not (issue 13).

Every import counts: at module level, inside functions and under TYPE_CHECKING, since an
import moved into a function only hides a cycle. Packages are `broker.X` / `adapters.X`;
imports within one package are its own business.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def import_graph() -> dict[str, dict[str, str]]:
    """package -> {imported package: first FILE:LINE that imports it}."""
    graph: dict[str, dict[str, str]] = defaultdict(dict)
    for top in ("broker", "adapters"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel.parts[:2] == ("broker", "api"):
                continue
            module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] not in ("broker", "adapters") or name.startswith("broker.api"):
                        continue
                    src, dst = _unit(module), _unit(name)
                    if src != dst:
                        graph[src].setdefault(dst, f"{rel}:{node.lineno}")
    return graph


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_packages() -> None:
    graph = import_graph()
    report = []
    for comp in cycles(graph):
        edges = [f"  {a} -> {b} ({graph[a][b]})" for a in comp for b in comp if b in graph.get(a, {})]
        report.append(" <-> ".join(comp) + "\n" + "\n".join(edges))
    assert not report, "import cycles:\n" + "\n".join(report)


def test_the_checker_sees_a_lazy_cycle() -> None:
    # The check itself must be able to fail: a function-level import closing a loop is one.
    graph = {"broker.a": {"broker.b": "a.py:1"}, "broker.b": {"broker.a": "b.py:9"}}
    assert cycles(graph) == [["broker.a", "broker.b"]]
