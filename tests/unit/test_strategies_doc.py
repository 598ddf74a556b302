"""docs/strategies.md states what every built-in strategy promises: check it against the
code, so the table cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import strategies
from strategies import Guarantee

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"
MARKER = "<!-- guarantees of the built-ins:"


def table() -> dict[str, set[str]]:
    """``{constructor expression: {guarantee names}}`` from the guide's table."""
    lines = GUIDE.read_text().split(MARKER, 1)[1].splitlines()[1:]
    rows: dict[str, set[str]] = {}
    for line in lines[2:]:  # after the header and its rule
        if not line.startswith("|"):
            break
        strategy, promised = (cell.strip() for cell in line.strip("|").split("|"))
        rows[strategy.strip("`")] = set(re.findall(r"`(\w+)`", promised))
    return rows


def test_the_guarantees_table_matches_the_code() -> None:
    rows = table()
    assert len(rows) == 13
    namespace = {name: getattr(strategies, name) for name in strategies.__all__}
    for expression, promised in rows.items():
        strategy = eval(expression, namespace)  # our own doc: constructor calls only
        assert {g.name for g in strategy.guarantees} == promised, expression


def test_the_table_lists_every_built_in_strategy() -> None:
    namespace = {name: getattr(strategies, name) for name in strategies.__all__}
    listed = {type(eval(expression, namespace)) for expression in table()}
    builtins = {
        obj
        for name in strategies.__all__
        if isinstance(obj := getattr(strategies, name), type)
        and not getattr(obj, "_is_protocol", False)
        and "guarantees" in dir(obj)
    }
    assert listed == builtins


def test_every_guarantee_is_explained() -> None:
    text = GUIDE.read_text()
    for guarantee in Guarantee:
        assert f"| `{guarantee.name}` |" in text
