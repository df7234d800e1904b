"""Training data: the training manifest, ESC-50 / UrbanSound8K through the dataset readers, and
the torch ``Dataset`` + collate that turn samples into batches for every stage.

Training manifest (AudioSet-style data you downloaded yourself): CSV, TSV, JSONL, a JSON list or
Parquet, one sample per row. Columns (case-insensitive; the names of ``datasets.manifest`` plus
captions):

* audio: ``path``, ``audio``, ``audio_path``, ``file``, ``filename`` (required);
* images / video frames: ``image``, ``images``, ``image_path``, ``image_paths``, ``frames`` (optional;
  several per clip as ``"f0.jpg;f1.jpg"`` or a JSON list);
* labels: ``labels``, ``label``, ``category``, ``class``, ``classes`` (``"a;b"`` or a JSON list);
* caption: ``caption``, ``text``, ``description`` (optional);
* fold: ``fold`` (optional, for cross-validation); key: ``id``, ``key``, ``ytid`` (optional).

Relative paths are relative to ``data.root`` or else to the manifest's folder. A sample needs
labels or a caption. Its text is the caption (``data.text=auto``/``caption``) or
``format_labels([labels], template)`` (the official ", "-joined prompt).

Frames (paper 4.1): in training one of a clip's frames is picked at random (a pure function of
seed, epoch and sample, so workers and resumed runs agree); in evaluation the central one.
Audio: decoded at 44.1 kHz mono with ``load_audio``; training clips keep their own length (the
batched augmentations crop/pad them on the device), evaluation clips are centre-fitted with
``fit_length``. A file that cannot be decoded is skipped and counted, never fatal by itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..datasets.base import AudioPreprocessing
from ..datasets.manifest import AUDIO_COLUMNS, FOLD_COLUMNS, IMAGE_COLUMNS, LABEL_COLUMNS, read_records, split_list
from ..errors import InputError
from .config import ConfigError, DataConfig

CAPTION_COLUMNS = ("caption", "text", "description")
KEY_COLUMNS = ("id", "key", "ytid")
TRAIN_IMAGE_COLUMNS = (*IMAGE_COLUMNS, "frames")
DEFAULT_CLIP_SAMPLES = 220500  # 5 s at 44.1 kHz: the model's clip

__all__ = [
    "BadSample",
    "DataSource",
    "Sample",
    "Split",
    "TrainingSet",
    "collate",
    "find_missing",
    "load_source",
    "read_manifest",
]


@dataclass
class Sample:
    """One training sample: an audio file, optional frames, labels and/or a caption."""

    key: str
    audio: Path
    images: list[Path] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    caption: str | None = None
    fold: int | None = None

    def text(self, mode: str = "auto", template: str = "{}") -> str | None:
        """The sample's text: its caption, or its labels as the official prompt."""
        from ..text import format_labels

        if mode in ("auto", "caption") and self.caption:
            return self.caption
        if mode in ("auto", "labels") and self.labels:
            return format_labels([self.labels], template)[0]
        return None


class ManifestError(InputError):
    """A training manifest that cannot be read: names the file (and line) and the reason."""


# ---------------------------------------------------------------------------------------------
# manifests


def _records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line, record)]): Parquet here, every text format through the dataset readers' parser."""
    if path.suffix.lower() not in (".parquet", ".pq"):
        return read_records(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise ManifestError(path, "reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise ManifestError(path, f"not a readable Parquet file ({exc})") from None
    return list(table.column_names), list(enumerate(table.to_pylist(), start=1))


def _pick(columns: list[str], choices: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[c] for c in choices if c in lowered), None)


def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas-written files
        return None
    text = str(value).strip()
    return text or None


def read_manifest(path: str | Path, root: str | Path | None = None) -> list[Sample]:
    """The samples of a training manifest, in file order (see the module docstring)."""
    from ..datasets.base import DatasetError

    path = Path(path).expanduser()
    if not path.is_file():
        raise ManifestError(path, "training manifest not found")
    columns, records = _records(path)
    found = ", ".join(columns) or "none"
    audio_col = _pick(columns, AUDIO_COLUMNS)
    if audio_col is None:
        raise ManifestError(path, f"no audio column: expected one of {', '.join(AUDIO_COLUMNS)} "
                                  f"(columns found: {found})")
    image_col = _pick(columns, TRAIN_IMAGE_COLUMNS)
    label_col = _pick(columns, LABEL_COLUMNS)
    caption_col = _pick(columns, CAPTION_COLUMNS)
    fold_col = _pick(columns, FOLD_COLUMNS)
    key_col = _pick(columns, KEY_COLUMNS)
    if label_col is None and caption_col is None:
        raise ManifestError(path, f"no label or caption column: expected one of "
                                  f"{', '.join(LABEL_COLUMNS + CAPTION_COLUMNS)} (columns found: {found})")
    if not records:
        raise ManifestError(path, "the manifest lists no samples")
    base = Path(root).expanduser() if root else path.parent

    def resolve(cell: str) -> Path:
        p = Path(cell).expanduser()
        return p if p.is_absolute() else base / p

    samples: list[Sample] = []
    seen: set[str] = set()
    for line, rec in records:
        where = f"{path}, line {line}"
        audio_cell = _cell_text(rec.get(audio_col))
        if audio_cell is None:
            raise ManifestError(path, f"line {line}: empty audio path in column {audio_col!r}")
        try:
            labels = split_list(rec.get(label_col), f"{where}, column {label_col!r}") if label_col else []
            images = [resolve(p) for p in split_list(rec.get(image_col), where)] if image_col else []
        except DatasetError as exc:
            raise ManifestError(path, str(exc).removeprefix(f"{path}, ")) from None
        caption = _cell_text(rec.get(caption_col)) if caption_col else None
        if not labels and not caption:
            raise ManifestError(path, f"line {line}: neither labels nor a caption")
        fold = None
        fold_cell = _cell_text(rec.get(fold_col)) if fold_col else None
        if fold_cell is not None:
            try:
                fold = int(float(fold_cell))
            except ValueError:
                raise ManifestError(path, f"line {line}: fold must be an integer, got {fold_cell!r}") from None
        key = _cell_text(rec.get(key_col)) if key_col else None
        key = key or audio_cell
        if key in seen:
            key = f"{key}#{line}"
        seen.add(key)
        samples.append(Sample(key=key, audio=resolve(audio_cell), images=images, labels=labels,
                              caption=caption, fold=fold))
    return samples


def find_missing(samples: Sequence[Sample]) -> tuple[list[Path], int]:
    """(every audio/image path that is not an existing file, in order without repeats; paths checked)."""
    missing: list[Path] = []
    seen: set[Path] = set()
    for sample in samples:
        for p in (sample.audio, *sample.images):
            if p in seen:
                continue
            seen.add(p)
            if not p.is_file():
                missing.append(p)
    return missing, len(seen)


# ---------------------------------------------------------------------------------------------
# sources and splits


@dataclass
class Split:
    """What one training unit (the whole run, or one cross-validation fold) trains and validates on."""

    name: str  # "main" or "fold{k}"
    train: list[Sample]
    val: list[Sample]
    fold: int | None = None


@dataclass
class DataSource:
    """Every sample of a run with what is needed to turn it into tensors."""

    name: str
    samples: list[Sample]
    val_samples: list[Sample] | None
    class_names: list[str]
    preprocessing: AudioPreprocessing  # the evaluation transform, clip length included
    clip_samples: int

    @property
    def folds(self) -> list[int]:
        return sorted({s.fold for s in self.samples if s.fold is not None})

    @property
    def multilabel(self) -> bool:
        return any(len(set(s.labels)) > 1 for s in self.samples)

    @property
    def has_images(self) -> bool:
        return any(s.images for s in self.samples)

    def all_samples(self) -> list[Sample]:
        return self.samples + (self.val_samples or [])

    def splits(self, config: DataConfig) -> list[Split]:
        """Cross-validation folds, or one split (validation manifest / held-out fraction / none)."""
        folds_cfg = config.folds
        if folds_cfg is not None:
            have = self.folds
            if not have:
                raise ConfigError(f"data.folds is set but {self.name} has no folds (no 'fold' column)")
            wanted = have if folds_cfg == "all" else list(folds_cfg)
            unknown = [f for f in wanted if f not in have]
            if unknown:
                raise ConfigError(f"data.folds: no fold {', '.join(map(str, unknown))} in {self.name}; "
                                  f"folds present: {', '.join(map(str, have))}")
            return [Split(f"fold{k}", [s for s in self.samples if s.fold != k],
                          [s for s in self.samples if s.fold == k], fold=k) for k in wanted]
        if self.val_samples is not None:
            return [Split("main", list(self.samples), list(self.val_samples))]
        if config.val_fraction > 0:
            def held_out(s: Sample) -> bool:
                digest = hashlib.sha1(s.key.encode("utf-8")).digest()
                return int.from_bytes(digest[:8], "big") / 2**64 < config.val_fraction

            return [Split("main", [s for s in self.samples if not held_out(s)],
                          [s for s in self.samples if held_out(s)])]
        return [Split("main", list(self.samples), [])]


def _from_dataset(ds: Any) -> list[Sample]:
    out = []
    for item in ds.items(check_files=False):
        out.append(Sample(key=item.key, audio=Path(item.path), images=list(item.image_paths),
                          labels=list(item.labels), fold=item.fold))
    return out


def load_source(config: DataConfig) -> DataSource:
    """Read the configured data (manifest, ESC-50 or UrbanSound8K) without decoding anything."""
    from ..datasets import ESC50, UrbanSound8K

    if config.dataset in ("esc50", "us8k"):
        ds = ESC50(config.root) if config.dataset == "esc50" else UrbanSound8K(config.root)
        samples = _from_dataset(ds)
        class_names = list(ds.class_names)
        pre = ds.preprocessing
        clip = config.clip_samples or pre.clip_samples or DEFAULT_CLIP_SAMPLES
        val = None
        name = ds.title
    else:
        samples = read_manifest(config.train, config.root)
        val = read_manifest(config.val, config.root) if config.val else None
        seen = [s for s in samples + (val or [])]
        if config.classes:
            class_file = Path(config.classes).expanduser()
            if not class_file.is_file():
                raise ManifestError(class_file, "class vocabulary file not found")
            class_names = [ln.strip() for ln in class_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
            unknown = sorted({lab for s in seen for lab in s.labels} - set(class_names))
            if unknown:
                raise ManifestError(class_file, f"labels not in the vocabulary: {', '.join(unknown[:10])}"
                                                + (f" ... ({len(unknown)} in all)" if len(unknown) > 10 else ""))
        else:
            class_names = sorted({lab for s in seen for lab in s.labels})
        clip = config.clip_samples or DEFAULT_CLIP_SAMPLES
        pre = AudioPreprocessing(sample_rate=config.sample_rate, mono=True, clip_samples=clip)
        name = f"manifest {Path(config.train).name}"
    pre = dataclasses.replace(pre, sample_rate=config.sample_rate, clip_samples=clip)
    return DataSource(name=name, samples=samples, val_samples=val, class_names=class_names,
                      preprocessing=pre, clip_samples=clip)


# ---------------------------------------------------------------------------------------------
# torch dataset


@dataclass
class BadSample:
    """A sample whose audio or picture could not be decoded: skipped and counted."""

    index: int
    key: str
    reason: str


def frame_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index])


class TrainingSet(torch.utils.data.Dataset):
    """Samples -> dicts of tensors for one stage.

    ``train``: clips keep their decoded length (the augmenter fits them); otherwise each clip is
    centre-fitted to the clip length. ``classes`` (name -> index) gives classification targets
    (an index, or a multi-hot vector when ``multilabel``). ``text``: the text mode, or ``None``
    when the stage uses no text; ``images``: whether to load a frame.
    """

    def __init__(self, samples: Sequence[Sample], preprocessing: AudioPreprocessing, *, train: bool,
                 text: str | None = None, template: str = "{}", images: bool = False,
                 classes: dict[str, int] | None = None, multilabel: bool = False, seed: int = 0,
                 image_size: int = 224, cache_audio: bool = False):
        self.samples = list(samples)
        self.preprocessing = preprocessing
        self.train = train
        self.text_mode = text
        self.template = template
        self.images = images
        self.classes = classes
        self.multilabel = multilabel
        self.seed = seed
        self.image_size = image_size
        self.epoch = 0
        self.cache_audio = cache_audio
        self._cache: dict[int, torch.Tensor] = {}
        self._image_transform = None
        self._texts = [s.text(text, template) for s in self.samples] if text else None
        self._tokens: dict[str, torch.Tensor] = {}
        if text:
            from ..text import tokenize

            tokenize("")  # load the tokenizer here, so forked loader workers inherit it

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def text_of(self, index: int) -> str | None:
        return self._texts[index] if self._texts is not None else None

    def _audio(self, index: int) -> torch.Tensor:
        if index in self._cache:
            return self._cache[index]
        # The dataset protocol's decode and transform, as the evaluator's; training leaves out the
        # final fit: the augmenter crops/pads on the device.
        wave = self.preprocessing.load(self.samples[index].audio, fit=not self.train)
        if self.cache_audio:
            self._cache[index] = wave
        return wave

    def _frame(self, index: int, epoch: int) -> torch.Tensor:
        from ..image import image_transform, load_image

        frames = self.samples[index].images
        if not frames:
            raise ValueError(f"sample {self.samples[index].key!r} has no image")
        # Training: one frame at random (seed, epoch, sample); evaluation: the central one.
        pick = int(frame_rng(self.seed, epoch, index).integers(len(frames))) if self.train else len(frames) // 2
        if self._image_transform is None:
            self._image_transform = image_transform(self.image_size)
        return self._image_transform(load_image(frames[pick]))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | BadSample:
        """``dataset[i]``, or ``dataset[(epoch, i)]`` as the training sampler asks (the epoch travels
        with the index, so persistent loader workers pick the right frame without being told)."""
        from ..text import tokenize

        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        sample = self.samples[index]
        try:
            item: dict[str, Any] = {"index": index, "audio": self._audio(index)}
            if self.images:
                item["image"] = self._frame(index, epoch)
        except InputError as exc:  # AudioLoadError, ImageLoadError
            return BadSample(index, sample.key, f"{exc.path}: {exc.reason}")
        if self._texts is not None:
            text = self._texts[index]
            if text not in self._tokens:
                self._tokens[text] = tokenize(text)[0]
            item["tokens"] = self._tokens[text]
        if self.classes is not None:
            ids = [self.classes[lab] for lab in dict.fromkeys(sample.labels)]
            if self.multilabel:
                target = torch.zeros(len(self.classes))
                target[ids] = 1.0
                item["target"] = target
            else:
                item["target"] = torch.tensor(ids[0], dtype=torch.long)
        return item


def collate(items: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack a batch; clips of different lengths are zero-padded and their ``lengths`` kept.

    Unreadable samples are left out and listed under ``"bad"``; ``"size"`` is the number of
    samples that made it (0: nothing to train on in this batch).
    """
    good = [it for it in items if not isinstance(it, BadSample)]
    bad = [it for it in items if isinstance(it, BadSample)]
    batch: dict[str, Any] = {"bad": bad, "size": len(good)}
    if not good:
        return batch
    waves = [it["audio"] for it in good]
    channels = {w.shape[0] for w in waves}
    if len(channels) != 1:
        raise ValueError(f"clips with different channel counts in one batch: {sorted(channels)}")
    longest = max(w.shape[-1] for w in waves)
    audio = torch.zeros(len(waves), waves[0].shape[0], longest, dtype=waves[0].dtype)
    for i, w in enumerate(waves):
        audio[i, :, : w.shape[-1]] = w
    batch["audio"] = audio
    batch["lengths"] = torch.tensor([w.shape[-1] for w in waves], dtype=torch.long)
    batch["index"] = torch.tensor([it["index"] for it in good], dtype=torch.long)
    for key in ("image", "tokens", "target"):
        if key in good[0]:
            batch[key] = torch.stack([it[key] for it in good])
    return batch
