"""Building a FAISS index from a pinned table: sampling, training, adding, tuning nprobe/efSearch.

Reads the table at one pinned version (ids and row ids first, then a random training sample by
offset, then every vector once), so memory stays ~ index size (+ n * dim * 4 while building
``flat``). k-means: 10 iterations on 32 random rows per list; from ``TWO_LEVEL_FROM`` lists,
faiss.contrib's two-level clustering. IVF-PQ keeps float16 copies of the vectors for its refine
step (``refine_factor`` tuned with ``nprobe``).

``nprobe`` (IVF) / ``efSearch`` (HNSW) are tuned at build time: 200 random table rows are held out
of the index (added after tuning) and of k-means training, and used as unseen queries; their
exact top-10 among the other rows is computed during the build pass, and the smallest value on a
ladder reaching recall@10 >= ``target_recall`` (0.95) is stored in the manifest with the recall
measured.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faiss.contrib.clustering import two_level_clustering
from faiss.contrib.evaluation import knn_intersection_measure

from ..errors import StoreError
from ..schema import arrow_embeddings, check_modality
from ..snapshot import ROWID, TableSnapshot
from .files import MANIFEST_FORMAT, discard_build_files, index_dir, new_token, save_index
from .index import VectorIndex, encode_ids
from .policy import (
    BUILD_BATCH,
    EF_LADDER,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    HNSW_QUANTIZER_FROM,
    KMEANS_ITERATIONS,
    NPROBE_LADDER,
    REFINE_FACTOR,
    REFINE_LADDER,
    TARGET_RECALL,
    TRAIN_POINTS_PER_LIST,
    TUNE_K,
    TUNE_QUERIES,
    TWO_LEVEL_FROM,
    Device,
    IndexKind,
    choose_kind,
    ensure_threads,
    estimate_index_bytes,
    ivf_lists,
    pq_subquantizers,
    resolve_device,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..database import Store


@dataclass
class Tuning:
    """Held-out rows used as unseen queries and their exact top-k labels."""

    queries: np.ndarray  # (t, dim) float32
    labels: np.ndarray  # (t,) label of each query row (excluded from its own results)
    truth: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.int64))


def build_index(
    store: Store,
    modality: str,
    kind: IndexKind = "auto",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    refine: bool = True,
    refine_factor: int | None = None,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef_search: int | None = None,
    target_recall: float = TARGET_RECALL,
    memory_budget: int | None = None,
    device: Device = "auto",
    save: bool = True,
    batch_rows: int = BUILD_BATCH,
    seed: int = 0,
    trained: faiss.Index | None = None,
) -> VectorIndex:
    """Build an index over the latest version of ``modality``'s table (see module doc).

    Reads the table in batches at one pinned version (ids first, then a random training sample,
    then every vector once), so memory stays ~ index size (+ n * dim * 4 while building ``flat``).
    ``nprobe`` / ``ef_search`` given explicitly skip tuning. ``trained``: an already trained
    empty IVF index with the same layout to reuse (used by :meth:`update`). Saves by default.
    """
    ensure_threads()
    t_start = time.perf_counter()
    t_wall = time.time()
    check_modality(modality)
    snap = store.snapshot(modality)
    if snap is None:
        raise StoreError(f"no {modality} table in {store.uri} (table set {store.table_set!r})")
    n = snap.count()
    if n == 0:
        raise StoreError(f"the {modality} table is empty: nothing to index")
    dim = snap.dim
    if kind == "auto":
        kind = choose_kind(n, dim, memory_budget)  # type: ignore[assignment]
    if kind not in ("flat", "ivf_flat", "ivf_pq", "hnsw"):
        raise ValueError(f"unknown index kind {kind!r}")
    rng = np.random.default_rng(seed)

    # Pass 1: ids (sorted: label = position) and the newest indexed_at.
    ids_sorted, row_ids, max_ts = read_ids(snap)
    n = len(ids_sorted)

    # Tuning queries (leave-one-out) and the training sample, by random offsets.
    tune_n = min(TUNE_QUERIES, n) if kind != "flat" else 0
    params: dict[str, Any] = {"metric": "inner_product"}
    if kind in ("ivf_flat", "ivf_pq"):
        params["nlist"] = int(nlist or ivf_lists(n))
        params["quantizer"] = "hnsw32" if params["nlist"] > HNSW_QUANTIZER_FROM else "flat"
        if kind == "ivf_pq":
            m = int(pq_m or pq_subquantizers(dim))
            rf = int(refine_factor or REFINE_FACTOR)
            params.update(pq_m=m, pq_nbits=8, refine=bool(refine), refine_factor=rf)
    elif kind == "hnsw":
        params.update(hnsw_m=int(hnsw_m), ef_construction=int(ef_construction))
    train_n = 0
    if kind in ("ivf_flat", "ivf_pq") and trained is None:
        train_n = min(n, max(params["nlist"] * TRAIN_POINTS_PER_LIST, 256 * 40 if kind == "ivf_pq" else 0))
    sample_n = min(n, train_n + tune_n)
    sample_ids, sample_mat = sample_rows(snap, n, sample_n, rng) if sample_n else (None, None)

    tuning: Tuning | None = None
    train_rows = np.arange(train_n)
    if tune_n and sample_mat is not None and sample_ids is not None:
        pick = rng.choice(len(sample_mat), size=tune_n, replace=False)
        labels = np.searchsorted(ids_sorted, sample_ids[pick].astype(ids_sorted.dtype))
        tuning = Tuning(queries=np.ascontiguousarray(sample_mat[pick]), labels=labels.astype(np.int64))
        # k-means never sees the tuning rows: centroids fitted to them would make the tuned nprobe
        # look better than it is on real queries (measured at 10^5 rows: 0.919 instead of 0.95).
        unseen = np.setdiff1d(np.arange(len(sample_mat)), pick)
        if train_n and len(unseen) >= params["nlist"]:
            train_rows = unseen[:train_n]

    # Create and train.
    index = new_index(kind, dim, params, trained)
    t_train = time.perf_counter()
    if kind in ("ivf_flat", "ivf_pq") and trained is None:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
        ivf.cp.seed = seed
        ivf.cp.min_points_per_centroid = 5  # small tables: no "please provide more points" noise
        ivf_pq = faiss.downcast_index(ivf)
        if isinstance(ivf_pq, faiss.IndexIVFPQ):
            ivf_pq.pq.cp.min_points_per_centroid = 5
            ivf_pq.pq.cp.niter = KMEANS_ITERATIONS
            ivf_pq.do_polysemous_training = False  # 10x the training time, unused here
        assert sample_mat is not None
        xt = np.ascontiguousarray(sample_mat[train_rows])
        if params["nlist"] >= TWO_LEVEL_FROM:
            centroids = two_level_kmeans(xt, params["nlist"], seed=seed)
            ivf.quantizer.add(centroids)  # quantizer holds nlist centroids: train() skips k-means
            params["training"] = "two-level k-means"
        index.train(xt)
    train_s = time.perf_counter() - t_train
    del sample_mat, sample_ids

    # Pass 2: every vector once, added under its label; exact truth for tuning on the way.
    directory = index_dir(store)
    token = new_token()
    stem = f"{store.table_name(modality)}.{token}"
    refine_vectors: np.ndarray | None = None
    if kind == "ivf_pq" and params.get("refine"):
        directory.mkdir(parents=True, exist_ok=True)
        refine_vectors = np.lib.format.open_memmap(
            directory / f"{stem}.f16.npy", mode="w+", dtype=np.float16, shape=(n, dim)
        )
    try:
        vi = _add_tune_save(
            store, modality, snap, index, kind, params, ids_sorted, row_ids, max_ts, tuning, refine_vectors,
            directory=directory, stem=stem, token=token, batch_rows=batch_rows, nprobe=nprobe,
            ef_search=ef_search, refine_factor=refine_factor, target_recall=target_recall, save=save,
            t_start=t_start, t_wall=t_wall, train_s=train_s, tune_n=tune_n,
        )
    except BaseException:
        if refine_vectors is not None:
            discard_build_files(directory, stem)
        raise
    vi.device = resolve_device(device)
    if vi.device == "cuda":
        vi._to_gpu()
    return vi



def _add_tune_save(
    store: Store, modality: str, snap: TableSnapshot, index: faiss.Index, kind: str, params: dict[str, Any],
    ids_sorted: np.ndarray, row_ids: np.ndarray, max_ts: int, tuning: Tuning | None,
    refine_vectors: np.ndarray | None, *, directory: Any, stem: str, token: str, batch_rows: int,
    nprobe: int | None, ef_search: int | None, refine_factor: int | None, target_recall: float, save: bool,
    t_start: float, t_wall: float, train_s: float, tune_n: int,
) -> VectorIndex:
    """Pass 2 of :func:`build_index`: add every vector under its label, tune, save."""
    n, dim, version = len(ids_sorted), snap.dim, snap.version
    dense: np.ndarray | None = np.empty((n, dim), np.float32) if kind == "flat" else None
    # The tuning rows are held out of the index until tuned, so they act as unseen queries.
    holdout = kind in ("ivf_flat", "ivf_pq", "hnsw") and tuning is not None
    truth = TruthAccumulator(tuning, TUNE_K, holdout) if tuning is not None else None
    held = np.sort(tuning.labels) if holdout and tuning is not None else np.empty(0, np.int64)
    t_add = time.perf_counter()
    for batch in snap.scan(["id", "embedding"], None, batch_rows):
        if batch.num_rows == 0:
            continue
        labels = np.searchsorted(ids_sorted, encode_ids(batch.column("id")).astype(ids_sorted.dtype))
        labels = labels.astype(np.int64)
        mat = np.ascontiguousarray(arrow_embeddings(batch.column("embedding"), dim))
        if truth is not None:
            truth.push(mat, labels)
        if dense is not None:
            dense[labels] = mat
        elif len(held):
            keep = ~np.isin(labels, held)
            index.add_with_ids(np.ascontiguousarray(mat[keep]), labels[keep])
        else:
            index.add_with_ids(mat, labels)
        if refine_vectors is not None:
            refine_vectors[labels] = mat.astype(np.float16)
    if dense is not None:
        for i in range(0, n, batch_rows):
            index.add(dense[i : i + batch_rows])
        del dense
    if refine_vectors is not None:
        refine_vectors.flush()
        if not save:  # unsaved index: the mapping keeps the unlinked file alive, nothing leaks
            with contextlib.suppress(OSError):
                os.unlink(directory / f"{stem}.f16.npy")
    add_s = time.perf_counter() - t_add

    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "table": store.table_name(modality),
        "modality": modality,
        "table_set": store.table_set,
        "db_uri": store.uri,
        "kind": kind,
        "dim": dim,
        "n": n,
        "table_version": version,
        "max_indexed_at_us": max_ts,
        "model_sha256": (store.model_info() or {}).get("model_sha256"),
        "params": params,
        "tuning": None,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": None,
        "train_seconds": round(train_s, 3),
        "add_seconds": round(add_s, 3),
        "faiss_version": faiss.__version__,
        "files": {},
    }
    vi = VectorIndex(index, ids_sorted, manifest, refine_vectors=refine_vectors, directory=directory, device="cpu",
                     row_ids=row_ids)
    if kind == "ivf_flat" or kind == "ivf_pq":
        if nprobe:
            params["nprobe"] = int(nprobe)
        elif truth is not None and kind == "ivf_pq":
            params["nprobe"], rec = tune_pq(vi, truth.finish(), target_recall, tune_refine=refine_factor is None)
            manifest["tuning"] = {"target_recall": target_recall, "recall_at_10": rec, "queries": tune_n,
                                  "method": "held-out table rows"}
        elif truth is not None:
            params["nprobe"], rec = tune(vi, "nprobe", truth.finish(), target_recall)
            manifest["tuning"] = {"target_recall": target_recall, "recall_at_10": rec, "queries": tune_n,
                                  "method": "held-out table rows"}
        else:
            params["nprobe"] = min(params["nlist"], 16)
    elif kind == "hnsw":
        if ef_search:
            params["ef_search"] = int(ef_search)
        elif truth is not None:
            params["ef_search"], rec = tune(vi, "ef_search", truth.finish(), target_recall)
            manifest["tuning"] = {"target_recall": target_recall, "recall_at_10": rec, "queries": tune_n,
                                  "method": "held-out table rows"}
        else:
            params["ef_search"] = 64
    if len(held) and tuning is not None:
        index.add_with_ids(tuning.queries, tuning.labels)
    manifest["params"] = params
    manifest["build_seconds"] = round(time.perf_counter() - t_start, 3)
    manifest["index_bytes"] = estimate_index_bytes(kind, n, dim, params)
    if save:
        save_index(vi, store, token, t_wall)
    return vi


def tune(
    vi: VectorIndex, what: str, tuning: Tuning, target: float, *, stop_on_plateau: bool = False
) -> tuple[int, float]:
    """Smallest ``nprobe`` / ``ef_search`` on the ladder reaching ``target`` recall@10 (else the best)."""
    ladder: list[int]
    if what == "nprobe":
        nl = int(vi.manifest["params"]["nlist"])
        ladder = [p for p in NPROBE_LADDER if p < nl] + [nl]
    else:
        ladder = list(EF_LADDER)
    best = (ladder[-1], 0.0)
    flat_steps = 0
    for value in ladder:
        _, labels = vi._search_labels(
            tuning.queries, TUNE_K + 1, nprobe=value if what == "nprobe" else None,
            ef=value if what == "ef_search" else None,
        )
        found = drop_self(labels, tuning.labels, TUNE_K)  # no-op for held-out rows
        rec = recall_at_k(found, tuning.truth)
        if rec >= target:
            return value, round(rec, 4)
        flat_steps = flat_steps + 1 if rec < best[1] + 0.003 else 0
        if rec > best[1]:
            best = (value, rec)
        if stop_on_plateau and flat_steps >= 2:  # more lists will not help: PQ error dominates
            break
    return best[0], round(best[1], 4)

def tune_pq(vi: VectorIndex, tuning: Tuning, target: float, tune_refine: bool) -> tuple[int, float]:
    """IVF-PQ: tune nprobe for growing refine factors until the target recall is met.

    With many near-ties (10^6 rows) PQ ranking plateaus below the target whatever nprobe is;
    re-scoring more candidates exactly is what lifts it (each candidate costs 2*dim bytes read).
    """
    p = vi.manifest["params"]
    factors = [f for f in REFINE_LADDER if f >= p["refine_factor"]] if tune_refine else [p["refine_factor"]]
    if not factors or not p.get("refine"):
        factors = [p["refine_factor"]]
    best: tuple[int, float, int] | None = None
    for rf in factors:
        p["refine_factor"] = rf
        nprobe, rec = tune(vi, "nprobe", tuning, target, stop_on_plateau=True)
        if best is None or rec > best[1] + 0.003:
            best = (nprobe, rec, rf)
        if rec >= target:
            break
    assert best is not None
    p["refine_factor"] = best[2]
    return best[0], best[1]

# ---------------------------------------------------------------- persistence


def two_level_kmeans(x: np.ndarray, k: int, *, niter: int = KMEANS_ITERATIONS, seed: int = 0) -> np.ndarray:
    """``k`` unit-norm centroids by faiss's two-level k-means: ``sqrt(k)`` coarse clusters, each
    split into a share of ``k`` proportional to its size. ~sqrt(k)/2 times cheaper than flat
    k-means (at k = 4000 on 128k rows of dim 1024: well under a minute instead of ~10 on 2 cores)."""
    k = min(k, len(x))
    nc1 = max(1, int(round(math.sqrt(k))))
    # clustering_niter: the coarse level; the second level runs faiss.Kmeans' default iterations
    cents, _ = two_level_clustering(np.ascontiguousarray(x, dtype=np.float32), nc1, k, rebalance=True,
                                    clustering_niter=niter, spherical=True, seed=seed,
                                    min_points_per_centroid=1)
    cents = cents.astype(np.float32)
    cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(cents)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (``truth`` labels, ``-1`` padded) that ``found`` contains."""
    valid = int((truth >= 0).sum())
    if valid == 0:
        return 1.0
    # padding never matches: -1 in truth, -2 in found
    inter = knn_intersection_measure(np.where(found >= 0, found, -2), truth)
    return inter * truth.size / valid


def new_index(kind: str, dim: int, params: dict[str, Any], trained: faiss.Index | None) -> faiss.Index:
    if trained is not None:
        return trained
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":  # IDMap2: labels in any order (held-out tuning rows), reconstruct by label
        hnsw = faiss.IndexHNSWFlat(dim, int(params["hnsw_m"]), ip)
        hnsw.hnsw.efConstruction = int(params["ef_construction"])
        return faiss.IndexIDMap2(hnsw)  # the faiss wrapper keeps a reference to hnsw
    quant = "_HNSW32" if params["quantizer"] == "hnsw32" else ""
    if kind == "ivf_flat":
        return faiss.index_factory(dim, f"IVF{params['nlist']}{quant},Flat", ip)
    return faiss.index_factory(dim, f"IVF{params['nlist']}{quant},PQ{params['pq_m']}x{params['pq_nbits']}", ip)


def empty_trained_copy(index: faiss.Index) -> faiss.Index:
    """A new empty IVF index sharing nothing with ``index`` but its trained quantizer / PQ."""
    src = faiss.extract_index_ivf(index)
    quantizer = faiss.clone_index(src.quantizer)
    if isinstance(src, faiss.IndexIVFPQ):
        new = faiss.IndexIVFPQ(quantizer, src.d, src.nlist, src.pq.M, src.pq.nbits, src.metric_type)
        new.pq = src.pq
        new.by_residual = src.by_residual
    else:
        new = faiss.IndexIVFFlat(quantizer, src.d, src.nlist, src.metric_type)
    new.is_trained = True  # the faiss wrapper keeps a reference to the quantizer
    if isinstance(new, faiss.IndexIVFPQ):
        new.precompute_table()
    return new


def drop_self(labels: np.ndarray, self_labels: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(labels), k), -1, np.int64)
    for i, row in enumerate(labels):
        kept = row[(row != self_labels[i]) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


class TruthAccumulator:
    """Exact leave-one-out top-k labels of the tuning queries, accumulated over the build pass."""

    def __init__(self, tuning: Tuning, k: int, holdout: bool = False):
        self.tuning = tuning
        self.k = k
        self.holdout = np.sort(tuning.labels) if holdout else None
        nq = len(tuning.queries)
        self.scores = np.full((nq, k), -np.inf, np.float32)
        self.labels = np.full((nq, k), -1, np.int64)

    def push(self, mat: np.ndarray, labels: np.ndarray) -> None:
        s = self.tuning.queries @ mat.T
        if self.holdout is not None:
            s[:, np.isin(labels, self.holdout)] = -np.inf
        else:
            s[self.tuning.labels[:, None] == labels[None, :]] = -np.inf
        kk = min(self.k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cs = np.take_along_axis(s, part, axis=1)
        cl = labels[part]
        all_s = np.concatenate([self.scores, cs], axis=1)
        all_l = np.concatenate([self.labels, cl], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.labels = np.take_along_axis(all_l, order, axis=1)

    def finish(self) -> Tuning:
        self.tuning.truth = np.where(np.isfinite(self.scores), self.labels, -1)
        return self.tuning



def read_ids(snap: TableSnapshot) -> tuple[np.ndarray, np.ndarray, int]:
    """Sorted fixed-width bytes ids, each one's LanceDB row id (same order) and the newest
    ``indexed_at`` (µs) of a pinned table."""
    parts: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    max_ts: int | None = None
    for batch in snap.scan(["id", "indexed_at"], with_row_id=True):
        if batch.num_rows == 0:
            continue
        parts.append(encode_ids(batch.column("id")))
        rows.append(batch.column(ROWID).to_numpy().astype(np.int64))
        m = pc.max(batch.column("indexed_at").cast(pa.int64())).as_py()
        if m is not None:
            max_ts = m if max_ts is None else max(max_ts, m)
    if not parts:
        return np.empty(0, dtype="S1"), np.empty(0, np.int64), 0
    width = max(p.dtype.itemsize for p in parts)
    ids = np.concatenate([p.astype(f"S{width}") for p in parts])
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    row_ids = np.concatenate(rows)[order]
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        dup = ids[1:][ids[1:] == ids[:-1]][0]
        raise StoreError(f"duplicate row id {dup!r} in the table; cannot index")
    return ids, row_ids, int(max_ts or 0)


def sample_rows(snap: TableSnapshot, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` random rows (ids as bytes, float32 matrix) of a pinned table, read by offset."""
    size = min(size, n)
    offsets = np.sort(rng.choice(n, size=size, replace=False))
    ids_parts: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    for i in range(0, size, 16_384):
        tab = snap.take_offsets(offsets[i : i + 16_384].tolist(), ["id", "embedding"])
        ids_parts.append(encode_ids(tab.column("id")))
        mats.append(arrow_embeddings(tab.column("embedding"), snap.dim))
    width = max(p.dtype.itemsize for p in ids_parts)
    ids = np.concatenate([p.astype(f"S{width}") for p in ids_parts])
    return ids, np.ascontiguousarray(np.concatenate(mats).astype(np.float32, copy=False))
