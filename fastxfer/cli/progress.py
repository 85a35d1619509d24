"""The progress bar of the commands that move data: on stderr, naming what is in flight.

It is drawn only when stderr is a terminal (:func:`wanted`), on stderr, so
``fastxfer cp ... > file`` shows the bar and keeps the file clean, and
``fastxfer cp s3://b/k - | tar x`` has nothing but the data on stdout.  When
the command ends, :meth:`ProgressBar.finish` sets the final rate to the
summary's own figure (bytes / wall time, the same function formats both).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastxfer.progress import ProgressEvent
from fastxfer.transfer import TransferStats
from fastxfer.units import format_rate

if TYPE_CHECKING:
    from rich.progress import Task
    from rich.text import Text


def wanted(args: argparse.Namespace) -> bool:
    """A bar unless asked not to (--no-progress, -q, --json, -v logs) or stderr is no terminal."""
    quiet = any(getattr(args, name, False) for name in ("no_progress", "quiet", "json"))
    verbose = bool(getattr(args, "verbose", 0)) or getattr(args, "log_level", None) is not None
    return not (quiet or verbose) and sys.stderr.isatty()


def _name(key: str, limit: int = 40) -> str:
    from fastxfer.cli.common import shorten

    return shorten("".join(c if c.isprintable() else "?" for c in key), limit)


class ProgressBar:
    """One overall bar (bytes, rate, files done) plus the name of the file(s) in flight.

    ``total`` / ``files`` may be None when unknown (a stream from stdin, a
    sync still planning): the bar then counts up.  ``size_from_events``: the
    total is the size the (one) transfer reports once known.  Updates are cheap: rich
    redraws at most 10 times a second.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        files: int | None = None,
        *,
        size_from_events: bool = False,
        connections: Callable[[], int] | None = None,
        ranges: Callable[[], int | None] | None = None,
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            """The live rate, then the summary's final rate (the same format_rate)."""

            def render(self, task: Task) -> Text:
                final = task.fields.get("rate")
                return Text(final or format_rate(task.speed or 0.0), style="progress.data.speed")

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            RateColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[files]}"),
            TextColumn("{task.fields[conns]}", style="dim"),
            TextColumn("{task.fields[current]}", style="dim"),
            console=Console(file=sys.stderr),
            transient=False,
            redirect_stdout=False,
        )
        self.files = files
        self.size_from_events = size_from_events and total is None
        self.queued = 0
        self.done = 0
        self.in_flight: dict[int, str] = {}
        self.connections = connections
        """Requests allowed in flight now (the tuned count), shown beside the files."""
        self.ranges = ranges
        """Ranged GETs allowed in flight now when capped below the count (downloads)."""
        self.task = self.progress.add_task(
            label, total=total, files=self._files_text(), current="", rate=None, conns=""
        )

    def _conns_text(self) -> str:
        if self.connections is None:
            return ""
        text = f"{self.connections()} conn"
        capped = self.ranges() if self.ranges is not None else None
        return f"{text}, {capped} ranges" if capped is not None else text

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _files_text(self) -> str:
        of = self.files if self.files is not None else self.queued
        return f"{self.done}/{of} files"

    def _current_text(self) -> str:
        names = list(self.in_flight.values())
        if not names:
            return ""
        more = f" +{len(names) - 1}" if len(names) > 1 else ""
        return names[0] + more

    def on_queued(self, stats: TransferStats) -> None:
        self.queued += 1
        self.progress.update(self.task, files=self._files_text())

    def on_progress(self, event: ProgressEvent) -> None:
        update: dict[str, Any] = {}
        if event.transfer_id not in self.in_flight:
            self.in_flight[event.transfer_id] = _name(event.key)
            update["current"] = self._current_text()
        if self.size_from_events and event.size is not None:
            update["total"] = event.size  # one stream: its size is known once it starts
        self.progress.update(
            self.task, advance=event.bytes_delta, conns=self._conns_text(), **update
        )

    def on_done(self, stats: TransferStats) -> None:
        self.done += 1
        self.in_flight.pop(stats.transfer_id, None)
        self.progress.update(self.task, files=self._files_text(), current=self._current_text())

    def finish(self, bytes_moved: int, seconds: float) -> None:
        """Show the final figures: the bytes and the rate of the summary line."""
        rate = bytes_moved / seconds if seconds > 0 else 0.0
        self.in_flight.clear()
        task = self.progress.tasks[0]
        total = task.total if task.total is not None and task.total >= bytes_moved else None
        self.progress.update(
            self.task,
            completed=bytes_moved,
            total=total if total is not None else bytes_moved,
            rate=format_rate(rate),
            current="",
            files=self._files_text(),
        )
