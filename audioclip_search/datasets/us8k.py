"""UrbanSound8K (Salamon et al. 2014) in its official layout.

``metadata/UrbanSound8K.csv`` and ``audio/fold1`` ... ``audio/fold10``: 8732 clips of at most 4 s,
16-48 kHz, mono or stereo, 10 classes, 10 folds. Class names are the ``class`` column with
underscores read as spaces ("dog bark"), ordered by ``classID``; items keep the CSV's row order.

Evaluation audio is resampled to 44.1 kHz, mixed to mono and centre padded/cropped to 4 s =
176400 samples. With ``official_scaling`` (the default) two steps of the official AudioCLIP loader
come first: only the first 4 s are kept, and each clip's [min, max] is stretched to full scale.
"""

from __future__ import annotations

from pathlib import Path

from .base import AudioPreprocessing, Dataset, DatasetError, Item, parse_int, read_layout
from .esc50 import label_table

CLIP_SAMPLES = 176400  # 4 s at 44.1 kHz
COLUMNS = ("slice_file_name", "fold", "classID", "class")


def class_name(label: str) -> str:
    """'dog_bark' -> 'dog bark' (the official loader's ``replace('_', ' ').strip(' ')``)."""
    return label.replace("_", " ").strip(" ")


class UrbanSound8K(Dataset):
    """UrbanSound8K from ``root`` (the folder holding ``metadata/`` and ``audio/``)."""

    name = "us8k"
    title = "UrbanSound8K"

    def __init__(self, root: str | Path, official_scaling: bool = True):
        root = Path(root)
        csv_path, audio_dir, rows = read_layout(root, "metadata/UrbanSound8K.csv", COLUMNS, "UrbanSound8K")
        items: list[Item] = []
        pairs: list[tuple[int, str]] = []
        for line, row in enumerate(rows, start=2):
            if not row["slice_file_name"]:
                raise DatasetError(f"{csv_path}, line {line}: empty 'slice_file_name'")
            fold = parse_int(row["fold"], csv_path, line, "fold")
            label = class_name(row["class"])
            pairs.append((parse_int(row["classID"], csv_path, line, "classID"), label))
            folder = audio_dir / f"fold{fold}"
            items.append(Item(path=folder / row["slice_file_name"], labels=[label], fold=fold,
                              key=f"audio/fold{fold}/{row['slice_file_name']}"))
        preprocessing = AudioPreprocessing(clip_samples=CLIP_SAMPLES, head_truncate=official_scaling,
                                           minmax_scale=official_scaling)
        super().__init__(root, label_table(pairs, csv_path, "UrbanSound8K"), items, preprocessing)
