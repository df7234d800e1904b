"""Metrics out of a run: JSONL and CSV files, an optional TensorBoard log, and the live display.

``metrics.jsonl`` holds one JSON object per record (``kind``: ``train`` every ``log.every_steps``
optimiser steps, ``val`` after each validation, ``skip`` for an unreadable sample, ``error`` when
a run stops); ``metrics.csv`` the train and val records with fixed columns. A resumed run first
drops the records written after its checkpoint, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ..fileio import atomic_write_text
from ..progress import make_progress, progress_quiet

__all__ = ["Display", "MetricsLog", "format_eta"]

BASE_COLUMNS = ["kind", "epoch", "step", "loss", "lr", "samples_per_s", "skipped", "elapsed_s"]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsLog:
    """Appends records to ``metrics.jsonl`` / ``metrics.csv`` (and TensorBoard) on the writing rank."""

    def __init__(self, folder: Path, val_columns: list[str], enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = False):
        self.folder = Path(folder)
        self.enabled = enabled
        self.columns = BASE_COLUMNS + [c for c in val_columns if c not in BASE_COLUMNS]
        self.jsonl = self.folder / "metrics.jsonl"
        self.csv = self.folder / "metrics.csv"
        self._tb = None
        if not enabled:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        records = self._read() if resume_step is not None else []
        if resume_step is not None:
            records = [r for r in records if int(r.get("step", 0)) <= resume_step]
        self._rewrite(records)
        if tensorboard:
            self._tb = open_tensorboard(self.folder / "tensorboard")

    def _read(self) -> list[dict[str, Any]]:
        if not self.jsonl.is_file():
            return []
        out = []
        for line in self.jsonl.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a kill
        return out

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace both files with ``records`` (atomically: a kill while resuming loses nothing)."""
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in records))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            if r.get("kind") in ("train", "val"):
                writer.writerow({k: _clean(r.get(k, "")) for k in self.columns})
        atomic_write_text(self.csv, buf.getvalue())

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if record.get("kind") in ("train", "val"):
            with open(self.csv, "a", encoding="utf-8", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(
                    {k: record.get(k, "") for k in self.columns})
            if self._tb is not None:
                prefix = record["kind"]
                for key, value in record.items():
                    if isinstance(value, int | float) and not isinstance(value, bool) and key not in ("step", "epoch"):
                        self._tb.add_scalar(f"{prefix}/{key}", value, record.get("step", 0))
                self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def open_tensorboard(folder: Path) -> Any:
    """A SummaryWriter, imported only when asked for; a clear message when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from .errors import TrainingError

        raise TrainingError("log.tensorboard=true needs the tensorboard package: pip install tensorboard "
                            "(or leave log.tensorboard=false; metrics.jsonl and metrics.csv are always written)"
                            ) from None
    return SummaryWriter(log_dir=str(folder))


def format_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Display:
    """What a person watching sees: the product's progress display (``progress.make_progress``:
    steps, loss, lr, samples/s, ETA) on a terminal, plain lines otherwise, nothing on ranks other
    than 0 or with ``mode='none'``."""

    def __init__(self, mode: str = "auto", enabled: bool = True, console: Console | None = None):
        self.console = console or Console(stderr=True)
        if not enabled or mode == "none":
            self.mode = "none"
        elif mode == "auto":
            self.mode = "rich" if self.console.is_terminal and not progress_quiet() else "plain"
        else:
            self.mode = mode
        self._progress = None
        self._task = None
        self._started = time.perf_counter()

    def start(self, title: str, total_steps: int, done_steps: int) -> None:
        self._started = time.perf_counter()
        self._done_at_start = done_steps
        if self.mode == "rich":
            self._progress = make_progress("steps", console=self.console)
            self._progress.start()
            self._task = self._progress.add_task(title, total=total_steps, completed=done_steps, status="")
        elif self.mode == "plain":
            self.console.print(f"{title}: {done_steps}/{total_steps} steps done", highlight=False)

    def update(self, step: int, total: int, record: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self._started
        done = step - self._done_at_start
        eta = elapsed / done * (total - step) if done > 0 else float("nan")
        status = (f"epoch {record.get('epoch')} loss {record.get('loss', float('nan')):.4f} "
                  f"lr {record.get('lr', 0):.2e} {record.get('samples_per_s', 0):.1f} samples/s")
        if self.mode == "rich" and self._progress is not None:
            self._progress.update(self._task, completed=step, status=status)
        elif self.mode == "plain":
            self.console.print(f"step {step}/{total} {status} ETA {format_eta(eta)}", highlight=False)

    def message(self, text: str) -> None:
        if self.mode != "none":
            self.console.print(text, highlight=False)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def stderr_console() -> Console:
    return Console(file=sys.stderr)
