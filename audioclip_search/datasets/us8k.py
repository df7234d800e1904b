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

from .base import AudioPreprocessing, Dataset, OfficialLayout

CLIP_SAMPLES = 176400  # 4 s at 44.1 kHz


def class_name(label: str) -> str:
    """'dog_bark' -> 'dog bark' (the official loader's ``replace('_', ' ').strip(' ')``)."""
    return label.replace("_", " ").strip(" ")


LAYOUT = OfficialLayout("UrbanSound8K", "metadata/UrbanSound8K.csv", file="slice_file_name", target="classID",
                        label="class", class_name=class_name, fold_folders=True)


class UrbanSound8K(Dataset):
    """UrbanSound8K from ``root`` (the folder holding ``metadata/`` and ``audio/``)."""

    name = "us8k"
    title = "UrbanSound8K"

    def __init__(self, root: str | Path, official_scaling: bool = True):
        class_names, items = LAYOUT.read(root)
        preprocessing = AudioPreprocessing(clip_samples=CLIP_SAMPLES, head_truncate=official_scaling,
                                           minmax_scale=official_scaling)
        super().__init__(root, class_names, items, preprocessing)
