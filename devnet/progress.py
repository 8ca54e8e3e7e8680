"""Progress reporting for the devnet tools: bars on a terminal, plain lines otherwise.

``Progress`` hands out tasks (``with progress.task("warm-up", total=21, unit="blocks") as
t: t.update(n)``). On an interactive terminal each task is a ``rich`` progress bar; when
output goes to a file, a pipe or CI (``CI`` set, ``TERM=dumb``, or not a TTY), each task
prints a plain line when it starts, at most one line per ``PLAIN_INTERVAL`` seconds while
it moves, and one when it ends — so logs stay short and greppable. Messages printed
through ``Progress.say`` appear above the bars instead of breaking them.

Used by ``microcash-devnet up`` and ``demo``; a ``compare`` command can reuse it as is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

PLAIN_INTERVAL = 5.0  # seconds between plain progress lines of one task


def is_interactive(stream: IO | None = None) -> bool:
    """Whether ``stream`` (default stdout) is a terminal a person watches: a TTY, not CI,
    not ``TERM=dumb``."""
    stream = stream if stream is not None else sys.stdout
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Task:
    """One unit of work with a ``total`` (units of ``unit``); ``update`` / ``advance``."""

    def __init__(self, progress: "Progress", description: str, total: int, unit: str,
                 start: int) -> None:
        self._progress = progress
        self.description = description
        self.total = max(int(total), 0)
        self.unit = unit
        self.completed = start
        self._rich_id = None
        self._last_line = 0.0
        self._last_shown = start  # completed count of the last plain line

    def update(self, completed: int, note: str = "") -> None:
        """Set how much is done (clamped to ``0..total``); ``note`` is shown beside it."""
        self.completed = min(max(int(completed), 0), self.total)
        self._progress._show(self, note)

    def advance(self, amount: int = 1, note: str = "") -> None:
        """Add ``amount`` to what is done."""
        self.update(self.completed + amount, note)

    def text(self, note: str = "") -> str:
        """The plain line of this task, e.g. ``warm-up: 7/21 blocks (33%)``."""
        pct = 100 * self.completed // self.total if self.total else 100
        unit = f" {self.unit}" if self.unit else ""
        return (f"{self.description}: {self.completed}/{self.total}{unit} ({pct}%)"
                + (f" {note}" if note else ""))


class Progress:
    """Progress tasks and messages for one command run (see the module docstring).

    ``interactive`` forces bars (True) or plain lines (False); by default it is
    ``is_interactive(stream)``. ``say`` prints plain lines (default: to ``stream``).
    """

    def __init__(self, *, interactive: bool | None = None, stream: IO | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.interactive = is_interactive(self.stream) if interactive is None else interactive
        self._print = say or (lambda line: print(line, file=self.stream, flush=True))
        self._rich = None

    def say(self, message: str) -> None:
        """Print a message line (above the bars on a terminal)."""
        if self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        else:
            self._print(message)

    @contextmanager
    def task(self, description: str, total: int, *, unit: str = "",
             start: int = 0) -> Iterator[Task]:
        """A task from ``start`` to ``total``; its bar (or last line) closes on exit."""
        task = Task(self, description, total, unit, start)
        if self.interactive:
            yield from self._rich_task(task)
        else:
            self._print(task.text())
            task._last_line = time.monotonic()
            yield task
            self._print(task.text("done" if task.completed >= task.total else "stopped"))

    def _rich_task(self, task: Task) -> Iterator[Task]:
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                   TextColumn, TimeElapsedColumn)
        owner = self._rich is None
        if owner:
            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                                      TimeElapsedColumn(), TextColumn("{task.fields[note]}"),
                                      console=Console(file=self.stream))
            self._rich.start()
        task._rich_id = self._rich.add_task(task.description, total=task.total,
                                            completed=task.completed, unit=task.unit, note="")
        try:
            yield task
        finally:
            self._rich.update(task._rich_id, completed=task.completed)
            if owner:
                self._rich.stop()
                self._rich = None

    def _show(self, task: Task, note: str) -> None:
        if task._rich_id is not None and self._rich is not None:
            self._rich.update(task._rich_id, completed=task.completed, note=note)
            return
        now = time.monotonic()
        if (now - task._last_line >= PLAIN_INTERVAL and task.completed < task.total
                and task.completed != task._last_shown):
            self._print(task.text(note))
            task._last_line, task._last_shown = now, task.completed
