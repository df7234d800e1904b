"""Labelled datasets in their official layouts, and your own corpora through a manifest.

    from audioclip_search.datasets import open_dataset
    ds = open_dataset("esc50", "/data/ESC-50")
    for item in ds.items(fold=1):          # fixed order; item.path, item.labels, item.fold
        wave = ds.load_audio(item)          # (1, 220500) float32 in [-1, 1], 44.1 kHz mono

Readers: ``ESC50`` (``meta/esc50.csv``, 5 folds, 50 classes), ``UrbanSound8K``
(``metadata/UrbanSound8K.csv``, 10 folds, 10 classes) and ``ManifestDataset`` (CSV/JSONL of paths
and labels, audio and/or images, single- or multi-label). Problems with the dataset raise
``DatasetError`` naming what is missing.
"""

from __future__ import annotations

from pathlib import Path

from .base import AudioPreprocessing, Dataset, DatasetError, Item
from .esc50 import ESC50
from .manifest import ManifestDataset, find_manifest
from .us8k import UrbanSound8K

DATASETS = ("esc50", "us8k", "manifest")

__all__ = [
    "DATASETS",
    "ESC50",
    "AudioPreprocessing",
    "Dataset",
    "DatasetError",
    "Item",
    "ManifestDataset",
    "UrbanSound8K",
    "find_manifest",
    "open_dataset",
]


def open_dataset(
    name: str,
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    clip_seconds: float | None = None,
) -> Dataset:
    """A dataset reader by name: ``esc50`` / ``us8k`` read ``root``; ``manifest`` reads ``manifest``
    (or the single ``manifest.csv``/``.jsonl``/``.json`` in ``root``)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("esc50",):
        if root is None:
            raise DatasetError("ESC-50: give the dataset folder (--root)")
        return ESC50(root)
    if key in ("us8k", "urbansound8k"):
        if root is None:
            raise DatasetError("UrbanSound8K: give the dataset folder (--root)")
        return UrbanSound8K(root)
    if key == "manifest":
        if manifest is None:
            if root is None:
                raise DatasetError("manifest dataset: give --manifest FILE or a --root folder holding manifest.csv")
            manifest = find_manifest(root)
        return ManifestDataset(manifest, clip_seconds=clip_seconds)
    raise DatasetError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
