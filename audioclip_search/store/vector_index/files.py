"""Saving and loading FAISS indexes beside the database.

For a local database ``<db>/_faiss/<table>.json`` (manifest: table version and row count it was
built from, newest ``indexed_at``, model sha256, kind, parameters, tuning, file names),
``<table>.<token>.faiss`` (the index), ``<table>.<token>.ids.npy`` (row ids sorted, label =
position, memory-mapped on load), ``<table>.<token>.rowids.npy`` (each label's LanceDB row id at
the build version, so shown rows are fetched with one ``take``) and for IVF-PQ
``<table>.<token>.f16.npy``. For a non-local URI the same files live in ``$ACSEARCH_CACHE`` (else
``$XDG_CACHE_HOME/audioclip_search``, else ``~/.cache/audioclip_search``)
``/faiss/<sha1(uri)[:16]>/``.

Every file is written with :mod:`audioclip_search.fileio` (temporary file, fsync, rename), and the
manifest is replaced last, so a crash or a full disk mid-save leaves the previous index usable and
no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from ...fileio import atomic_open, atomic_write_text
from ..errors import IndexNotFoundError
from ..schema import check_modality
from .index import VectorIndex
from .policy import Device, ensure_threads

if TYPE_CHECKING:  # pragma: no cover
    from ..database import Store

MANIFEST_FORMAT = 2


def index_dir(store: Store) -> Path:
    """Where FAISS files of ``store`` live: ``<db>/_faiss`` or a per-URI cache directory."""
    local = store.local_path
    if local is not None:
        return local / "_faiss"
    base = os.environ.get("ACSEARCH_CACHE")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "audioclip_search"
    return root.expanduser() / "faiss" / hashlib.sha1(store.uri.encode()).hexdigest()[:16]


def manifest_path(store: Store, modality: str) -> Path:
    """The manifest file of ``modality``'s index (it may not exist)."""
    return index_dir(store) / f"{store.table_name(modality)}.json"


def index_manifest(store: Store, modality: str) -> dict[str, Any] | None:
    """The saved manifest of ``modality``'s FAISS index (no index loading), or ``None``."""
    try:
        return json.loads(manifest_path(store, modality).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def new_token() -> str:
    """A unique file-name token for one build (time-sortable)."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)


def _write_faiss(index: faiss.Index, path: Path) -> None:
    """``faiss.write_index`` streamed into :func:`atomic_open` (a failed write leaves no file)."""
    with atomic_open(path, "wb") as fh:
        faiss.write_index(index, faiss.PyCallbackIOWriter(fh.write))


def _write_npy(array: np.ndarray, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


def discard_build_files(directory: Path, stem: str) -> None:
    """Remove every file of one (failed) build: ``<stem>.*``."""
    for p in directory.glob(f"{stem}.*"):
        with contextlib.suppress(OSError):
            p.unlink()


def save_index(vi: VectorIndex, store: Store, token: str, started: float) -> None:
    """Write ``vi``'s files and then its manifest; drop earlier builds' files of the same table."""
    directory = index_dir(store)
    directory.mkdir(parents=True, exist_ok=True)
    table = store.table_name(vi.modality)
    stem = f"{table}.{token}"
    files = {"index": f"{stem}.faiss", "ids": f"{stem}.ids.npy"}
    if vi.row_ids is not None:
        files["row_ids"] = f"{stem}.rowids.npy"
    if vi.refine_vectors is not None:
        files["vectors"] = f"{stem}.f16.npy"  # written in place during the build, before this manifest
    try:
        _write_faiss(vi.index, directory / files["index"])
        _write_npy(vi.ids, directory / files["ids"])
        if vi.row_ids is not None:
            _write_npy(vi.row_ids, directory / files["row_ids"])
        vi.manifest["files"] = files
        atomic_write_text(directory / f"{table}.json", json.dumps(vi.manifest, indent=2))
    except BaseException:  # e.g. a full disk: no file of this build may stay (the old index still works)
        discard_build_files(directory, stem)
        raise
    vi.directory = directory
    # Drop files of earlier builds of this table (open handles elsewhere stay valid on POSIX);
    # only files older than this build: a concurrent build's files are left alone.
    keep = set(files.values())
    prefix = f"{table}."
    for p in directory.iterdir():
        if p.name.startswith(prefix) and p.name not in keep and p.name != f"{prefix}json":
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < started:
                    p.unlink()


def load_index(store: Store, modality: str, *, device: Device = "auto", check_model: bool = True) -> VectorIndex:
    """Load the saved index of ``modality`` (raises :class:`IndexNotFoundError` if missing or
    built for another model). Ids, row ids and refine vectors are memory-mapped."""
    ensure_threads()
    check_modality(modality)
    manifest = index_manifest(store, modality)
    if manifest is None:
        raise IndexNotFoundError(
            f"no vector index for the {modality} table of {store.uri}; build one with VectorIndex.build"
        )
    if check_model:
        sha = (store.model_info() or {}).get("model_sha256")
        if sha and manifest.get("model_sha256") and manifest["model_sha256"] != sha:
            raise IndexNotFoundError(f"the saved {modality} index was built for another model; rebuild it")
    directory = index_dir(store)
    files = manifest.get("files", {})
    try:
        index = faiss.read_index(str(directory / files["index"]))
        ids = np.load(directory / files["ids"], mmap_mode="r")
        row_ids = np.load(directory / files["row_ids"], mmap_mode="r") if "row_ids" in files else None
        vectors = np.load(directory / files["vectors"], mmap_mode="r") if "vectors" in files else None
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise IndexNotFoundError(f"the saved {modality} index is incomplete ({exc}); rebuild it") from exc
    n = manifest["n"]
    if index.ntotal != n or len(ids) != n or (row_ids is not None and len(row_ids) != n):
        raise IndexNotFoundError(f"the saved {modality} index is inconsistent; rebuild it")
    return VectorIndex(index, ids, manifest, refine_vectors=vectors, directory=directory, device=device,
                       row_ids=row_ids)
