"""hub.operate.cli_render: tables for terminals and for pipes, progress bars only when wanted."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from hub.operate.cli_render import (
    Column,
    Screen,
    cell,
    progress_bar,
    progress_wanted,
    track,
)

COLUMNS = (Column("ID", "id"), Column("STATE", "state", styled=True), Column("N", "n", "right"))
ROWS = [{"id": "c1", "state": "running", "n": 7}, {"id": "[bold]x", "state": "failed", "n": None}]


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same environment wherever the tests run: a colour terminal, no width hint."""
    for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def test_cell_formats_values() -> None:
    assert [cell(None), cell(""), cell(1.25), cell(["a", "b"]), cell([]), cell(3)] == [
        "-",
        "-",
        "1.2",
        "a,b",
        "-",
        "3",
    ]


def test_pipe_table_is_plain_aligned_columns() -> None:
    out = io.StringIO()
    Screen(out).table(COLUMNS, ROWS)
    assert out.getvalue().splitlines() == [
        "ID       STATE    N",
        "c1       running  7",
        "[bold]x  failed   -",  # an id is text, never rich markup
    ]


def test_pipe_output_is_not_cut_at_80_columns() -> None:
    out = io.StringIO()
    long_id = "child-" + "x" * 300
    Screen(out).table(COLUMNS, [{"id": long_id, "state": "running", "n": 1}])
    assert out.getvalue().splitlines()[1] == f"{long_id}  running  1"


def test_pipe_width_follows_columns_by_folding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    long_id = "y" * 100
    Screen(out).table(COLUMNS, [{"id": long_id, "state": "running", "n": 1}])
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 40
    assert "".join(line.split()[0] for line in lines[1:] if line.startswith("y")) == long_id


def test_terminal_table_has_a_header_rule_and_colours() -> None:
    out = FakeTerminal()
    screen = Screen(out)
    assert not screen.plain
    screen.table(COLUMNS, ROWS)
    text = out.getvalue()
    assert "\x1b[" in text  # styled
    assert "─" in text  # the rule under the header
    assert "[bold]x" in text


def test_fields_are_key_value_lines_in_a_pipe_and_a_panel_on_a_terminal() -> None:
    pairs = [("id", "c1"), ("state", "running"), ("pinned to", [])]
    out = io.StringIO()
    Screen(out).fields("child c1", pairs)
    assert out.getvalue().splitlines() == ["id         c1", "state      running", "pinned to  -"]
    tty = FakeTerminal()
    Screen(tty).fields("child c1", pairs)
    assert "child c1" in tty.getvalue() and "╭" in tty.getvalue()


def test_progress_is_only_wanted_on_an_interactive_stderr() -> None:
    assert not progress_wanted(stream=io.StringIO())
    assert progress_wanted(stream=FakeTerminal())
    assert not progress_wanted(True, stream=FakeTerminal())


def test_disabled_progress_bar_is_silent_and_track_returns_the_result() -> None:
    async def work() -> str:
        return "done"

    with progress_bar("starting", 3, enabled=False) as bar:
        assert not bar.active
        assert asyncio.run(track(work(), bar, lambda: 1 / 0)) == "done"  # never measured


def test_enabled_progress_bar_shows_the_count() -> None:
    out = FakeTerminal()
    console = Console(file=out, force_terminal=True, width=100)
    measured = iter(range(100))

    async def work() -> int:
        await asyncio.sleep(0.05)
        return 42

    with progress_bar("draining node-a", 3, enabled=True, console=console) as bar:
        assert bar.active
        result = asyncio.run(track(work(), bar, lambda: min(3, next(measured)), interval=0.01))
    assert result == 42
    assert "draining node-a" in out.getvalue() and "3/3" in out.getvalue()


def test_track_cancels_the_work_when_it_is_cancelled() -> None:
    cancelled = asyncio.Event()
    out = FakeTerminal()
    console = Console(file=out, force_terminal=True, width=100)

    async def work() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def scenario() -> None:
        with progress_bar("x", 1, enabled=True, console=console) as bar:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await track(work(), bar, lambda: 0, interval=0.01)
        assert cancelled.is_set()

    asyncio.run(scenario())
