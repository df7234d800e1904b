"""Embedding a dataset's files once: decode, prepare, encode in batches, and cache per file.

Cache layout: ``<cache>/embeddings/<model sha256[:16]>/<key[:2]>/<key>.npy`` plus ``<key>.json``,
where ``<cache>`` is ``$ACSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/audioclip-search``, else
``~/.cache/audioclip-search``. The key is the sha256 of a JSON document holding the model's
sha256, the precision, the dataset name, the modality, the file's absolute path, size and
mtime, and the preprocessing; the JSON file stores that document, and a hit requires it to match.
Both files are written to a temporary name and renamed (atomic on POSIX), the ``.npy`` first, so a
reader sees either a complete entry or none. Files that fail to decode are not cached.

Files are read by the indexer's reader stage (decoding worker processes where the indexer would
use them, a one-line reason per unreadable file) and encoded with the indexer's ``Encoder``
calls; the order of the results is always the order of the input.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..datasets.base import Dataset, DatasetError, Item
from ..fileio import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from ..indexer.discover import SourceFile
    from ..indexer.windows import ClipGeometry

__all__ = [
    "CACHE_VERSION",
    "EmbeddingCache",
    "Embeddings",
    "Failure",
    "default_cache_dir",
    "embed_audio_items",
    "embed_image_paths",
]

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``<$ACSEARCH_CACHE_DIR | $XDG_CACHE_HOME/audioclip-search | ~/.cache/audioclip-search>/embeddings``."""
    from ..checkpoints.registry import cache_dir

    return cache_dir() / "embeddings"


@dataclass(frozen=True)
class Failure:
    """A file that could not be used: excluded from the evaluation and listed in the report."""

    path: str
    reason: str
    modality: str = "audio"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "modality": self.modality}


@dataclass
class Embeddings:
    """Vectors for the inputs that could be read, in input order, and what happened to the rest."""

    modality: str
    vectors: np.ndarray  # (n_ok, D) float32, L2-normalised
    indices: list[int]  # positions in the input list that ``vectors`` rows belong to
    failures: list[Failure] = field(default_factory=list)
    encoded: int = 0
    cached: int = 0
    seconds_load: float = 0.0
    seconds_encode: float = 0.0

    def counts(self) -> dict[str, int]:
        return {"ok": len(self.indices), "failed": len(self.failures), "encoded": self.encoded,
                "from_cache": self.cached}


class EmbeddingCache:
    """Per-file embedding cache for one model (see the module docstring).

    ``model_sha256`` empty disables it (an in-memory model has no identity to key on).
    """

    def __init__(self, model_sha256: str, precision: str = "fp32", root: str | Path | None = None,
                 enabled: bool = True):
        self.model_sha256 = model_sha256
        self.precision = precision
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = bool(enabled and model_sha256)
        self.hits = 0
        self.misses = 0
        self.write_errors = 0

    def key(self, dataset: str, modality: str, path: Path, preprocessing: dict[str, Any]) -> dict[str, Any] | None:
        """The key document for a file, or None when the file cannot be stat'ed."""
        try:
            st = path.stat()
        except OSError:
            return None
        return {
            "version": CACHE_VERSION,
            "model_sha256": self.model_sha256,
            "precision": self.precision,
            "dataset": dataset,
            "modality": modality,
            "path": str(path.absolute()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "preprocessing": preprocessing,
        }

    def _paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
        folder = self.root / self.model_sha256[:16] / digest[:2]
        return folder / f"{digest}.npy", folder / f"{digest}.json"

    def get(self, key: dict[str, Any] | None) -> np.ndarray | None:
        if not self.enabled or key is None:
            return None
        npy, meta = self._paths(key)
        try:
            stored = json.loads(meta.read_text(encoding="utf-8"))
            if stored != json.loads(json.dumps(key)):
                self.misses += 1
                return None
            vec = np.load(npy, allow_pickle=False)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return vec.astype(np.float32, copy=False)

    def put(self, key: dict[str, Any] | None, vector: np.ndarray) -> None:
        if not self.enabled or key is None:
            return
        npy, meta = self._paths(key)
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(npy, lambda fh: np.save(fh, np.asarray(vector, dtype=np.float32), allow_pickle=False))
            atomic_write_text(meta, json.dumps(key, sort_keys=True))
        except OSError:
            self.write_errors += 1  # a read-only or full cache must not stop an evaluation


def _source(path: Path, modality: str, key: dict[str, Any] | None) -> SourceFile:
    """The reader's description of a dataset file (size and mtime from the cache key's stat)."""
    from ..indexer.discover import SourceFile

    size, mtime = (key["size"], key["mtime_ns"] / 1e9) if key else (0, 0.0)
    return SourceFile(path=path, modality=modality, size=size, mtime=mtime)


def _look_up(cache: EmbeddingCache | None, dataset: str, modality: str, paths: Sequence[Path | None],
             preprocessing: dict[str, Any]
             ) -> tuple[dict[int, np.ndarray], dict[int, dict[str, Any] | None], list[int]]:
    """(vectors found in the cache by position, each file's cache key, the positions still to embed)."""
    found: dict[int, np.ndarray] = {}
    keys: dict[int, dict[str, Any] | None] = {}
    todo: list[int] = []
    for i, path in enumerate(paths):
        if path is None:
            continue
        keys[i] = cache.key(dataset, modality, path, preprocessing) if cache is not None else None
        vec = cache.get(keys[i]) if cache is not None else None
        if vec is not None:
            found[i] = vec
        else:
            todo.append(i)
    return found, keys, todo


def _embed(
    modality: str,
    paths: Sequence[Path | None],
    encoder: Any,
    geometry: ClipGeometry | None,
    cache: EmbeddingCache | None,
    dataset: str,
    preprocessing: dict[str, Any],
    batch_size: int,
    workers: int | None,
    progress: Any,
    description: str,
) -> Embeddings:
    """Cached vectors where there are some; the rest through the indexer's reader stage
    (:func:`~..indexer.reader.read_files`: worker processes, one-line failures) and the same
    ``Encoder`` calls the indexer makes, ``batch_size`` files a call."""
    from ..indexer.pipeline import auto_workers, encode_pieces
    from ..indexer.reader import read_files

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    task = progress.add_task(description, total=len(paths)) if progress is not None else None
    results, keys, todo = _look_up(cache, dataset, modality, paths, preprocessing)
    failures: dict[int, Failure] = {}
    cached = len(results)
    if task is not None and cached:
        progress.update(task, advance=cached)
    out = Embeddings(modality, np.zeros((0, 0), np.float32), [], cached=cached)
    if workers is None:
        workers = auto_workers(encoder.device.type)
    image_size = encoder.model.config.image_resolution
    sources = [_source(paths[i], modality, keys.get(i)) for i in todo]  # type: ignore[arg-type]
    batch: list[tuple[int, Any]] = []

    def encode() -> None:
        start = time.perf_counter()
        vectors, _ = encode_pieces(encoder, modality, [piece for _, piece in batch])  # one vector a piece
        out.seconds_encode += time.perf_counter() - start
        for (i, _), vec in zip(batch, vectors, strict=True):
            results[i] = vec
            if cache is not None:
                cache.put(keys[i], vec)
        out.encoded += len(batch)
        batch.clear()

    with closing(read_files(sources, workers, image_size=image_size, window=geometry)) as decoded:
        for i in todo:
            start = time.perf_counter()
            item = next(decoded)  # a whole clip (WholeClip) or picture is one piece, its file's last
            out.seconds_load += time.perf_counter() - start
            if item.error is not None:
                failures[i] = Failure(str(paths[i]), item.error, modality)
            else:
                batch.append((i, item))
                if len(batch) == batch_size:
                    encode()
            if task is not None:
                progress.update(task, advance=1)
    if batch:
        encode()
    out.indices = sorted(results)
    out.failures = [failures[i] for i in sorted(failures)]
    if out.indices:
        out.vectors = np.stack([results[i] for i in out.indices]).astype(np.float32, copy=False)
    return out


def embed_audio_items(
    encoder: Any,
    dataset: Dataset,
    items: Sequence[Item],
    batch_size: int = 16,
    cache: EmbeddingCache | None = None,
    progress: Any = None,
    description: str = "Embedding audio",
    workers: int | None = None,
) -> Embeddings:
    """Embed the audio of ``items`` with the dataset's evaluation preprocessing.

    Each file is decoded whole and prepared by ``dataset.preprocessing`` (the paper's pad/crop,
    not the indexer's windows). Unreadable files become ``failures`` (path + reason) and are left
    out; if every file fails, ``DatasetError`` is raised. ``progress``: a rich ``Progress``
    (``progress.make_progress``) or None. ``workers``: decoding processes (None: as the indexer
    chooses for the encoder's device).
    """
    from ..indexer.windows import WholeClip

    prep = dataset.preprocessing
    out = _embed("audio", [it.path for it in items], encoder, WholeClip(prep.apply), cache, dataset.name,
                 prep.to_dict(), batch_size, workers, progress, description)
    return _require_some(out, sum(1 for it in items if it.path is not None), dataset)


def embed_image_paths(
    encoder: Any,
    dataset: Dataset,
    paths: Sequence[Path],
    batch_size: int = 32,
    cache: EmbeddingCache | None = None,
    progress: Any = None,
    description: str = "Embedding images",
    workers: int | None = None,
) -> Embeddings:
    """Embed pictures (CLIP preprocessing); unreadable ones become ``failures``."""
    resolution = encoder.model.config.image_resolution
    out = _embed("image", list(paths), encoder, None, cache, dataset.name,
                 {"image_resolution": resolution, "transform": "clip"}, batch_size, workers, progress, description)
    return _require_some(out, len(paths), dataset)


def _require_some(out: Embeddings, wanted: int, dataset: Dataset) -> Embeddings:
    """``out``, unless every one of the ``wanted`` files failed: then a DatasetError naming the first."""
    if wanted and not out.indices:
        first = out.failures[0] if out.failures else None
        detail = f"; first: {first.path}: {first.reason}" if first else ""
        raise DatasetError(f"{dataset.title}: all {wanted} {out.modality} files failed to load{detail}")
    return out
