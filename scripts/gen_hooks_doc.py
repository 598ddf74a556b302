#!/usr/bin/env python3
"""Regenerate the hook table in docs/hooks.md from hub/core/hook_events.py.

Usage: ``python scripts/gen_hooks_doc.py`` rewrites the table between the markers;
``--check`` only reports (exit 1) when the committed file is stale. Everything outside the
markers is hand-written and left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hub.core.hooks import hook_table_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
BEGIN = "<!-- BEGIN GENERATED: hook table (scripts/gen_hooks_doc.py; do not edit) -->"
END = "<!-- END GENERATED: hook table -->"


def render(text: str) -> str:
    """``text`` with the generated block replaced by the current table.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOC.name} must contain {BEGIN!r} followed by {END!r}")
    head = text[: start + len(BEGIN)]
    return f"{head}\n\n{hook_table_markdown()}\n{text[end:]}"


def main(argv: list[str]) -> int:
    current = DOC.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{DOC} is stale: run scripts/gen_hooks_doc.py", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        DOC.write_text(wanted, encoding="utf-8")
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
