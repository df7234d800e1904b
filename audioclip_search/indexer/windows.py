"""How audio becomes model inputs: 5 s windows (the paper's clip length) with a hop.

Shared by the indexer and by audio queries so a query clip is cut exactly as indexed clips are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..audio import MODEL_SAMPLE_RATE, fit_length, window_starts


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
