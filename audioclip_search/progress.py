"""The one progress display of the product: the same columns for downloads, indexing, evaluation
and training, on stderr, and quiet where it would only get in the way.

    with make_progress("files", quiet=as_json) as progress:
        task = progress.add_task("audio", total=n)
        progress.update(task, advance=1)

Columns: description, bar, done/total (bytes for downloads), rate (unit/s), an optional status
(``progress.update(task, status="loss 0.12")``), elapsed, remaining. The display is disabled (the
same object, drawing nothing) when asked to be quiet (``--quiet``, ``--json``) or when standard
output is not a terminal, so piped or captured output never carries bar redraws.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

__all__ = ["make_progress", "progress_quiet"]


class _Rate(ProgressColumn):
    """``12.3 files/s`` (the finished speed once a task is done)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:6.1f} {self.unit}/s" if speed else f"   -- {self.unit}/s"
        return Text(text, style="progress.data.speed")


class _Status(ProgressColumn):
    """A task's free-form ``status`` field (empty when the task has none)."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("status", "")))


def progress_quiet(quiet: bool = False) -> bool:
    """Whether a progress display would draw nothing: asked to be quiet, or stdout not a terminal."""
    return quiet or not sys.stdout.isatty()


def make_progress(unit: str = "items", *, quiet: bool = False, console: Console | None = None) -> Progress:
    """A rich ``Progress`` with the product's columns; ``unit="bytes"`` shows sizes and transfer speed."""
    if unit == "bytes":
        amount: list[ProgressColumn] = [DownloadColumn(), TransferSpeedColumn()]
    else:
        amount = [MofNCompleteColumn(), _Rate(unit)]
    return Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), *amount, _Status(),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=console or Console(stderr=True), transient=False, disable=progress_quiet(quiet),
    )
