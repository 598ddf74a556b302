"""Project rules that are cheap to check mechanically (STYLE.md 9.4, security rules)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.joinpath("hub").rglob("*.py"), *ROOT.joinpath("strategies").rglob("*.py")])


def _code(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_sources_found() -> None:
    assert len(SOURCES) > 10


def test_every_task_has_an_owner() -> None:
    """Only TaskGroups create tasks: no asyncio.create_task / ensure_future in the library."""
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in SOURCES
        for n, line in enumerate(_code(p).splitlines(), 1)
        if re.search(r"asyncio\.create_task\(|ensure_future\(|loop\.create_task\(", line)
    ]
    assert not offenders, offenders


def test_nothing_is_unpickled_or_evaluated() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in SOURCES
        if "_proto" not in p.parts
        for n, line in enumerate(_code(p).splitlines(), 1)
        if re.search(r"\bpickle\b|\bmarshal\.loads|\beval\(|\bexec\(", line)
    ]
    assert not offenders, offenders


def test_only_the_store_imports_the_etcd_client() -> None:
    importers = sorted(
        str(p.relative_to(ROOT))
        for p in SOURCES
        if re.search(r"^\s*(from|import) aetcd", _code(p), re.M)
    )
    assert importers == ["hub/etcd/store.py"]


def test_strategies_are_pure() -> None:
    """Strategies import neither asyncio nor the hub's I/O modules."""
    for path in ROOT.joinpath("strategies").rglob("*.py"):
        code = _code(path)
        assert not re.search(r"^\s*(import asyncio|from hub)", code, re.M), path


#: The concrete strategy classes shipped in strategies/: the hub may construct them (the CLI
#: builds them from flags) but never ask whether an object is one of them (issue 10: a user's
#: strategy must plug in exactly like a built-in one, through the Protocols).
BUILT_IN_STRATEGIES = {
    "Availability",
    "BoundedLoad",
    "ColdSwap",
    "ConsistentHashing",
    "DynamicQuorum",
    "Guided",
    "HotSwap",
    "MajorityQuorum",
    "Replication",
    "Singularity",
    "StaticQuorum",
    "Strict",
}


def _class_names(node: ast.expr) -> set[str]:
    """The names in an isinstance() class argument: a name, an attribute, or a tuple/union."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Tuple):
        return set().union(*(_class_names(item) for item in node.elts))
    if isinstance(node, ast.BinOp):
        return _class_names(node.left) | _class_names(node.right)
    return set()


def test_the_hub_never_asks_which_built_in_strategy_it_has() -> None:
    offenders = []
    for path in SOURCES:
        if "strategies" in path.relative_to(ROOT).parts[:1] or "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(_code(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass")
                and len(node.args) == 2
                and _class_names(node.args[1]) & BUILT_IN_STRATEGIES
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


#: Modules and classes stay small enough to read (issue 10): ~500 and ~400 lines.
MAX_MODULE_LINES = 520
MAX_CLASS_LINES = 420
#: Longer on purpose, with the reason.
LONG_MODULES = {
    # DESIGN.md: all use of the etcd client stays in one module so it can be replaced; the
    # protobuf conversions at that boundary and the re-exports of old import paths sit here.
    "hub/etcd/store.py": 600,
}


def test_modules_and_classes_stay_small() -> None:
    too_long = []
    for path in SOURCES:
        if "_proto" in path.parts:
            continue
        source = _code(path)
        name = str(path.relative_to(ROOT))
        if source.count("\n") > LONG_MODULES.get(name, MAX_MODULE_LINES):
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    too_long.append(f"{name}: class {node.name} {length} lines")
    assert not too_long, too_long
