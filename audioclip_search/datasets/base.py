"""What a labelled item is, what a dataset offers, and how its audio is prepared for the model.

Every reader (ESC-50, UrbanSound8K, a generic manifest) returns the same things, so evaluation
and training code never look at a layout:

* ``Item``: one sample. ``path`` (the audio file, ``None`` for an image-only item), ``labels``
  (one or more class names), ``fold`` (``None`` where the dataset has no folds), ``image_paths``
  (zero or more pictures with the same labels) and ``key`` (a stable id, the path relative to the
  dataset root).
* ``Dataset``: ``name``, ``root``, ``class_names`` (fixed order: the class index), ``folds``,
  ``items(fold=None)`` in a fixed order, and ``preprocessing`` (an ``AudioPreprocessing``).
* ``AudioPreprocessing``: the deterministic evaluation transform (decode at 44.1 kHz, mono,
  centre pad/crop to the dataset's clip length with ``audio.fit_length``), as data, so it can be
  part of a cache key and written into a report.

Problems with the dataset itself (no such folder, a CSV without its columns, listed files that are
not there, an unknown fold) raise ``DatasetError`` naming what is missing. A file that exists but
cannot be decoded is the caller's to count and skip (``AudioLoadError`` from ``load_audio``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import AudioClipSearchError

MODEL_SAMPLE_RATE = 44100

__all__ = [
    "MODEL_SAMPLE_RATE",
    "AudioPreprocessing",
    "Dataset",
    "DatasetError",
    "Item",
    "OfficialLayout",
    "label_table",
    "parse_int",
    "read_csv_rows",
    "read_layout",
]


class DatasetError(AudioClipSearchError):
    """The dataset cannot be used as given: a missing folder, file, CSV column, or fold."""


@dataclass
class Item:
    """One labelled sample. ``labels`` holds class names as the dataset spells them."""

    path: Path | None
    labels: list[str]
    fold: int | None = None
    image_paths: list[Path] = field(default_factory=list)
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = str(self.path if self.path is not None else (self.image_paths or [""])[0])

    @property
    def label_set(self) -> tuple[str, ...]:
        """The labels as a canonical tuple (sorted, unique): equal sets compare equal."""
        return tuple(sorted(set(self.labels)))

    @property
    def has_audio(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class AudioPreprocessing:
    """The deterministic evaluation transform of one dataset.

    ``sample_rate``/``mono``: what ``load_audio`` decodes to. ``clip_samples``: the centre pad/crop
    length (``fit_length``); ``None`` keeps each file's own length. ``head_truncate`` keeps only
    the first ``clip_samples`` before anything else and ``minmax_scale`` maps each clip's
    [min, max] onto the full int16 range: the two steps of the official UrbanSound8K loader.
    """

    sample_rate: int = MODEL_SAMPLE_RATE
    mono: bool = True
    clip_samples: int | None = None
    head_truncate: bool = False
    minmax_scale: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load(self, path: str | Path, fit: bool = True) -> torch.Tensor:
        """Decode ``path`` and apply the transform; raises ``AudioLoadError`` for a bad file.

        ``fit=False`` skips the final pad/crop: what a trainer feeds its random augmentations.
        """
        from ..audio import load_audio

        waveform, _ = load_audio(path, sample_rate=self.sample_rate, mono=self.mono)
        return self.apply(waveform, fit=fit)

    def apply(self, waveform: torch.Tensor, fit: bool = True) -> torch.Tensor:
        """(C, T) float audio in [-1, 1] at ``sample_rate`` -> the prepared (C, clip_samples)."""
        from ..audio import fit_length

        if self.head_truncate and self.clip_samples is not None:
            waveform = waveform[..., : self.clip_samples]
        if self.minmax_scale:
            waveform = minmax_scale(waveform)
        if fit and self.clip_samples is not None:
            waveform = fit_length(waveform, self.clip_samples)
        return waveform.contiguous()


def minmax_scale(waveform: torch.Tensor) -> torch.Tensor:
    """The official US8K loader's ``scale(wav, wav.min(), wav.max(), -32768, 32767)``, on [-1, 1] audio.

    In model units (x 32768) the clip's minimum becomes -32768 and its maximum 32767. A constant
    clip (max == min) is returned unchanged instead of dividing by zero.
    """
    lo, hi = waveform.min(), waveform.max()
    if not bool(hi > lo):
        return waveform
    top = 32767.0 / 32768.0
    return (waveform - lo) / (hi - lo) * (top + 1.0) - 1.0


class Dataset:
    """A labelled collection of audio (and/or image) files; subclasses read one layout each."""

    name: str = "dataset"
    #: Human-readable name for reports ("ESC-50").
    title: str = "dataset"

    def __init__(self, root: str | Path, class_names: Sequence[str], items: Sequence[Item],
                 preprocessing: AudioPreprocessing):
        self.root = Path(root)
        self.class_names: list[str] = list(class_names)
        self._items: list[Item] = list(items)
        self._preprocessing = preprocessing
        self._class_index = {name: i for i, name in enumerate(self.class_names)}

    # -- structure -----------------------------------------------------------------------------

    @property
    def preprocessing(self) -> AudioPreprocessing:
        return self._preprocessing

    @property
    def folds(self) -> list[int]:
        """The folds present, ascending; empty when the dataset has none."""
        return sorted({it.fold for it in self._items if it.fold is not None})

    @property
    def has_audio(self) -> bool:
        return any(it.path is not None for it in self._items)

    @property
    def has_images(self) -> bool:
        return any(it.image_paths for it in self._items)

    @property
    def multilabel(self) -> bool:
        return any(len(it.label_set) > 1 for it in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, items={len(self._items)}, "
                f"classes={len(self.class_names)}, folds={self.folds})")

    def class_index(self, label: str) -> int:
        try:
            return self._class_index[label]
        except KeyError:
            raise DatasetError(f"{self.title}: unknown class {label!r}") from None

    def targets(self, item: Item) -> list[int]:
        """The class indices of an item's labels, in label-set order."""
        return [self.class_index(label) for label in item.label_set]

    def items(self, fold: int | Iterable[int] | None = None, check_files: bool = True) -> list[Item]:
        """Items in the dataset's fixed order; ``fold`` picks one fold or several, ``None`` all.

        An unknown fold is a ``DatasetError`` listing the folds there are. With ``check_files``
        (the default) every listed file must exist, else a ``DatasetError`` names the missing ones.
        """
        if fold is None:
            chosen = list(self._items)
        else:
            wanted = [fold] if isinstance(fold, int) else list(fold)
            unknown = [f for f in wanted if f not in self.folds]
            if unknown:
                have = ", ".join(map(str, self.folds)) or "none (this dataset has no folds)"
                raise DatasetError(f"{self.title} at {self.root}: no fold {', '.join(map(str, unknown))}; "
                                   f"folds present: {have}")
            keep = set(wanted)
            chosen = [it for it in self._items if it.fold in keep]
        if check_files:
            self.check_files(chosen)
        return chosen

    def check_files(self, items: Iterable[Item]) -> None:
        """Raise ``DatasetError`` naming the listed audio/image files (or whole folders) not there."""
        missing: list[Path] = []
        count = 0
        for item in items:
            for path in ([item.path] if item.path is not None else []) + list(item.image_paths):
                count += 1
                if not path.is_file():
                    missing.append(path)
        if not missing:
            return
        lines: list[str] = []
        folders: dict[Path, int] = {}
        for path in missing:
            if not path.parent.is_dir():
                folders[path.parent] = folders.get(path.parent, 0) + 1
        for folder, n in sorted(folders.items()):
            lines.append(f"folder {folder} (holding {n} listed file{'s' if n != 1 else ''})")
        files = [p for p in missing if p.parent not in folders]
        lines.extend(str(p) for p in files[:10])
        if len(files) > 10:
            lines.append(f"... and {len(files) - 10} more files")
        raise DatasetError(f"{self.title} at {self.root}: {len(missing)} of {count} listed files are "
                           f"missing:\n  " + "\n  ".join(lines))

    def describe(self) -> dict[str, Any]:
        """What a report records about the dataset."""
        return {
            "name": self.name,
            "title": self.title,
            "root": str(self.root.absolute()),
            "items": len(self._items),
            "classes": len(self.class_names),
            "folds": self.folds,
            "multilabel": self.multilabel,
            "has_audio": self.has_audio,
            "has_images": self.has_images,
            "preprocessing": self.preprocessing.to_dict(),
        }

    # -- audio ---------------------------------------------------------------------------------

    def load_audio(self, item: Item, fit: bool = True) -> torch.Tensor:
        """The item's prepared waveform (C, clip_samples); ``AudioLoadError`` for a bad file.

        ``fit=False`` returns it before the centre pad/crop (any length), for training.
        """
        if item.path is None:
            raise DatasetError(f"{self.title}: item {item.key!r} has no audio file")
        return self.preprocessing.load(item.path, fit=fit)

    def split(self, test_fold: int, check_files: bool = True) -> tuple[list[Item], list[Item]]:
        """(train, test) for cross-validation: every other fold's items, and ``test_fold``'s."""
        test = self.items(test_fold, check_files=check_files)
        train_folds = [f for f in self.folds if f != test_fold]
        train = self.items(train_folds, check_files=check_files) if train_folds else []
        return train, test


@dataclass(frozen=True)
class OfficialLayout:
    """An official dataset layout: ``root/metadata`` (a CSV, one row a clip) and ``root/audio``.

    ``file``/``target``/``label``: the CSV columns of a clip's file name, class index and class
    name (``class_name`` turns the latter into ours); every layout has a ``fold`` column.
    ``fold_folders``: clips lie in ``audio/fold<N>/`` (UrbanSound8K) rather than ``audio/``.
    """

    what: str
    metadata: str
    file: str
    target: str
    label: str
    class_name: Callable[[str], str]
    fold_folders: bool = False

    def read(self, root: str | Path) -> tuple[list[str], list[Item]]:
        """(class names by class index, items in the CSV's row order); ``DatasetError`` names a bad row."""
        columns = (self.file, "fold", self.target, self.label)
        csv_path, audio_dir, rows = read_layout(root, self.metadata, columns, self.what)
        items: list[Item] = []
        pairs: list[tuple[int, str]] = []
        for line, row in enumerate(rows, start=2):
            if not row[self.file]:
                raise DatasetError(f"{csv_path}, line {line}: empty '{self.file}'")
            fold = parse_int(row["fold"], csv_path, line, "fold")
            label = self.class_name(row[self.label])
            pairs.append((parse_int(row[self.target], csv_path, line, self.target), label))
            key = f"audio/fold{fold}/{row[self.file]}" if self.fold_folders else f"audio/{row[self.file]}"
            items.append(Item(path=audio_dir.parent / key, labels=[label], fold=fold, key=key))
        return label_table(pairs, csv_path, self.what), items


def label_table(pairs: list[tuple[int, str]], where: Path, what: str) -> list[str]:
    """(target, name) pairs -> names ordered by target; a target with two names is an error."""
    by_target: dict[int, str] = {}
    for target, name in pairs:
        if by_target.setdefault(target, name) != name:
            raise DatasetError(f"{what}: {where}: class index {target} is both {by_target[target]!r} and {name!r}")
    return [by_target[t] for t in sorted(by_target)]


def read_layout(root: str | Path, metadata: str, required: Sequence[str], what: str
                ) -> tuple[Path, Path, list[dict[str, str]]]:
    """An official layout (``root/metadata`` CSV + ``root/audio``): the CSV path, the audio folder
    and the CSV's rows, after checking that the folders exist and the CSV lists clips."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{what}: dataset folder not found: {root}")
    csv_path = root / metadata
    audio_dir = root / "audio"
    rows = read_csv_rows(csv_path, required, what)
    if not audio_dir.is_dir():
        raise DatasetError(f"{what}: audio folder missing: {audio_dir}")
    if not rows:
        raise DatasetError(f"{what}: {csv_path} lists no clips")
    return csv_path, audio_dir, rows


def read_csv_rows(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    """A CSV's rows as dicts, after checking that the file and the ``required`` columns exist."""
    if not path.is_file():
        raise DatasetError(f"{what}: metadata file missing: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise DatasetError(f"{what}: {path} lacks the column(s) {', '.join(missing)} "
                                   f"(columns found: {', '.join(columns) or 'none'})")
            rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else v
                     for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{what}: {path} is not a UTF-8 CSV file ({exc.reason})") from None
    except csv.Error as exc:
        raise DatasetError(f"{what}: {path} is not a valid CSV file ({exc})") from None
    return rows


def parse_int(value: str, path: Path, line: int, column: str) -> int:
    """An integer CSV cell, or a ``DatasetError`` naming the file, line and column."""
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        number = float(value)
        if number.is_integer():
            return int(number)
    except (TypeError, ValueError):
        pass
    raise DatasetError(f"{path}, line {line}: column {column!r} must be an integer, got {value!r}")
