"""Your own labelled corpus: a CSV or JSONL manifest of files and their labels.

One row (CSV) or one JSON object per line (JSONL; a ``.json`` file holding a list of objects works
too) per sample. Column names are matched case-insensitively; the first one present is used:

=========  ====================================================  ============================
role       accepted column names                                 cell
=========  ====================================================  ============================
audio      ``path``, ``audio``, ``audio_path``, ``file``,        one file path
           ``filename``
image      ``image``, ``images``, ``image_path``, ``image_paths``  one path, ``"a.png;b.png"``,
                                                                 or a JSON list
labels     ``labels``, ``label``, ``category``, ``class``,       ``"dog"``, ``"dog;bark"``, or a
           ``classes``                                           JSON list ``["dog", "bark"]``
fold       ``fold`` (optional)                                   an integer, or empty
=========  ====================================================  ============================

At least one of audio/image and the labels are required. Relative paths are relative to the
folder of the manifest. Several labels on a row make a multi-label item (AudioSet style): for
querying, a result is relevant when its label *set* equals the query's. Class names are the
distinct labels, sorted. Rows keep the file's order.

Clip length: ``clip_seconds`` if given, else the paper's rule (pad/crop to the longest track in the
corpus, read from the file headers) capped at ``max_clip_seconds`` (10 s, AudioSet's length).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .base import MODEL_SAMPLE_RATE, AudioPreprocessing, Dataset, DatasetError, Item, parse_int

AUDIO_COLUMNS = ("path", "audio", "audio_path", "file", "filename")
IMAGE_COLUMNS = ("image", "images", "image_path", "image_paths")
LABEL_COLUMNS = ("labels", "label", "category", "class", "classes")
FOLD_COLUMNS = ("fold",)
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl", "manifest.json", "manifest.tsv")
DEFAULT_MAX_CLIP_SECONDS = 10.0


def find_manifest(root: str | Path) -> Path:
    """The manifest in ``root``: one of ``manifest.csv``, ``.jsonl``, ``.json`` or ``.tsv``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"manifest dataset: folder not found: {root}")
    found = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
    if not found:
        raise DatasetError(f"manifest dataset: no manifest in {root} (looked for {', '.join(MANIFEST_NAMES)}); "
                           f"pass --manifest FILE")
    if len(found) > 1:
        raise DatasetError(f"manifest dataset: several manifests in {root} ({', '.join(p.name for p in found)}); "
                           f"pass --manifest FILE to pick one")
    return found[0]


def split_list(value: Any, where: str) -> list[str]:
    """A cell holding one or more names: a JSON list, ``"a;b"``, or a single name."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    elif isinstance(value, (int, float)):
        parts = [str(value)]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            loaded = _loads(text, f"{where}: not a valid JSON list: {text!r}")
            if not isinstance(loaded, list):
                raise DatasetError(f"{where}: expected a JSON list, got {text!r}")
            parts = [str(v) for v in loaded]
        else:
            parts = text.split(";")
    else:
        raise DatasetError(f"{where}: expected a string or a list, got {type(value).__name__}")
    return [p.strip() for p in parts if p.strip()]


def _loads(text: str, invalid: str, with_line: bool = False) -> Any:
    """``text`` parsed as JSON, or a ``DatasetError``: ``invalid`` and the parser's reason (and line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{invalid} ({exc.msg}{f', line {exc.lineno}' if with_line else ''})") from None


def read_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(columns, [(line number, record)]) from a CSV/TSV, JSONL or JSON-list manifest."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_records(raw, path.suffix, path)


def parse_records(raw: bytes, suffix: str, path: object) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """:func:`read_records` on bytes already read (an object in a bucket, say); ``path`` names the
    source in messages."""
    suffix = suffix.lower()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    head = text.lstrip()[:1]
    if suffix in (".jsonl", ".ndjson") or (suffix not in (".csv", ".tsv", ".json") and head == "{"):
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            obj = _loads(line, f"{path}, line {line_no}: not valid JSON")
            if not isinstance(obj, dict):
                raise DatasetError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
            records.append((line_no, obj))
    elif suffix == ".json" or head == "[":
        data = _loads(text, f"{path}: not valid JSON", with_line=True)
        if not isinstance(data, list) or not all(isinstance(o, dict) for o in data):
            raise DatasetError(f"{path}: a .json manifest must be a list of objects")
        records = [(i, obj) for i, obj in enumerate(data, start=1)]
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        try:
            reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            records = [(i, {(k or "").strip(): v for k, v in row.items()}) for i, row in enumerate(reader, start=2)]
        except csv.Error as exc:
            raise DatasetError(f"{path}: not a valid CSV file ({exc})") from None
        return columns, records
    columns: list[str] = []
    for _, obj in records:
        columns.extend(k for k in obj if k not in columns)
    return columns, records


def _pick(columns: list[str], choices: tuple[str, ...], override: str | None, path: Path, role: str) -> list[str]:
    """The columns that may hold ``role``, in preference order (JSONL rows may use different ones)."""
    lowered = {c.lower(): c for c in columns}
    if override is not None:
        if override.lower() not in lowered:
            raise DatasetError(f"{path}: no {role} column {override!r} (columns found: {', '.join(columns) or 'none'})")
        return [lowered[override.lower()]]
    return [lowered[c] for c in choices if c in lowered]


def _get(record: dict[str, Any], keys: list[str]) -> tuple[str | None, Any]:
    """(column, value) of the first of ``keys`` with a non-empty value in ``record``."""
    for key in keys:
        value = record.get(key)
        if value is not None and value != "" and value != []:
            return key, value
    return (keys[0] if keys else None), None


class ManifestDataset(Dataset):
    """A labelled corpus described by a manifest file (see the module docstring)."""

    name = "manifest"
    title = "manifest"

    def __init__(
        self,
        manifest: str | Path,
        clip_seconds: float | None = None,
        max_clip_seconds: float = DEFAULT_MAX_CLIP_SECONDS,
        name: str | None = None,
        audio_column: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
    ):
        path = Path(manifest)
        if path.is_dir():
            path = find_manifest(path)
        if not path.is_file():
            raise DatasetError(f"manifest dataset: manifest file not found: {path}")
        if clip_seconds is not None and not clip_seconds > 0:
            raise DatasetError(f"clip length must be positive, got {clip_seconds} s")
        self.manifest_path = path
        self.title = f"manifest {path.name}"
        if name:
            self.name = name
        columns, records = read_records(path)
        audio_cols = _pick(columns, AUDIO_COLUMNS, audio_column, path, "audio")
        image_cols = _pick(columns, IMAGE_COLUMNS, image_column, path, "image")
        label_cols = _pick(columns, LABEL_COLUMNS, label_column, path, "label")
        fold_cols = _pick(columns, FOLD_COLUMNS, None, path, "fold")
        found = ", ".join(columns) or "none"
        if not audio_cols and not image_cols:
            raise DatasetError(f"{path}: no file column: expected one of {', '.join(AUDIO_COLUMNS + IMAGE_COLUMNS)} "
                               f"(columns found: {found})")
        if not label_cols:
            raise DatasetError(f"{path}: no label column: expected one of {', '.join(LABEL_COLUMNS)} "
                               f"(columns found: {found})")
        if not records:
            raise DatasetError(f"{path}: the manifest lists no items")
        base = path.parent
        items: list[Item] = []
        for line, rec in records:
            where = f"{path}, line {line}"
            label_col, label_cell = _get(rec, label_cols)
            labels = split_list(label_cell, f"{where}, column {label_col!r}")
            if not labels:
                raise DatasetError(f"{where}: no labels (column {' / '.join(map(repr, label_cols))})")
            audio_col, audio_cell = _get(rec, audio_cols)
            if audio_cell is not None and not isinstance(audio_cell, str):
                raise DatasetError(f"{where}: column {audio_col!r} must be a path string")
            audio = self._resolve(base, audio_cell) if audio_cell and audio_cell.strip() else None
            image_col, image_cell = _get(rec, image_cols)
            images = [self._resolve(base, p) for p in split_list(image_cell, f"{where}, column {image_col!r}")]
            if audio is None and not images:
                raise DatasetError(f"{where}: no audio or image file given")
            fold_col, fold_cell = _get(rec, fold_cols)
            fold = None
            if fold_cell is not None:
                fold = parse_int(str(fold_cell).strip(), path, line, fold_col or "fold")
            key = audio_cell.strip() if audio is not None and audio_cell else str(images[0])
            items.append(Item(path=audio, labels=labels, fold=fold, image_paths=images, key=key))
        class_names = sorted({label for it in items for label in it.labels})
        self._clip_seconds = clip_seconds
        self._max_clip_seconds = max_clip_seconds
        super().__init__(base, class_names, items, AudioPreprocessing())
        self._resolved: AudioPreprocessing | None = None

    @staticmethod
    def _resolve(base: Path, cell: str) -> Path:
        p = Path(cell.strip()).expanduser()
        return p if p.is_absolute() else base / p

    @property
    def preprocessing(self) -> AudioPreprocessing:
        """44.1 kHz mono, centre pad/crop to the clip length (decided on first use)."""
        if self._resolved is None:
            self._resolved = AudioPreprocessing(clip_samples=self._clip_length())
        return self._resolved

    def _clip_length(self) -> int | None:
        if self._clip_seconds is not None:
            return max(1, round(self._clip_seconds * MODEL_SAMPLE_RATE))
        from ..audio import probe_audio
        from ..errors import AudioLoadError

        longest = 0.0
        for item in self._items:
            if item.path is None or not item.path.is_file():
                continue
            try:
                info = probe_audio(item.path)
            except AudioLoadError:
                continue  # reported when the evaluation decodes it
            if info.duration == info.duration:  # not NaN
                longest = max(longest, info.duration)
            if longest >= self._max_clip_seconds:
                break
        if longest <= 0:
            return None
        return max(1, round(min(longest, self._max_clip_seconds) * MODEL_SAMPLE_RATE))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["manifest"] = str(self.manifest_path.absolute())
        return info
