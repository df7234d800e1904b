"""FAISS vector indexes over a store table, and the one search entry point the CLI uses.

Search (what the CLI calls)::

    res = search(store, "audio", query_vectors, k=10, where="duration > 5")
    res.scores, res.ids, res.backend, res.stale        # (q, k) float32 / object arrays

    idx = VectorIndex.build(store, "audio")           # kind="auto": see the policy below; saves it
    idx = VectorIndex.load(store, "audio")            # IndexNotFoundError when missing
    idx.is_stale(store); idx = idx.update(store)      # rebuild, reusing trained centroids
    scores, ids = idx.search(queries, 10, allowed_ids=some_ids)

Index policy (``kind="auto"``, inner product on L2-normalised vectors = cosine similarity)

- ``n <= FLAT_MAX_ROWS`` (50,000): exact ``IndexFlatIP``. Measured on the 2-core dev box (dim 1024,
  one query at a time, ``benchmarks/vector_search.py``): p50 ~3-4 ms at 10^4, ~28 ms at 10^5,
  ~290 ms at 10^6 (memory bound: n * 4 KB read per query), i.e. ~14 ms at the threshold, while
  IVF-Flat answers in ~1.5 ms at 10^5 with recall@10 0.95.
- raw vectors (``n * dim * 4`` bytes) <= ``MEMORY_FRACTION`` (0.5) of RAM: ``IVF-Flat`` with
  ``nlist = clamp(round(4 * sqrt(n)), 16, 65536)`` lists (at most n / 39; 4000 at 10^6). k-means:
  10 iterations on 32 random rows per list (read with LanceDB ``take_offsets``). Above 2048 lists
  the coarse quantizer is an HNSW32 graph over the centroids: adding 10^6 vectors then costs ~500
  instead of 4000 centroid comparisons each, and a query saves the 16 MB centroid scan. Scores of
  returned rows are exact.
- larger: ``IVF-PQ`` with ``dim/16`` sub-quantizers of 8 bits (64 bytes a vector at dim 1024)
  and a refine step: the ``k * refine_factor`` best PQ candidates are re-scored exactly with
  float16 copies of the vectors kept in a memory-mapped ``.f16.npy`` beside the index (2 bytes a
  dimension on disk, read only for candidates). ``refine_factor`` is tuned with ``nprobe``
  (16, 32, ... 256: the first reaching the target); ``refine=False`` drops the file.
- ``kind="hnsw"`` (``IndexHNSWFlat`` M=32, efConstruction=80, in an ``IndexIDMap2``) is available
  explicitly; at dim 1024 its build is far slower than IVF on 2 cores, so ``auto`` never picks it.

``nprobe`` (IVF) / ``efSearch`` (HNSW) are tuned at build time: 200 random table rows are held out
of the index (added after tuning) and used as unseen queries, their exact top-10 among the other
rows is computed during the build pass, and the smallest value on a ladder reaching recall@10 >=
``target_recall`` (0.95) is stored in the manifest with the recall measured. Pass ``nprobe=`` to
``search`` to trade speed for recall per call.

Files: for a local database ``<db>/_faiss/<table>.json`` (manifest: table version and row count
it was built from, newest ``indexed_at``, model sha256, kind, parameters, tuning, file names),
``<table>.<token>.faiss`` (the index), ``<table>.<token>.ids.npy`` (row ids sorted, label =
position, memory-mapped on load) and for IVF-PQ ``<table>.<token>.f16.npy``. For a non-local URI
the same files live in ``$ACSEARCH_CACHE`` (else ``$XDG_CACHE_HOME/audioclip_search``, else
``~/.cache/audioclip_search``) ``/faiss/<sha1(uri)[:16]>/``. The manifest is replaced last and
atomically, so a crash mid-save leaves the previous index usable.

Staleness: an index is *fresh* when the table version equals the one it was built from, or when
row count is unchanged and no row has ``indexed_at`` newer than the newest one indexed (the store
stamps ``indexed_at`` on every write, so compaction or index-only commits do not make it stale).
A stale index still gives correct answers (``search(..., stale="overlay")``, the default): the
index is searched only among rows unchanged since the build (candidates are verified against the
current table: deleted or re-written rows never come back), rows added or changed since are
searched exactly, and the two top-k lists are merged. ``stale="exact"`` searches the whole current
table exactly instead. With no index at all, ``backend="auto"`` searches exactly.

Filters (``where`` SQL): matching ids are resolved through LanceDB at the same table version; if at
most ``FILTER_BRUTE_MAX`` (20,000) match, their vectors are scored exactly (brute force), else the
index is searched with a FAISS ``IDSelectorBitmap`` and ``nprobe`` scaled by 1/selectivity (capped
at ``nlist``; retried exhaustively if fewer than k hits come back).

Devices: ``device="auto"`` uses FAISS on GPU when faiss has GPU support and a GPU is present
(``faiss.get_num_gpus() > 0``), else CPU; ``"cpu"`` / ``"cuda"`` force it (``"cuda"`` without one
raises). GPU serves unfiltered flat/IVF searches; filtered searches and the refine step run on
the CPU copy. Exact results are the same on both (up to float rounding of ties).

Backends of :func:`search`: ``"auto"`` (FAISS index if saved, else exact), ``"faiss"`` (requires an
index), ``"exact"`` (streamed brute force over the current table) and ``"lancedb"`` (LanceDB's own
vector search, its ANN index if one was built with ``Store.create_lancedb_index``).

Threads: FAISS uses ``$ACSEARCH_THREADS`` or all available cores (``set_threads``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .database import Store, _as_queries, _scan
from .errors import IndexNotFoundError, StoreError
from .schema import arrow_embeddings, check_modality, embedding_dim, sql_in, sql_timestamp

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "ivf_flat", "ivf_pq", "hnsw"]
Backend = Literal["auto", "faiss", "exact", "lancedb"]
Device = Literal["auto", "cpu", "cuda", "gpu"]

MANIFEST_FORMAT = 1
FLAT_MAX_ROWS = 50_000
MEMORY_FRACTION = 0.5
IVF_MIN_LISTS = 16
IVF_MAX_LISTS = 65_536
HNSW_QUANTIZER_FROM = 2_048
TWO_LEVEL_FROM = 1_024
TRAIN_POINTS_PER_LIST = 32
KMEANS_ITERATIONS = 10
PQ_DIMS_PER_SUBQUANTIZER = 16
REFINE_FACTOR = 16
REFINE_LADDER = (16, 32, 64, 128, 256)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
TARGET_RECALL = 0.95
TUNE_QUERIES = 200
TUNE_K = 10
FILTER_BRUTE_MAX = 20_000
NPROBE_LADDER = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
BUILD_BATCH = 32_768
#: FAISS threads for searches of at most SMALL_BATCH queries (``$ACSEARCH_QUERY_THREADS``, default 1).
QUERY_THREADS = int(os.environ.get("ACSEARCH_QUERY_THREADS", "1") or 1)
SMALL_BATCH = 4

_threads_set = False
_threads = 1


def set_threads(n: int | None = None) -> int:
    """Set FAISS's OpenMP threads (default ``$ACSEARCH_THREADS`` or every available core)."""
    global _threads_set
    if n is None:
        env = os.environ.get("ACSEARCH_THREADS")
        if env:
            n = int(env)
        else:
            try:
                n = len(os.sched_getaffinity(0))
            except AttributeError:  # pragma: no cover - not Linux
                n = os.cpu_count() or 1
    global _threads
    _threads = max(1, int(n))
    faiss.omp_set_num_threads(_threads)
    _threads_set = True
    return _threads


@contextlib.contextmanager
def _query_threads(nq: int) -> Iterator[None]:
    """Single queries run on QUERY_THREADS threads: with 2 busy cores an OpenMP team of 2 made a
    10^4-row flat search 6x slower (16 ms vs 2.6 ms), and IVF/HNSW search one query on one thread
    anyway. Batches use every thread."""
    if nq <= SMALL_BATCH and _threads != QUERY_THREADS:
        faiss.omp_set_num_threads(QUERY_THREADS)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(_threads)
    else:
        yield


def _ensure_threads() -> None:
    if not _threads_set:
        set_threads()


# ---------------------------------------------------------------------------------------- devices
def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees at least one GPU."""
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - broken CUDA setups
        return False


def gpu_unavailable_reason() -> str | None:
    """Why FAISS cannot use a GPU here, or ``None`` when it can."""
    if not hasattr(faiss, "StandardGpuResources"):
        return "this faiss build has no GPU support (faiss-cpu is installed)"
    if faiss.get_num_gpus() <= 0:
        return "faiss has GPU support but sees no CUDA device"
    return None


def resolve_device(device: str = "auto") -> str:
    """``"cpu"`` or ``"cuda"`` for FAISS; ``"cuda"``/``"gpu"`` without a usable GPU raise."""
    if device in ("auto", None):
        return "cuda" if gpu_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "gpu"):
        reason = gpu_unavailable_reason()
        if reason:
            raise RuntimeError(f"FAISS on GPU was asked for, but {reason}")
        return "cuda"
    raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda")


# ----------------------------------------------------------------------------------- policy
def total_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # pragma: no cover
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def ivf_lists(n: int) -> int:
    """``clamp(round(4 * sqrt(n)), 16, 65536)`` but never more than n / 39 (k-means needs points)."""
    lists = int(round(4 * math.sqrt(max(n, 1))))
    lists = min(lists, max(1, n // 39))
    return int(max(1, min(IVF_MAX_LISTS, max(min(IVF_MIN_LISTS, n), lists))))


def choose_kind(n: int, dim: int, memory_budget: int | None = None) -> str:
    """The ``auto`` policy: ``flat`` / ``ivf_flat`` / ``ivf_pq`` from row count and memory."""
    if n <= FLAT_MAX_ROWS:
        return "flat"
    budget = memory_budget if memory_budget is not None else int(MEMORY_FRACTION * total_memory_bytes())
    return "ivf_flat" if n * dim * 4 <= budget else "ivf_pq"


# ----------------------------------------------------------------------------------- files
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


def _manifest_path(store: Store, modality: str) -> Path:
    return index_dir(store) / f"{store.table_name(modality)}.json"


def index_manifest(store: Store, modality: str) -> dict[str, Any] | None:
    """The saved manifest of ``modality``'s FAISS index (no index loading), or ``None``."""
    p = _manifest_path(store, modality)
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------- ids
def encode_ids(ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Row ids as a fixed-width bytes array (UTF-8), vectorised for uniform-length Arrow ids."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        arr = ids.cast(pa.large_string()) if ids.type != pa.large_string() else ids
        n = len(arr)
        if n == 0:
            return np.empty(0, dtype="S1")
        if arr.null_count == 0:
            bufs = arr.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
            lengths = np.diff(offsets)
            width = int(lengths.max())
            if width > 0 and (lengths == width).all():
                data = np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
                return data.reshape(n, width).copy().view(f"S{width}").reshape(n)
        ids = arr.to_pylist()
    enc = [s.encode("utf-8") for s in ids]
    if not enc:
        return np.empty(0, dtype="S1")
    return np.array(enc, dtype=f"S{max(1, max(len(e) for e in enc))}")


def _decode(b: bytes) -> str:
    return b.decode("utf-8")


# ----------------------------------------------------------------------------------- top-k
class _TopK:
    """Running top-k (highest scores) of q queries over scored batches with string ids."""

    def __init__(self, nq: int, k: int):
        self.k = k
        self.scores = np.full((nq, k), -np.inf, np.float32)
        self.ids = np.full((nq, k), None, dtype=object)

    def push(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """``scores`` (q, b) for the ``b`` ids in ``ids`` (object array)."""
        b = scores.shape[1]
        if b == 0 or self.k == 0:
            return
        if b > self.k:
            part = np.argpartition(-scores, self.k - 1, axis=1)[:, : self.k]
        else:
            part = np.broadcast_to(np.arange(b), (scores.shape[0], b))
        cs = np.take_along_axis(scores, part, axis=1)
        ci = ids[part]
        all_s = np.concatenate([self.scores, cs], axis=1)
        all_i = np.concatenate([self.ids, ci], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.ids = np.take_along_axis(all_i, order, axis=1)

    def push_rows(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """Merge per-query candidates: ``scores`` and ``ids`` both (q, c); ``None`` ids are skipped."""
        if ids.size == 0:
            return
        s = np.where(np.equal(ids, None), -np.inf, scores).astype(np.float32)
        all_s = np.concatenate([self.scores, s], axis=1)
        all_i = np.concatenate([self.ids, ids.astype(object)], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.ids = np.take_along_axis(all_i, order, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        ids = self.ids.copy()
        ids[~np.isfinite(self.scores)] = None
        return self.scores.astype(np.float32), ids


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
    q = _as_queries(queries)
    top = _TopK(len(q), k)
    for ids, mat, _ in store.iter_embeddings(modality, where, version=version, batch_rows=batch_rows):
        top.push(q @ mat.T, ids)
    return top.result()


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = 0
    total = 0
    for f, t in zip(found, truth, strict=True):
        ts = {x for x in t.tolist() if x >= 0}
        hits += len(ts.intersection(x for x in f.tolist() if x >= 0))
        total += len(ts)
    return hits / total if total else 1.0


# ----------------------------------------------------------------------------------- index
@dataclass
class _Tuning:
    queries: np.ndarray  # (t, dim) float32
    labels: np.ndarray  # (t,) label of each query row (excluded from its own results)
    truth: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.int64))


class VectorIndex:
    """A FAISS index over one table of a :class:`Store`, labels = positions in sorted row ids."""

    def __init__(
        self,
        index: faiss.Index,
        ids: np.ndarray,
        manifest: dict[str, Any],
        *,
        refine_vectors: np.ndarray | None = None,
        directory: Path | None = None,
        device: str = "auto",
    ):
        self.index = index
        self.ids = ids
        self.manifest = manifest
        self.refine_vectors = refine_vectors
        self.directory = directory
        self.device = resolve_device(device)
        self._gpu_index: Any = None
        self._gpu_res: Any = None
        self._verified_versions: set[int] = {int(manifest["table_version"])}
        self._direct_map = False
        if self.device == "cuda":
            self._to_gpu()

    # ---------------------------------------------------------------- properties
    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def modality(self) -> str:
        return str(self.manifest["modality"])

    @property
    def size(self) -> int:
        return int(self.manifest["n"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def table_version(self) -> int:
        return int(self.manifest["table_version"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    def info(self) -> dict[str, Any]:
        """The manifest plus the device in use."""
        return {**self.manifest, "device": self.device}

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, n={self.size}, table={self.manifest['table']!r})"

    # ---------------------------------------------------------------- build
    @classmethod
    def build(
        cls,
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
        _ensure_threads()
        t_start = time.perf_counter()
        t_wall = time.time()
        check_modality(modality)
        snap = store.snapshot(modality)
        if snap is None:
            raise StoreError(f"no {modality} table in {store.uri} (table set {store.table_set!r})")
        version = int(snap.version)
        n = int(snap.count_rows())
        if n == 0:
            raise StoreError(f"the {modality} table is empty: nothing to index")
        dim = embedding_dim(snap.schema)
        if kind == "auto":
            kind = choose_kind(n, dim, memory_budget)  # type: ignore[assignment]
        if kind not in ("flat", "ivf_flat", "ivf_pq", "hnsw"):
            raise ValueError(f"unknown index kind {kind!r}")
        rng = np.random.default_rng(seed)

        # Pass 1: ids (sorted: label = position) and the newest indexed_at.
        ids_sorted, max_ts = _read_ids(snap, n)
        n = len(ids_sorted)

        # Tuning queries (leave-one-out) and the training sample, by random offsets.
        tune_n = min(TUNE_QUERIES, n) if kind != "flat" else 0
        params: dict[str, Any] = {"metric": "inner_product"}
        if kind in ("ivf_flat", "ivf_pq"):
            params["nlist"] = int(nlist or ivf_lists(n))
            params["quantizer"] = "hnsw32" if params["nlist"] > HNSW_QUANTIZER_FROM else "flat"
            if kind == "ivf_pq":
                m = int(pq_m or _pq_m(dim))
                rf = int(refine_factor or REFINE_FACTOR)
                params.update(pq_m=m, pq_nbits=8, refine=bool(refine), refine_factor=rf)
        elif kind == "hnsw":
            params.update(hnsw_m=int(hnsw_m), ef_construction=int(ef_construction))
        train_n = 0
        if kind in ("ivf_flat", "ivf_pq") and trained is None:
            train_n = min(n, max(params["nlist"] * TRAIN_POINTS_PER_LIST, 256 * 40 if kind == "ivf_pq" else 0))
        sample_n = max(train_n, tune_n)
        sample_ids, sample_mat = _sample(snap, n, sample_n, dim, rng) if sample_n else (None, None)

        tuning: _Tuning | None = None
        if tune_n and sample_mat is not None and sample_ids is not None:
            pick = rng.choice(len(sample_mat), size=tune_n, replace=False)
            labels = np.searchsorted(ids_sorted, sample_ids[pick].astype(ids_sorted.dtype))
            tuning = _Tuning(queries=np.ascontiguousarray(sample_mat[pick]), labels=labels.astype(np.int64))

        # Create and train.
        index = _new_index(kind, dim, params, trained)
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
            xt = np.ascontiguousarray(sample_mat[:train_n])
            if params["nlist"] >= TWO_LEVEL_FROM:
                centroids = two_level_kmeans(xt, params["nlist"], seed=seed)
                ivf.quantizer.add(centroids)  # quantizer holds nlist centroids: train() skips k-means
                params["training"] = "two-level k-means"
            index.train(xt)
        train_s = time.perf_counter() - t_train
        del sample_mat, sample_ids

        # Pass 2: every vector once, added under its label; exact truth for tuning on the way.
        directory = index_dir(store)
        token = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
        stem = f"{store.table_name(modality)}.{token}"
        refine_vectors: np.ndarray | None = None
        if kind == "ivf_pq" and params.get("refine"):
            directory.mkdir(parents=True, exist_ok=True)
            refine_vectors = np.lib.format.open_memmap(
                directory / f"{stem}.f16.npy", mode="w+", dtype=np.float16, shape=(n, dim)
            )
        dense: np.ndarray | None = np.empty((n, dim), np.float32) if kind == "flat" else None
        # The tuning rows are held out of the index until tuned, so they act as unseen queries.
        holdout = kind in ("ivf_flat", "ivf_pq", "hnsw") and tuning is not None
        truth = _TruthAccumulator(tuning, TUNE_K, holdout) if tuning is not None else None
        held = np.sort(tuning.labels) if holdout and tuning is not None else np.empty(0, np.int64)
        t_add = time.perf_counter()
        for batch in _scan(snap, ["id", "embedding"], None, batch_rows):
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
        vi = cls(index, ids_sorted, manifest, refine_vectors=refine_vectors, directory=directory, device="cpu")
        if kind == "ivf_flat" or kind == "ivf_pq":
            if nprobe:
                params["nprobe"] = int(nprobe)
            elif truth is not None and kind == "ivf_pq":
                params["nprobe"], rec = vi._tune_pq(truth.finish(), target_recall, tune_refine=refine_factor is None)
                manifest["tuning"] = {"target_recall": target_recall, "recall_at_10": rec, "queries": tune_n,
                                      "method": "held-out table rows"}
            elif truth is not None:
                params["nprobe"], rec = vi._tune("nprobe", truth.finish(), target_recall)
                manifest["tuning"] = {"target_recall": target_recall, "recall_at_10": rec, "queries": tune_n,
                                      "method": "held-out table rows"}
            else:
                params["nprobe"] = min(params["nlist"], 16)
        elif kind == "hnsw":
            if ef_search:
                params["ef_search"] = int(ef_search)
            elif truth is not None:
                params["ef_search"], rec = vi._tune("ef_search", truth.finish(), target_recall)
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
            vi._save(store, token, t_wall)
        vi.device = resolve_device(device)
        if vi.device == "cuda":
            vi._to_gpu()
        return vi

    def _tune(self, what: str, tuning: _Tuning, target: float, *, stop_on_plateau: bool = False) -> tuple[int, float]:
        """Smallest ``nprobe`` / ``ef_search`` on the ladder reaching ``target`` recall@10 (else the best)."""
        ladder: list[int]
        if what == "nprobe":
            nl = int(self.manifest["params"]["nlist"])
            ladder = [p for p in NPROBE_LADDER if p < nl] + [nl]
        else:
            ladder = list(EF_LADDER)
        best = (ladder[-1], 0.0)
        flat_steps = 0
        for value in ladder:
            _, labels = self._search_labels(
                tuning.queries, TUNE_K + 1, nprobe=value if what == "nprobe" else None,
                ef=value if what == "ef_search" else None,
            )
            found = _drop_self(labels, tuning.labels, TUNE_K)  # no-op for held-out rows
            rec = _recall(found, tuning.truth)
            if rec >= target:
                return value, round(rec, 4)
            flat_steps = flat_steps + 1 if rec < best[1] + 0.003 else 0
            if rec > best[1]:
                best = (value, rec)
            if stop_on_plateau and flat_steps >= 2:  # more lists will not help: PQ error dominates
                break
        return best[0], round(best[1], 4)

    def _tune_pq(self, tuning: _Tuning, target: float, tune_refine: bool) -> tuple[int, float]:
        """IVF-PQ: tune nprobe for growing refine factors until the target recall is met.

        With many near-ties (10^6 rows) PQ ranking plateaus below the target whatever nprobe is;
        re-scoring more candidates exactly is what lifts it (each candidate costs 2*dim bytes read).
        """
        p = self.manifest["params"]
        factors = [f for f in REFINE_LADDER if f >= p["refine_factor"]] if tune_refine else [p["refine_factor"]]
        if not factors or not p.get("refine"):
            factors = [p["refine_factor"]]
        best: tuple[int, float, int] | None = None
        for rf in factors:
            p["refine_factor"] = rf
            nprobe, rec = self._tune("nprobe", tuning, target, stop_on_plateau=True)
            if best is None or rec > best[1] + 0.003:
                best = (nprobe, rec, rf)
            if rec >= target:
                break
        assert best is not None
        p["refine_factor"] = best[2]
        return best[0], best[1]

    # ---------------------------------------------------------------- persistence
    def _save(self, store: Store, token: str, started: float) -> None:
        directory = index_dir(store)
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{store.table_name(self.modality)}.{token}"
        files = {"index": f"{stem}.faiss", "ids": f"{stem}.ids.npy"}
        tmp = directory / (files["index"] + ".tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, directory / files["index"])
        tmp_ids = directory / (files["ids"] + ".tmp.npy")
        np.save(tmp_ids, np.asarray(self.ids))
        os.replace(tmp_ids, directory / files["ids"])
        if self.refine_vectors is not None:
            files["vectors"] = f"{stem}.f16.npy"
        self.manifest["files"] = files
        _atomic_write_text(directory / f"{store.table_name(self.modality)}.json", json.dumps(self.manifest, indent=2))
        self.directory = directory
        # Drop files of earlier builds of this table (open handles elsewhere stay valid on POSIX).
        # (only files older than this build: a concurrent build's files are left alone).
        keep = set(files.values())
        prefix = f"{store.table_name(self.modality)}."
        for p in directory.iterdir():
            if p.name.startswith(prefix) and p.name not in keep and p.name != f"{prefix}json":
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime < started:
                        p.unlink()

    @classmethod
    def load(cls, store: Store, modality: str, *, device: Device = "auto", check_model: bool = True) -> VectorIndex:
        """Load the saved index of ``modality`` (raises :class:`IndexNotFoundError` if missing or
        built for another model). Ids and refine vectors are memory-mapped."""
        _ensure_threads()
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
            vectors = np.load(directory / files["vectors"], mmap_mode="r") if "vectors" in files else None
        except (KeyError, OSError, RuntimeError) as exc:
            raise IndexNotFoundError(f"the saved {modality} index is incomplete ({exc}); rebuild it") from exc
        if index.ntotal != manifest["n"] or len(ids) != manifest["n"]:
            raise IndexNotFoundError(f"the saved {modality} index is inconsistent; rebuild it")
        return cls(index, ids, manifest, refine_vectors=vectors, directory=directory, device=device)

    # ---------------------------------------------------------------- freshness
    def is_stale(self, store: Store, version: int | None = None) -> bool:
        """True when the table changed since the build (see module doc: version, count, indexed_at)."""
        v = store.version(self.modality) if version is None else version
        if v is None:
            return True
        return not self._fresh_at(store, int(v))

    def _fresh_at(self, store: Store, version: int) -> bool:
        if version in self._verified_versions:
            return True
        snap = store.snapshot(self.modality, version)
        if snap is None or embedding_dim(snap.schema) != self.dim:
            return False
        if int(snap.count_rows()) != self.size:
            return False
        if int(snap.count_rows(f"indexed_at > {sql_timestamp(int(self.manifest['max_indexed_at_us']))}")) != 0:
            return False
        self._verified_versions.add(version)
        return True

    def update(self, store: Store, *, force_retrain: bool = False, save: bool = True) -> VectorIndex:
        """A fresh index for the current table (returns ``self`` when not stale).

        IVF indexes keep their trained centroids / PQ codebooks (no k-means) unless the table size
        moved out of [0.5x, 2x] of the trained size or ``force_retrain``; flat and HNSW rebuild.
        """
        if not self.is_stale(store):
            return self
        p = self.params
        n_now = store.count(self.modality)
        trained = None
        if self.kind in ("ivf_flat", "ivf_pq") and not force_retrain and 0.5 * self.size <= n_now <= 2 * self.size:
            trained = _empty_trained_copy(self.index)
        return VectorIndex.build(
            store,
            self.modality,
            self.kind,  # type: ignore[arg-type]
            nlist=p.get("nlist") if trained is not None else None,
            pq_m=p.get("pq_m"),
            refine=bool(p.get("refine", True)),
            refine_factor=None,
            hnsw_m=int(p.get("hnsw_m", HNSW_M)),
            ef_construction=int(p.get("ef_construction", HNSW_EF_CONSTRUCTION)),
            device=self.device,  # type: ignore[arg-type]
            save=save,
            trained=trained,
        )

    # ---------------------------------------------------------------- search
    def labels_for(self, ids: Iterable[str] | np.ndarray | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, found)`` for string ids: label positions and a mask of ids in the index."""
        if isinstance(ids, pa.Array | pa.ChunkedArray):
            arr = encode_ids(ids)
        elif isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
            arr = ids
        else:
            arr = encode_ids(list(ids))
        n = len(self.ids)
        if len(arr) == 0 or n == 0:
            return np.zeros(len(arr), np.int64), np.zeros(len(arr), bool)
        width = self.ids.dtype.itemsize
        too_long = np.char.str_len(arr) > width if arr.dtype.itemsize > width else np.zeros(len(arr), bool)
        probe = arr.astype(self.ids.dtype)
        pos = np.searchsorted(self.ids, probe)
        pos_c = np.minimum(pos, n - 1)
        found = (pos < n) & (np.asarray(self.ids[pos_c]) == probe) & ~too_long
        return pos_c.astype(np.int64), found

    def ids_of(self, labels: np.ndarray) -> np.ndarray:
        """Object array of str ids for an int label array (``-1`` gives ``None``)."""
        labels = np.asarray(labels)
        out = np.full(labels.shape, None, dtype=object)
        ok = labels >= 0
        if ok.any():
            raw = np.asarray(self.ids[labels[ok]])
            out[ok] = [_decode(b) for b in raw.tolist()]
        return out

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        allowed_ids: Iterable[str] | np.ndarray | pa.Array | pa.ChunkedArray | None = None,
        *,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product: ``(scores (q, k) float32, ids (q, k) object)``.

        ``allowed_ids`` restricts results to those ids (ids not in the index are ignored). Missing
        results (k larger than the candidates) are ``-inf`` / ``None``. No staleness check here:
        use :func:`search` for that.
        """
        q = _as_queries(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, the index {self.dim}")
        if allowed_ids is None:
            scores, labels = self._search_labels(q, k, nprobe=nprobe, ef=ef)
        else:
            lab, found = self.labels_for(allowed_ids)
            scores, labels = self._search_subset(q, k, np.unique(lab[found]), nprobe=nprobe, ef=ef)
        scores = np.where(labels >= 0, scores, -np.inf).astype(np.float32)
        return scores, self.ids_of(labels)

    def _search_params(
        self, nprobe: int | None, ef: int | None, sel: Any = None
    ) -> tuple[faiss.SearchParameters, list[Any]]:
        """Search parameters, and the Python objects they point to (keep them alive during the call)."""
        p = self.manifest["params"]
        keep: list[Any] = [sel]
        if self.kind in ("ivf_flat", "ivf_pq"):
            sp = faiss.SearchParametersIVF()
            sp.nprobe = int(min(p["nlist"], nprobe or p.get("nprobe") or 16))
            if p.get("quantizer") == "hnsw32":
                qp = faiss.SearchParametersHNSW()
                qp.efSearch = max(64, 2 * sp.nprobe)
                sp.quantizer_params = qp
                keep.append(qp)  # the C++ params hold a raw pointer to it
        elif self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = int(ef or p.get("ef_search") or 64)
        else:
            sp = faiss.SearchParameters()
        if sel is not None:
            sp.sel = sel
        return sp, keep

    def _search_labels(
        self,
        q: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef: int | None = None,
        sel: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search (with refine for IVF-PQ): scores and int64 labels, ``-1`` padded."""
        if k <= 0:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        refine = self.kind == "ivf_pq" and self.refine_vectors is not None
        kk = min(self.size, k * int(self.manifest["params"].get("refine_factor", 1))) if refine else k
        kk = max(kk, 1)
        params, keep = self._search_params(nprobe, ef, sel)
        index = self.index
        if self._gpu_index is not None and sel is None and self.kind != "hnsw":
            index = self._gpu_index
            params = _gpu_params(params)
        try:
            with _query_threads(len(q)):
                scores, labels = index.search(q, kk, params=params)
        except RuntimeError:
            if index is self.index:
                raise
            log.warning("GPU search failed; using the CPU index", exc_info=True)
            params, keep = self._search_params(nprobe, ef, sel)
            scores, labels = self.index.search(q, kk, params=params)
        del keep
        if refine:
            scores, labels = self._refine(q, labels, k)
        if scores.shape[1] < k:
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        return scores, labels

    def _refine(self, q: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-score PQ candidates exactly with the float16 vectors (read once, in label order)."""
        assert self.refine_vectors is not None
        valid = labels >= 0
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_l = np.full((len(q), k), -1, np.int64)
        if not valid.any():
            return out_s, out_l
        uniq, inv = np.unique(labels[valid], return_inverse=True)
        vecs = np.asarray(self.refine_vectors[uniq], dtype=np.float32)
        pos = np.zeros(labels.shape, np.int64)
        pos[valid] = inv
        step = max(1, (1 << 22) // max(1, labels.shape[1] * self.dim))
        for a in range(0, len(q), step):
            b = a + step
            s = np.einsum("qcd,qd->qc", vecs[pos[a:b]], q[a:b])
            s[~valid[a:b]] = -np.inf
            kk = min(k, s.shape[1])
            top = np.argsort(-s, axis=1, kind="stable")[:, :kk]
            out_s[a:b, :kk] = np.take_along_axis(s, top, axis=1)
            out_l[a:b, :kk] = np.take_along_axis(labels[a:b], top, axis=1)
        out_l[~np.isfinite(out_s)] = -1
        return out_s, out_l

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """float32 vectors of ``labels`` (exact for flat/IVF-Flat/HNSW, float16-rounded for IVF-PQ)."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return np.empty((0, self.dim), np.float32)
        if self.kind == "ivf_pq" and self.refine_vectors is not None:
            order = np.argsort(labels)
            out = np.empty((len(labels), self.dim), np.float32)
            out[order] = self.refine_vectors[labels[order]]
            return out
        if self.kind in ("ivf_flat", "ivf_pq") and not self._direct_map:
            faiss.extract_index_ivf(self.index).make_direct_map(True)
            self._direct_map = True
        return self.index.reconstruct_batch(labels)

    def _search_subset(
        self, q: np.ndarray, k: int, labels: np.ndarray, *, nprobe: int | None, ef: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        m = len(labels)
        if m == 0 or k <= 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if m <= FILTER_BRUTE_MAX:
            return _topk_labels(q @ self.vectors(labels).T, labels, k)
        bitmap = np.zeros((self.size + 7) // 8, np.uint8)
        mask = np.zeros(self.size, bool)
        mask[labels] = True
        bitmap[:] = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        frac = m / self.size
        p = self.manifest["params"]
        probe = ef_eff = None
        if self.kind in ("ivf_flat", "ivf_pq"):
            base = nprobe or p.get("nprobe") or 16
            probe = int(min(p["nlist"], math.ceil(base / max(frac, 1e-6))))
        elif self.kind == "hnsw":
            base = ef or p.get("ef_search") or 64
            ef_eff = int(min(4096, math.ceil(base / max(frac, 1e-6))))
        scores, lab = self._search_labels(q, k, nprobe=probe, ef=ef_eff, sel=sel)
        if self.kind in ("ivf_flat", "ivf_pq") and (lab < 0).any() and m >= k and probe != p["nlist"]:
            scores, lab = self._search_labels(q, k, nprobe=int(p["nlist"]), sel=sel)
        del bitmap
        return scores, lab

    # ---------------------------------------------------------------- GPU
    def _to_gpu(self) -> None:
        if self.kind == "hnsw" or self._gpu_index is not None:
            return
        try:
            self._gpu_res = faiss.StandardGpuResources()
            co = faiss.GpuClonerOptions()
            co.useFloat16 = False
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index, co)
        except Exception as exc:  # pragma: no cover - needs a GPU build of faiss
            log.warning("could not move the FAISS index to the GPU (%s); searching on CPU", exc)
            self._gpu_index = None
            self.device = "cpu"


def _gpu_params(params: Any) -> Any:  # pragma: no cover - needs a GPU build of faiss
    """GPU indexes take nprobe but no selector nor quantizer params."""
    if isinstance(params, faiss.SearchParametersIVF):
        sp = faiss.SearchParametersIVF()
        sp.nprobe = params.nprobe
        return sp
    return None


def two_level_kmeans(x: np.ndarray, k: int, *, niter: int = KMEANS_ITERATIONS, seed: int = 0) -> np.ndarray:
    """``k`` unit-norm centroids by two-level k-means: ``sqrt(k)`` coarse clusters, then each is split
    into a share of ``k`` proportional to its size. ~sqrt(k)/2 times cheaper than flat k-means (at
    k = 4000 on 128k rows of dim 1024: well under a minute instead of ~10 on 2 cores)."""
    n, d = x.shape
    k = min(k, n)
    k1 = max(1, int(round(math.sqrt(k))))
    top = faiss.Kmeans(d, k1, niter=niter, seed=seed, max_points_per_centroid=max(256, n // k1 + 1),
                       min_points_per_centroid=1, spherical=True)
    top.train(x)
    _, assign = top.index.search(x, 1)
    assign = assign.ravel()
    counts = np.bincount(assign, minlength=k1)
    share = np.minimum(counts, np.floor(counts * k / n).astype(np.int64))
    share[(share == 0) & (counts > 0)] = 1
    # hand out the remainder to the clusters with the most points per centroid
    while share.sum() < k:
        room = np.where(share < counts, counts / np.maximum(share, 1), -1.0)
        share[int(np.argmax(room))] += 1
    while share.sum() > k:
        share[int(np.argmin(np.where(share > 1, counts / np.maximum(share, 1), np.inf)))] -= 1
    out = []
    for c in range(k1):
        if share[c] == 0:
            continue
        sub = np.ascontiguousarray(x[assign == c])
        if share[c] >= len(sub):
            out.append(sub[: share[c]])
            continue
        km = faiss.Kmeans(d, int(share[c]), niter=niter, seed=seed + c + 1, spherical=True,
                          min_points_per_centroid=1, max_points_per_centroid=1 << 30)
        km.train(sub)
        out.append(km.centroids)
    cents = np.vstack(out).astype(np.float32)
    cents /= np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(cents)


def _topk_labels(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of ``scores`` (q, m) as (scores, labels[col]) padded with -inf / -1."""
    nq, m = scores.shape
    kk = min(k, m)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_l = np.full((nq, k), -1, np.int64)
    if kk == 0:
        return out_s, out_l
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if m > kk else np.tile(np.arange(m), (nq, 1))
    ps = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    out_s[:, :kk] = np.take_along_axis(ps, order, axis=1)
    out_l[:, :kk] = labels[np.take_along_axis(part, order, axis=1)]
    return out_s, out_l


def _pq_m(dim: int) -> int:
    m = max(1, dim // PQ_DIMS_PER_SUBQUANTIZER)
    while dim % m:
        m -= 1
    return m


def _new_index(kind: str, dim: int, params: dict[str, Any], trained: faiss.Index | None) -> faiss.Index:
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


def _empty_trained_copy(index: faiss.Index) -> faiss.Index:
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


def estimate_index_bytes(kind: str, n: int, dim: int, params: dict[str, Any]) -> dict[str, int]:
    """RAM held by an index of ``kind`` (vectors/codes, ids, centroids) and its extra disk files."""
    if kind == "ivf_flat":
        ram = n * (dim * 4 + 8) + params["nlist"] * dim * 4
        return {"ram": ram, "disk_extra": 0}
    if kind == "ivf_pq":
        ram = n * (params["pq_m"] + 8) + params["nlist"] * dim * 4 + 256 * dim * 4
        return {"ram": ram, "disk_extra": n * dim * 2 if params.get("refine") else 0}
    if kind == "hnsw":
        return {"ram": int(n * dim * 4 + n * params["hnsw_m"] * 2 * 4 * 1.1), "disk_extra": 0}
    return {"ram": n * dim * 4, "disk_extra": 0}


def _drop_self(labels: np.ndarray, self_labels: np.ndarray, k: int) -> np.ndarray:
    out = np.full((len(labels), k), -1, np.int64)
    for i, row in enumerate(labels):
        kept = row[(row != self_labels[i]) & (row >= 0)][:k]
        out[i, : len(kept)] = kept
    return out


class _TruthAccumulator:
    """Exact leave-one-out top-k labels of the tuning queries, accumulated over the build pass."""

    def __init__(self, tuning: _Tuning, k: int, holdout: bool = False):
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

    def finish(self) -> _Tuning:
        self.tuning.truth = np.where(np.isfinite(self.scores), self.labels, -1)
        return self.tuning


def _read_ids(snap: Any, n_hint: int) -> tuple[np.ndarray, int]:
    """Sorted fixed-width bytes ids and the newest ``indexed_at`` (µs) of a pinned table."""
    parts: list[np.ndarray] = []
    max_ts: int | None = None
    for batch in _scan(snap, ["id", "indexed_at"], None):
        if batch.num_rows == 0:
            continue
        parts.append(encode_ids(batch.column("id")))
        m = pc.max(batch.column("indexed_at").cast(pa.int64())).as_py()
        if m is not None:
            max_ts = m if max_ts is None else max(max_ts, m)
    if not parts:
        return np.empty(0, dtype="S1"), 0
    width = max(p.dtype.itemsize for p in parts)
    ids = np.concatenate([p.astype(f"S{width}") for p in parts])
    ids.sort(kind="stable")
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        dup = ids[1:][ids[1:] == ids[:-1]][0]
        raise StoreError(f"duplicate row id {dup!r} in the table; cannot index")
    return ids, int(max_ts or 0)


def _sample(snap: Any, n: int, size: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` random rows (ids as bytes, float32 matrix) of a pinned table."""
    size = min(size, n)
    offsets = np.sort(rng.choice(n, size=size, replace=False))
    ids_parts: list[np.ndarray] = []
    mats: list[np.ndarray] = []
    if hasattr(snap, "take_offsets"):
        for i in range(0, size, 16_384):
            chunk = [int(x) for x in offsets[i : i + 16_384]]
            tab = snap.take_offsets(chunk).select(["id", "embedding"]).to_arrow()
            ids_parts.append(encode_ids(tab.column("id")))
            mats.append(arrow_embeddings(tab.column("embedding"), dim))
    else:  # pragma: no cover - older lancedb: one scan, keep the chosen offsets
        pos = 0
        wanted = offsets
        for batch in _scan(snap, ["id", "embedding"], None):
            m = batch.num_rows
            lo, hi = np.searchsorted(wanted, [pos, pos + m])
            if hi > lo:
                local = wanted[lo:hi] - pos
                ids_parts.append(encode_ids(batch.column("id"))[local])
                mats.append(arrow_embeddings(batch.column("embedding"), dim)[local])
            pos += m
    width = max(p.dtype.itemsize for p in ids_parts)
    ids = np.concatenate([p.astype(f"S{width}") for p in ids_parts])
    return ids, np.ascontiguousarray(np.concatenate(mats).astype(np.float32, copy=False))


# ----------------------------------------------------------------------------------- search API
@dataclass
class SearchResult:
    """Top-k rows per query: ``scores`` (q, k) float32 (cosine), ``ids`` (q, k) object (None = no hit)."""

    scores: np.ndarray
    ids: np.ndarray
    backend: str
    stale: bool = False
    version: int | None = None

    def hits(self, i: int = 0) -> list[tuple[str, float]]:
        """``[(id, score), ...]`` of query ``i`` without the padding."""
        return [(r, float(s)) for r, s in zip(self.ids[i], self.scores[i], strict=True) if r is not None]


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
) -> SearchResult:
    """Top-k search of ``modality`` for ``queries`` (q, dim) — the CLI's entry point.

    See the module doc for backends, staleness and filters. ``index`` reuses an already loaded
    :class:`VectorIndex` (servers keep one per modality; see :class:`Searcher`).
    """
    check_modality(modality)
    q = _as_queries(queries)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    info = store.model_info()
    if info is not None and q.shape[1] != int(info["dim"]):
        raise ValueError(f"queries have dim {q.shape[1]}, the {store.table_set!r} table set holds {info['dim']}-d")
    if backend == "lancedb":
        s, i = store.lancedb_search(modality, q, k, where=where)
        return SearchResult(s, i, "lancedb", version=store.version(modality))
    version = store.version(modality)
    if version is None:
        return SearchResult(np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), None, object),
                            backend if backend != "auto" else "exact", version=None)
    if backend == "exact":
        s, i = exact_search(store, modality, q, k, where=where, version=version)
        return SearchResult(s, i, "exact", version=version)
    if backend not in ("auto", "faiss"):
        raise ValueError(f"unknown backend {backend!r}: use auto, faiss, exact or lancedb")
    if index is None:
        try:
            index = VectorIndex.load(store, modality, device=device)
        except IndexNotFoundError:
            if backend == "faiss":
                raise
            s, i = exact_search(store, modality, q, k, where=where, version=version)
            return SearchResult(s, i, "exact", version=version)
    name = f"faiss:{index.kind}"
    if not index._fresh_at(store, version):
        if stale == "exact":
            s, i = exact_search(store, modality, q, k, where=where, version=version)
            return SearchResult(s, i, "exact", stale=True, version=version)
        s, i = _overlay_search(store, modality, index, q, k, where=where, version=version, nprobe=nprobe)
        return SearchResult(s, i, name + "+delta", stale=True, version=version)
    if where:
        allowed = store.id_column(modality, where, version=version)
        s, i = index.search(q, k, allowed_ids=allowed, nprobe=nprobe)
    else:
        s, i = index.search(q, k, nprobe=nprobe)
    return SearchResult(s, i, name, version=version)


def _overlay_search(
    store: Store,
    modality: str,
    index: VectorIndex,
    q: np.ndarray,
    k: int,
    *,
    where: str | None,
    version: int,
    nprobe: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Index search over rows unchanged since the build + exact search over rows changed since."""
    ts = sql_timestamp(int(index.manifest["max_indexed_at_us"]))
    top = _TopK(len(q), k)
    # Rows added or re-written since the build: exact.
    for ids, mat, _ in store.iter_embeddings(modality, _and(where, f"indexed_at > {ts}"), version=version):
        top.push(q @ mat.T, ids)
    unchanged = f"indexed_at <= {ts}"
    if where:
        allowed = store.id_column(modality, _and(where, unchanged), version=version)
        s, i = index.search(q, k, allowed_ids=allowed, nprobe=nprobe)
        top.push_rows(s, i)
        return top.result()
    # Unfiltered: search deeper until k candidates per query are confirmed unchanged.
    known: dict[str, bool] = {}
    kk = min(index.size, k + max(16, k))
    while True:
        s, i = index.search(q, kk, nprobe=nprobe)
        cand = [x for x in dict.fromkeys(i.ravel().tolist()) if x is not None and x not in known]
        for c0 in range(0, len(cand), 1000):
            chunk = cand[c0 : c0 + 1000]
            ok = set(store.ids(modality, _and(sql_in("id", chunk), unchanged), version=version).tolist())
            for c in chunk:
                known[c] = c in ok
        valid = np.vectorize(lambda x: x is not None and known.get(x, False), otypes=[bool])(i)
        # done when every query has k confirmed rows, or its candidates ran out (IVF lists exhausted)
        done = (valid.sum(axis=1) >= min(k, index.size)) | np.equal(i, None).any(axis=1)
        if done.all() or kk >= index.size:
            s = np.where(valid, s, -np.inf).astype(np.float32)
            top.push_rows(s, np.where(valid, i, None))
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

    def index(self, modality: str) -> VectorIndex | None:
        path = _manifest_path(self.store, modality)
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

    def search(
        self,
        modality: str,
        queries: np.ndarray,
        k: int = 10,
        *,
        where: str | None = None,
        backend: Backend | None = None,
        nprobe: int | None = None,
    ) -> SearchResult:
        be = backend or self.backend
        idx = self.index(modality) if be in ("auto", "faiss") else None
        if be == "faiss" and idx is None:
            raise IndexNotFoundError(f"no vector index for {modality}; build one first")
        return search(self.store, modality, queries, k, where=where, backend=be, index=idx, nprobe=nprobe)


__all__ = [
    "FLAT_MAX_ROWS",
    "FILTER_BRUTE_MAX",
    "SearchResult",
    "Searcher",
    "VectorIndex",
    "choose_kind",
    "encode_ids",
    "estimate_index_bytes",
    "exact_search",
    "gpu_available",
    "gpu_unavailable_reason",
    "index_dir",
    "index_manifest",
    "ivf_lists",
    "search",
    "set_threads",
]

