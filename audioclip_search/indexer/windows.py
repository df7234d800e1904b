"""How audio becomes model inputs: a clip geometry turns a decoded signal into model inputs.

Two geometries, both handed to the reader stage (:func:`~.reader.read_files`'s ``window``):

* :class:`WindowSpec`: 5 s windows (the paper's clip length) with a hop, for indexing. Shared by
  the indexer and by audio queries so a query clip is cut exactly as indexed clips are.
* :class:`WholeClip`: one input per file, the whole signal through a dataset protocol's transform
  (the official evaluation's pad/crop), for the evaluator.

A geometry's ``cutter()`` makes a fresh cutter per file: ``push`` it the decoded blocks in order
and ``finish`` it at the end; each returns the inputs completed so far with their (start, end) s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..audio import MODEL_SAMPLE_RATE, fit_length, window_starts

Spans = list[tuple[float, float]]


class Cutter(Protocol):
    """Cuts one file's signal, pushed block by block, into model inputs."""

    def push(self, block: torch.Tensor) -> tuple[list[torch.Tensor], Spans]: ...

    def finish(self) -> tuple[list[torch.Tensor], Spans]: ...


class ClipGeometry(Protocol):
    """How the reader turns a decoded audio file into model inputs (picklable: it travels to workers)."""

    def cutter(self) -> Cutter: ...


@dataclass(frozen=True)
class WindowSpec:
    seconds: float = 5.0
    hop_seconds: float = 2.5  # 50 % overlap by default

    @property
    def samples(self) -> int:
        return int(round(self.seconds * MODEL_SAMPLE_RATE))

    @property
    def hop(self) -> int:
        return max(1, int(round(self.hop_seconds * MODEL_SAMPLE_RATE)))

    def cutter(self) -> WindowCutter:
        return WindowCutter(self)


def split_windows(waveform: torch.Tensor, spec: WindowSpec) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
    """(C, T) -> windows of exactly spec.samples (views where possible) and their (start, end) seconds.

    Audio no longer than a window is centre-padded as the official evaluation pads, so a short
    clip gives one deterministic window; the reported span is the real audio's.
    """
    total = waveform.shape[-1]
    if total <= spec.samples:
        return [fit_length(waveform, spec.samples)], [(0.0, total / MODEL_SAMPLE_RATE)]
    starts = window_starts(total, spec.samples, spec.hop)
    windows = [waveform[..., s : s + spec.samples] for s in starts]
    spans = [(s / MODEL_SAMPLE_RATE, (s + spec.samples) / MODEL_SAMPLE_RATE) for s in starts]
    return windows, spans


class WindowCutter:
    """``split_windows`` for a signal that arrives in blocks: the same windows and spans, bounded memory.

    Push ``(C, n)`` blocks in order; each :meth:`push` returns the windows completed so far (views
    of the cutter's buffer) with their spans, and :meth:`finish` the last one (the window that ends
    exactly at the end, or the padded window of a signal no longer than one window). Only the
    newest ``spec.samples`` samples are kept between pushes.
    """

    def __init__(self, spec: WindowSpec):
        self.spec = spec
        self._buffer: torch.Tensor | None = None
        self._buffer_start = 0  # absolute index of the buffer's first sample
        self._next = 0  # absolute start of the next grid window
        self._emitted = 0
        self._last_start = -1

    @property
    def total(self) -> int:
        """Samples pushed so far."""
        return 0 if self._buffer is None else self._buffer_start + self._buffer.shape[-1]

    def push(self, block: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
        self._buffer = block if self._buffer is None else torch.cat((self._buffer, block), dim=-1)
        windows, spans = [], []
        size, end = self.spec.samples, self.total
        while self._next + size <= end:
            at = self._next - self._buffer_start
            windows.append(self._buffer[..., at : at + size])
            spans.append((self._next / MODEL_SAMPLE_RATE, (self._next + size) / MODEL_SAMPLE_RATE))
            self._last_start = self._next
            self._next += self.spec.hop
        self._emitted += len(windows)
        keep_from = min(self._next, end - size)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[..., keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        return windows, spans

    def finish(self) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
        if self._buffer is None or self.total == 0:
            return [], []
        size, end = self.spec.samples, self.total
        if end < size or (end == size and self._emitted == 0):
            return [fit_length(self._buffer, size)], [(0.0, end / MODEL_SAMPLE_RATE)]
        if self._last_start + size < end:
            self._emitted += 1
            start = end - size
            return [self._buffer[..., -size:]], [(start / MODEL_SAMPLE_RATE, end / MODEL_SAMPLE_RATE)]
        return [], []


@dataclass(frozen=True)
class WholeClip:
    """One model input per file: the whole decoded signal through ``prepare``.

    ``prepare`` maps the (C, T) signal to the model input; for evaluation it is a dataset's
    ``AudioPreprocessing.apply`` (the paper's protocol: head truncation, scaling, centre
    pad/crop), where the indexer's windows would cut a long clip into several inputs.
    """

    prepare: Callable[[torch.Tensor], torch.Tensor]

    def cutter(self) -> WholeClipCutter:
        return WholeClipCutter(self.prepare)


class WholeClipCutter:
    """Keeps every block; :meth:`finish` gives the one prepared input and the real audio's span."""

    def __init__(self, prepare: Callable[[torch.Tensor], torch.Tensor]):
        self.prepare = prepare
        self._blocks: list[torch.Tensor] = []

    def push(self, block: torch.Tensor) -> tuple[list[torch.Tensor], Spans]:
        self._blocks.append(block)
        return [], []

    def finish(self) -> tuple[list[torch.Tensor], Spans]:
        if not self._blocks:
            return [], []
        signal = self._blocks[0] if len(self._blocks) == 1 else torch.cat(self._blocks, dim=-1)
        self._blocks = []
        return [self.prepare(signal)], [(0.0, signal.shape[-1] / MODEL_SAMPLE_RATE)]
