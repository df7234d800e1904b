"""ESC-50 (Piczak 2015) in its official layout: ``meta/esc50.csv`` and ``audio/*.wav``.

2000 clips of 5 s at 44.1 kHz, 50 classes, 5 folds. Class names are the ``category`` column with
underscores read as spaces ("dog", "crying baby"), ordered by the ``target`` column, as the
official AudioCLIP loader builds them. Items keep the CSV's row order. Evaluation audio: 44.1 kHz
mono, centre pad/crop to 5 s = 220500 samples.
"""

from __future__ import annotations

from pathlib import Path

from .base import AudioPreprocessing, Dataset, OfficialLayout

CLIP_SAMPLES = 220500  # 5 s at 44.1 kHz


def class_name(category: str) -> str:
    """'crying_baby' -> 'crying baby' (the official loader's ``replace('_', ' ')``)."""
    return category.replace("_", " ")


LAYOUT = OfficialLayout("ESC-50", "meta/esc50.csv", file="filename", target="target", label="category",
                        class_name=class_name)


class ESC50(Dataset):
    """ESC-50 from ``root`` (the folder holding ``meta/`` and ``audio/``)."""

    name = "esc50"
    title = "ESC-50"

    def __init__(self, root: str | Path):
        class_names, items = LAYOUT.read(root)
        super().__init__(root, class_names, items, AudioPreprocessing(clip_samples=CLIP_SAMPLES))
