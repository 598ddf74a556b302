"""The hook reference table of ``docs/hooks.md``, generated from the hook names and payloads.

:func:`hook_table_markdown` renders one row per :class:`~hub.core.hook_events.HookName`: its
value, where it fires, its description and its payload's fields, read from the dataclass, so
the code and ``docs/hooks.md`` cannot drift apart. ``scripts/gen_hooks_doc.py`` writes the
table between the markers of that file, and a unit test checks that the committed copy is
current. Pure: no I/O, no tasks.
"""

from __future__ import annotations

import dataclasses

from hub.core.hook_events import HookName, payload_type

__all__ = ["hook_table_markdown"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def hook_table_markdown() -> str:
    """The hook reference table (Markdown), generated from :class:`HookName` and payloads."""
    lines = [
        "| Hook | Fires on | When it fires | Payload |",
        "| --- | --- | --- | --- |",
    ]
    for name in HookName:
        cls = payload_type(name)
        fields = ", ".join(f"`{f.name}: {f.type}`" for f in dataclasses.fields(cls))
        kind = " (alter)" if name.is_alter else ""
        lines.append(
            f"| `{name.value}`{kind} | {name.fires_on} | {_cell(name.description)} "
            f"| `{cls.__name__}`: {_cell(fields)} |"
        )
    return "\n".join(lines) + "\n"
