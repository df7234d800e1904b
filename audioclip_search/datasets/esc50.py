"""ESC-50 (Piczak 2015) in its official layout: ``meta/esc50.csv`` and ``audio/*.wav``.

2000 clips of 5 s at 44.1 kHz, 50 classes, 5 folds. Class names are the ``category`` column with
underscores read as spaces ("dog", "crying baby"), ordered by the ``target`` column, as the
official AudioCLIP loader builds them. Items keep the CSV's row order. Evaluation audio: 44.1 kHz
mono, centre pad/crop to 5 s = 220500 samples.
"""

from __future__ import annotations

from pathlib import Path

from .base import AudioPreprocessing, Dataset, DatasetError, Item, parse_int, read_layout

CLIP_SAMPLES = 220500  # 5 s at 44.1 kHz
COLUMNS = ("filename", "fold", "target", "category")


def class_name(category: str) -> str:
    """'crying_baby' -> 'crying baby' (the official loader's ``replace('_', ' ')``)."""
    return category.replace("_", " ")


def label_table(pairs: list[tuple[int, str]], where: Path, what: str) -> list[str]:
    """(target, name) pairs -> names ordered by target; a target with two names is an error."""
    by_target: dict[int, str] = {}
    for target, name in pairs:
        if by_target.setdefault(target, name) != name:
            raise DatasetError(f"{what}: {where}: class index {target} is both {by_target[target]!r} and {name!r}")
    return [by_target[t] for t in sorted(by_target)]


class ESC50(Dataset):
    """ESC-50 from ``root`` (the folder holding ``meta/`` and ``audio/``)."""

    name = "esc50"
    title = "ESC-50"

    def __init__(self, root: str | Path):
        root = Path(root)
        csv_path, audio_dir, rows = read_layout(root, "meta/esc50.csv", COLUMNS, "ESC-50")
        items: list[Item] = []
        pairs: list[tuple[int, str]] = []
        for line, row in enumerate(rows, start=2):
            if not row["filename"]:
                raise DatasetError(f"{csv_path}, line {line}: empty 'filename'")
            label = class_name(row["category"])
            pairs.append((parse_int(row["target"], csv_path, line, "target"), label))
            items.append(Item(path=audio_dir / row["filename"], labels=[label],
                              fold=parse_int(row["fold"], csv_path, line, "fold"),
                              key=f"audio/{row['filename']}"))
        super().__init__(root, label_table(pairs, csv_path, "ESC-50"), items,
                         AudioPreprocessing(clip_samples=CLIP_SAMPLES))
