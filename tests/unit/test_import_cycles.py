"""No import cycle, at run time or under TYPE_CHECKING, through the composition modules.

The HTTP endpoints read a node through a Protocol (hub.operate.observed), so they never
import hub.hub, which builds them; hub.api and hub.node import no upper module either.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Modules of the composition layer (and the HTTP split) that must be on no cycle.
COMPOSITION = ("hub", "hub.hub", "hub.client", "hub._tasks", "hub.api", "hub.node")
OPERATE = ("hub.operate.http", "hub.operate.views", "hub.operate.metrics", "hub.operate.feed")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in ROOT.joinpath("hub").rglob("*.py") if "_proto" not in p.parts]
    modules = {module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # TYPE_CHECKING too
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
    return {name: {t for t in targets if t in modules} for name, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def owned(name: str) -> bool:
    return name in OPERATE or any(name == m or name.startswith(m + ".") for m in COMPOSITION[1:])


def test_no_cycle_goes_through_the_composition_modules() -> None:
    graph = import_graph()
    assert "hub.api.facade" in graph and "hub.operate.views" in graph
    through = [sorted(c) for c in cycles(graph) if any(owned(m) for m in c)]
    assert not through, through


def test_the_http_endpoints_do_not_import_the_hub() -> None:
    graph = import_graph()
    for name in (*OPERATE, "hub.operate.observed"):
        assert "hub.hub" not in graph[name], name
