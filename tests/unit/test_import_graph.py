"""The module import graph of ``hub`` and ``strategies``, built from source: no cycles, and
lower layers never import upper ones.

Every ``import``/``from ... import`` statement counts, wherever it is: at module level,
inside functions, and under ``if TYPE_CHECKING:`` (a type-only cycle still ties the
modules together for readers and for mypy). An edge goes to the module named, or to the
submodule when ``from package import name`` names one; the parent packages an import
initializes on the way are not edges (``hub/__init__`` re-exports the whole API, so every
module would otherwise sit in one cycle with it).

Layers (DESIGN.md): ``strategies`` imports nothing from ``hub``; ``hub.etcd`` nothing from
``hub.core``, ``hub.messaging``, ``hub.operate``; ``hub.core`` nothing from ``hub.operate``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "strategies")

#: Import edges known to close a cycle or cross a layer, each with its owner's plan. The
#: test fails when one of them disappears, so that this list only ever shrinks.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: (importer prefix, forbidden prefixes)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("strategies", ("hub",)),
    ("hub.etcd", ("hub.core", "hub.messaging", "hub.operate")),
    ("hub.core", ("hub.operate",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of statements under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    for inner in ast.walk(child):
                        if hasattr(inner, "lineno"):
                            lines.add(inner.lineno)
    return lines


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """The modules of ours ``name`` imports, each with whether it is type-only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = _type_checking_lines(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor.pop()
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import hub.etcd.store` names the module; climb to one of ours if needed.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno in type_only


def graph() -> dict[str, dict[str, bool]]:
    """``{module: {imported module: type-only?}}`` (type-only only if every import is)."""
    known = modules()
    edges: dict[str, dict[str, bool]] = {}
    for name, path in known.items():
        out = edges.setdefault(name, {})
        for target, type_only in imports(name, path, known):
            out[target] = out.get(target, True) and type_only
    return edges


def cycles(edges: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def describe(edges: dict[str, dict[str, bool]], component: list[str]) -> str:
    members = set(component)
    inner = [
        f"{a} -> {b}" + (" (TYPE_CHECKING)" if edges[a][b] else "")
        for a in component
        for b in sorted(edges[a])
        if b in members
    ]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(inner)


@pytest.fixture(scope="module")
def edges() -> dict[str, dict[str, bool]]:
    return graph()


def test_the_graph_covers_both_packages(edges: dict[str, dict[str, bool]]) -> None:
    assert {"hub", "hub.etcd.store", "hub.core.reconciler", "strategies"} <= edges.keys()
    assert "hub.etcd.kv" in edges["hub.etcd.store"]
    assert "hub.etcd.ops" in edges["hub.etcd.kv"]  # under TYPE_CHECKING or not, it counts


def test_there_are_no_import_cycles(edges: dict[str, dict[str, bool]]) -> None:
    pruned = {
        a: {b: t for b, t in out.items() if (a, b) not in KNOWN_EXCEPTIONS}
        for a, out in edges.items()
    }
    found = cycles(pruned)
    assert not found, "\n".join(describe(pruned, c) for c in found)


def test_lower_layers_never_import_upper_ones(edges: dict[str, dict[str, bool]]) -> None:
    violations = [
        f"{a} -> {b}" + (" (TYPE_CHECKING)" if type_only else "")
        for a, out in sorted(edges.items())
        for b, type_only in sorted(out.items())
        for importer, forbidden in LAYERS
        if _within(a, importer)
        and any(_within(b, f) for f in forbidden)
        and (a, b) not in KNOWN_EXCEPTIONS
    ]
    assert not violations, "\n".join(violations)


def test_every_known_exception_still_exists(edges: dict[str, dict[str, bool]]) -> None:
    gone = [f"{a} -> {b}" for a, b in KNOWN_EXCEPTIONS if b not in edges.get(a, {})]
    assert not gone, f"fixed, remove from KNOWN_EXCEPTIONS: {gone}"


def test_cycles_are_found() -> None:
    edges = {"a": {"b": False}, "b": {"c": True}, "c": {"a": False}, "d": {"a": False}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b": False}, "b": {}}) == []
