"""Human output of the ``processhub`` command: rich tables on a terminal, plain columns in a pipe.

On a terminal, tables get a header rule and coloured states, and long operations show a
progress bar on stderr. In a pipe or a CI log the same tables come out as plain,
space-aligned columns: no colour codes, nothing folded or cut at 80 columns (rich's width
for a non-terminal), no trailing blanks, so ``grep``/``awk`` keep working. ``--json`` output
does not come through here at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from rich import box
from rich.console import Console, JustifyMethod, RenderableType
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

T = TypeVar("T")

#: Width of a pipe when ``$COLUMNS`` does not say: wide enough that no table wraps.
PIPE_WIDTH = 10_000

#: Colour of a child, owner or node state on a terminal.
STATE_STYLES: Mapping[str, str] = {
    "running": "green",
    "active": "green",
    "up": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "pending": "yellow",
    "draining": "yellow",
    "left": "yellow",
    "failed": "bold red",
    "killed": "bold red",
}


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: its header, the row key it shows, and how it aligns."""

    header: str
    key: str
    justify: JustifyMethod = "left"
    styled: bool = False  # colour values by STATE_STYLES (on a terminal)


def cell(value: Any) -> str:
    """A value as table text: ``-`` for nothing, one decimal for floats, lists comma-joined."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def is_terminal(stream: TextIO) -> bool:
    """True if ``stream`` is an interactive terminal (not a pipe, file or CI log)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _pipe_width() -> int:
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH


class Screen:
    """Where human output goes. ``plain`` when it is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.plain = not is_terminal(self.stream)
        if self.plain:
            self.console = Console(
                file=self.stream,
                width=_pipe_width(),
                color_system=None,
                force_terminal=False,
                highlight=False,
                emoji=False,
            )
        else:
            self.console = Console(file=self.stream, highlight=False, emoji=False)

    def show(self, renderable: RenderableType) -> None:
        """Print a renderable; in a pipe, without the blanks rich pads lines with."""
        if not self.plain:
            self.console.print(renderable)
            return
        with self.console.capture() as captured:
            self.console.print(renderable)
        lines = [line.rstrip() for line in captured.get().splitlines()]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()

    def line(self, text: str = "", style: str | None = None) -> None:
        """One line of narration (styled on a terminal only)."""
        self.show(Text(text, style=style or ""))

    def table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Mapping[str, Any]],
        title: str | None = None,
    ) -> None:
        """Print rows as a table with a header line."""
        self.show(self.build_table(columns, rows, title))

    def build_table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Mapping[str, Any]],
        title: str | None = None,
    ) -> Table:
        """The table :meth:`table` prints (for callers that compose renderables)."""
        table = self._new_table(title)
        for column in columns:
            table.add_column(column.header, justify=column.justify, overflow="fold")
        for row in rows:
            table.add_row(*(self._text(row.get(c.key), c.styled) for c in columns))
        return table

    def fields(self, title: str, pairs: Sequence[tuple[str, Any]]) -> None:
        """Print ``key: value`` pairs: a panel on a terminal, aligned lines in a pipe."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold" if not self.plain else "", no_wrap=True)
        grid.add_column(overflow="fold")
        for key, value in pairs:
            grid.add_row(Text(key), self._text(value, styled=key == "state"))
        if self.plain:
            self.show(grid)
        else:
            self.show(Panel(grid, title=Text(title, style="bold"), expand=False))

    def _new_table(self, title: str | None) -> Table:
        if self.plain:
            return Table(
                title=title,
                box=None,
                show_edge=False,
                pad_edge=False,
                padding=(0, 2, 0, 0),
                header_style="",
                title_justify="left",
                title_style="",
            )
        return Table(
            title=title,
            box=box.SIMPLE_HEAD,
            header_style="bold",
            title_justify="left",
            title_style="bold",
        )

    def _text(self, value: Any, styled: bool) -> Text:
        """A cell as rich Text: never parsed as markup, so ids like ``[x]`` stay as they are."""
        text = cell(value)
        style = STATE_STYLES.get(text.split(" ", 1)[0], "") if styled and not self.plain else ""
        return Text(text, style=style)


# -- progress ----------------------------------------------------------------------------


def progress_wanted(no_progress: bool = False, stream: TextIO | None = None) -> bool:
    """Progress bars only on an interactive stderr: they would garble pipes and CI logs."""
    return not no_progress and is_terminal(stream if stream is not None else sys.stderr)


class ProgressBar:
    """One bar on stderr; does nothing when progress is not wanted (``active`` is False)."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    @property
    def active(self) -> bool:
        return self._progress is not None

    def update(
        self, completed: int, *, total: int | None = None, description: str | None = None
    ) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, completed=completed, total=total, description=description)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool, console: Console | None = None
) -> Iterator[ProgressBar]:
    """A progress bar on stderr (or ``console``) for the block, or a silent stand-in."""
    if not enabled:
        yield ProgressBar(None, None)
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console if console is not None else Console(stderr=True),
        transient=True,  # the command prints its result; a finished bar would only repeat it
    )
    with progress:
        yield ProgressBar(progress, progress.add_task(description, total=total))


async def track(
    work: Awaitable[T], bar: ProgressBar, measure: Callable[[], int], interval: float = 0.1
) -> T:
    """Await ``work``, moving ``bar`` to ``measure()`` every ``interval`` seconds meanwhile."""
    if not bar.active:
        return await work
    error: Exception | None = None
    async with asyncio.TaskGroup() as tg:
        refresher = tg.create_task(_refresh(bar, measure, interval))
        try:
            result = await work
        except Exception as exc:  # re-raised as is below, not wrapped in an ExceptionGroup
            error = exc
        finally:
            refresher.cancel()
    if error is not None:
        raise error
    bar.update(measure())
    return result


async def _refresh(bar: ProgressBar, measure: Callable[[], int], interval: float) -> None:
    while True:
        bar.update(measure())
        await asyncio.sleep(interval)
