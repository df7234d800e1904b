"""Top-k search of one pinned table: FAISS when the index is fresh, index + exact overlay when stale.

Search (what the CLI, the Python API and the server call, through :class:`Searcher`)::

    snap = store.snapshot("audio")                    # one table at one version
    res = search(store, "audio", query_vectors, k=10, where="duration > 5", snapshot=snap)
    res.scores, res.ids, res.row_ids, res.backend, res.stale, res.version
    rows = snap.rows(res.ids[0], row_ids=res.row_ids[0])   # the rows shown: same version

Staleness: an index is *fresh* at a snapshot when it is the build version, or when the row count is
unchanged and no row has ``indexed_at`` newer than the newest one indexed (the store stamps
``indexed_at`` on every write, so compaction or index-only commits do not make it stale). A stale
index still gives correct answers (``stale="overlay"``, the default): the index is searched only
among rows unchanged since the build (candidates are verified against the snapshot: deleted or
re-written rows never come back), rows added or changed since are searched exactly, and the two
top-k lists are merged. ``stale="exact"`` searches the whole snapshot exactly instead. With no
index at all, ``backend="auto"`` searches exactly.

Filters (``where`` SQL): matching ids are resolved at the same snapshot; if at most
``FILTER_BRUTE_MAX`` (20,000) match, their vectors are scored exactly (brute force), else the index
is searched with a FAISS ``IDSelectorBitmap`` and ``nprobe`` scaled by 1/selectivity.

Backends: ``"auto"`` (FAISS index if saved, else exact), ``"faiss"`` (requires an index),
``"exact"`` (streamed brute force over the snapshot) and ``"lancedb"`` (LanceDB's own vector
search, its ANN index if one was built with ``Store.create_lancedb_index``; kept for the benchmark's
side-by-side comparison).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import IndexNotFoundError
from ..schema import check_modality, sql_in, sql_timestamp
from ..snapshot import ROWID, TableSnapshot, as_queries
from .files import manifest_path
from .index import VectorIndex
from .policy import Backend, Device

if TYPE_CHECKING:  # pragma: no cover
    from ..database import Store


@dataclass
class SearchResult:
    """Top-k rows per query: ``scores`` (q, k) float32 (cosine), ``ids`` (q, k) object (None = no
    hit), ``row_ids`` (q, k) int64 LanceDB row ids at ``version`` where known (-1 otherwise)."""

    scores: np.ndarray
    ids: np.ndarray
    backend: str
    stale: bool = False
    version: int | None = None
    row_ids: np.ndarray | None = None

    def hits(self, i: int = 0) -> list[tuple[str, float]]:
        """``[(id, score), ...]`` of query ``i`` without the padding."""
        return [(r, float(s)) for r, s in zip(self.ids[i], self.scores[i], strict=True) if r is not None]


class TopK:
    """Running top-k (highest scores) of q queries over scored batches of ids (and row ids)."""

    def __init__(self, nq: int, k: int):
        self.k = k
        self.scores = np.full((nq, k), -np.inf, np.float32)
        self.ids = np.full((nq, k), None, dtype=object)
        self.rows = np.full((nq, k), -1, np.int64)

    def _merge(self, s: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        all_s = np.concatenate([self.scores, s], axis=1)
        all_i = np.concatenate([self.ids, i], axis=1)
        all_r = np.concatenate([self.rows, r], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.ids = np.take_along_axis(all_i, order, axis=1)
        self.rows = np.take_along_axis(all_r, order, axis=1)

    def push(self, scores: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None) -> None:
        """``scores`` (q, b) for the ``b`` ids in ``ids`` (object array) and their row ids."""
        b = scores.shape[1]
        if b == 0 or self.k == 0:
            return
        if rows is None:
            rows = np.full(b, -1, np.int64)
        if b > self.k:
            part = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
        else:
            part = np.broadcast_to(np.arange(b), (scores.shape[0], b))
        self._merge(np.take_along_axis(scores, part, axis=1), ids[part], rows[part])

    def push_rows(self, scores: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Merge per-query candidates, all (q, c); ``None`` ids are skipped."""
        if ids.size == 0:
            return
        s = np.where(np.equal(ids, None), -np.inf, scores).astype(np.float32)
        r = np.full(ids.shape, -1, np.int64) if rows is None else rows
        self._merge(s, ids.astype(object), r)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = self.ids.copy()
        rows = self.rows.copy()
        miss = ~np.isfinite(self.scores)
        ids[miss] = None
        rows[miss] = -1
        return self.scores.astype(np.float32), ids, rows


def snapshot_exact(
    snap: TableSnapshot, queries: np.ndarray, k: int, *, where: str | None = None, batch_rows: int = 65_536
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k by inner product over a snapshot's rows: ``(scores, ids, row_ids)``."""
    q = as_queries(queries)
    top = TopK(len(q), k)
    for ids, mat, batch in snap.iter_embeddings(where, batch_rows=batch_rows, with_row_id=True):
        top.push(q @ mat.T, ids, batch.column(ROWID).to_numpy().astype(np.int64))
    return top.result()


def exact_search(
    store: Store,
    modality: str,
    queries: np.ndarray,
    k: int = 10,
    *,
    where: str | None = None,
    version: int | None = None,
    batch_rows: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over the rows of the table (streamed, any size)."""
    q = as_queries(queries)
    snap = store.snapshot(modality, version)
    if snap is None:
        return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), None, object)
    s, i, _ = snapshot_exact(snap, q, k, where=where, batch_rows=batch_rows)
    return s, i


def _and(*parts: str | None) -> str | None:
    ps = [f"({p})" for p in parts if p]
    return " AND ".join(ps) if ps else None


def search(
    store: Store,
    modality: str,
    queries: np.ndarray,
    k: int = 10,
    *,
    where: str | None = None,
    backend: Backend = "auto",
    index: VectorIndex | None = None,
    stale: Literal["overlay", "exact"] = "overlay",
    nprobe: int | None = None,
    device: Device = "auto",
    snapshot: TableSnapshot | None = None,
) -> SearchResult:
    """Top-k search of ``modality`` for ``queries`` (q, dim) at one snapshot (latest by default).

    See the module doc for backends, staleness and filters. ``index`` reuses an already loaded
    :class:`VectorIndex` (see :class:`Searcher`); ``snapshot`` pins the version searched.
    """
    check_modality(modality)
    q = as_queries(queries)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    snap = snapshot if snapshot is not None else store.snapshot(modality)
    empty = (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), None, object),
             np.full((len(q), k), -1, np.int64))
    if snap is None:
        return SearchResult(empty[0], empty[1], backend if backend != "auto" else "exact", row_ids=empty[2])
    if q.shape[1] != snap.dim:
        raise ValueError(f"queries have dim {q.shape[1]}, the {store.table_set!r} table set holds {snap.dim}-d")
    version = snap.version
    if backend == "lancedb":
        s, i, r = snap.vector_search(q, k, where=where)
        return SearchResult(s, i, "lancedb", version=version, row_ids=r)
    if backend == "exact":
        s, i, r = snapshot_exact(snap, q, k, where=where)
        return SearchResult(s, i, "exact", version=version, row_ids=r)
    if backend not in ("auto", "faiss"):
        raise ValueError(f"unknown backend {backend!r}: use auto, faiss, exact or lancedb")
    if index is None:
        try:
            index = VectorIndex.load(store, modality, device=device)
        except IndexNotFoundError:
            if backend == "faiss":
                raise
            s, i, r = snapshot_exact(snap, q, k, where=where)
            return SearchResult(s, i, "exact", version=version, row_ids=r)
    name = f"faiss:{index.kind}"
    if not index.fresh_at(snap):
        if stale == "exact":
            s, i, r = snapshot_exact(snap, q, k, where=where)
            return SearchResult(s, i, "exact", stale=True, version=version, row_ids=r)
        s, i, r = overlay_search(snap, index, q, k, where=where, nprobe=nprobe)
        return SearchResult(s, i, name + "+delta", stale=True, version=version, row_ids=r)
    allowed = snap.id_column(where) if where else None
    s, labels = index.search_labels(q, k, allowed, nprobe=nprobe)
    return SearchResult(s, index.ids_of(labels), name, version=version, row_ids=index.row_ids_of(labels))


def overlay_search(
    snap: TableSnapshot,
    index: VectorIndex,
    q: np.ndarray,
    k: int,
    *,
    where: str | None,
    nprobe: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index search over rows unchanged since the build + exact search over rows changed since.

    Row ids of index hits are those of the build version (valid until compaction; the row fetch
    checks them), row ids of changed rows are read with them.
    """
    ts = sql_timestamp(int(index.manifest["max_indexed_at_us"]))
    top = TopK(len(q), k)
    # Rows added or re-written since the build: exact.
    s, i, r = snapshot_exact(snap, q, k, where=_and(where, f"indexed_at > {ts}"))
    top.push_rows(s, i, r)
    unchanged = f"indexed_at <= {ts}"
    if where:
        s, labels = index.search_labels(q, k, snap.id_column(_and(where, unchanged)), nprobe=nprobe)
        top.push_rows(s, index.ids_of(labels), index.row_ids_of(labels))
        return top.result()
    # Unfiltered: search deeper until k candidates per query are confirmed unchanged.
    known: dict[str, bool] = {}
    kk = min(index.size, k + max(16, k))
    while True:
        s, labels = index.search_labels(q, kk, nprobe=nprobe)
        i = index.ids_of(labels)
        cand = [x for x in dict.fromkeys(i.ravel().tolist()) if x is not None and x not in known]
        for c0 in range(0, len(cand), 1000):
            chunk = cand[c0 : c0 + 1000]
            ok = set(snap.ids(_and(sql_in("id", chunk), unchanged)).tolist())
            for c in chunk:
                known[c] = c in ok
        valid = np.vectorize(lambda x: x is not None and known.get(x, False), otypes=[bool])(i)
        # done when every query has k confirmed rows, or its candidates ran out (IVF lists exhausted)
        done = (valid.sum(axis=1) >= min(k, index.size)) | np.equal(i, None).any(axis=1)
        if done.all() or kk >= index.size:
            s = np.where(valid, s, -np.inf).astype(np.float32)
            top.push_rows(s, np.where(valid, i, None), np.where(valid, index.row_ids_of(labels), -1))
            return top.result()
        kk = min(index.size, kk * 4)


class Searcher:
    """Keeps one loaded :class:`VectorIndex` per modality for repeated queries (a server, a REPL).

    Reloads an index when its manifest changed on disk (a rebuild by another process).
    """

    def __init__(self, store: Store, *, device: Device = "auto", backend: Backend = "auto"):
        self.store = store
        self.device = device
        self.backend = backend
        self._indexes: dict[str, tuple[float, VectorIndex | None]] = {}
        self._manifests: dict[str, Path] = {}

    def index(self, modality: str) -> VectorIndex | None:
        path = self._manifests.get(modality)
        if path is None:
            path = self._manifests[modality] = manifest_path(self.store, modality)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            self._indexes.pop(modality, None)
            return None
        cached = self._indexes.get(modality)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            idx: VectorIndex | None = VectorIndex.load(self.store, modality, device=self.device)
        except IndexNotFoundError:
            idx = None
        self._indexes[modality] = (mtime, idx)
        return idx

    def stored_vector(self, modality: str, item_id: str, snap: TableSnapshot) -> np.ndarray | None:
        """``item_id``'s vector from the loaded index when the index is fresh at ``snap`` and keeps
        exact vectors (flat, IVF-Flat, HNSW); ``None`` otherwise (read it from the table then)."""
        idx = self.index(modality) if self.backend in ("auto", "faiss") else None
        if idx is None or idx.kind == "ivf_pq" or not idx.fresh_at(snap):
            return None
        labels, found = idx.labels_for([item_id])
        return idx.vectors(labels)[0].astype(np.float32) if found[0] else None

    def search(
        self,
        modality: str,
        queries: np.ndarray,
        k: int = 10,
        *,
        where: str | None = None,
        backend: Backend | None = None,
        nprobe: int | None = None,
        snapshot: TableSnapshot | None = None,
    ) -> SearchResult:
        be = backend or self.backend
        idx = self.index(modality) if be in ("auto", "faiss") else None
        if be == "faiss" and idx is None:
            raise IndexNotFoundError(f"no vector index for {modality}; build one first")
        return search(self.store, modality, queries, k, where=where, backend=be, index=idx, nprobe=nprobe,
                      snapshot=snapshot)
