"""Project rules that are cheap to check mechanically (STYLE.md 9.4, security rules)."""

from __future__ import annotations

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
