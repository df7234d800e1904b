"""Which FAISS index a table gets, how many threads and which device search uses.

``kind="auto"``, inner product on L2-normalised vectors (= cosine similarity):

- ``n <= FLAT_MAX_ROWS`` (50,000): exact ``IndexFlatIP``. Measured on the 2-core dev box (dim 1024,
  one query at a time, ``benchmarks/vector_search.py``): p50 ~3-4 ms at 10^4, ~28 ms at 10^5,
  ~290 ms at 10^6 (memory bound: n * 4 KB read per query), i.e. ~14 ms at the threshold, while
  IVF-Flat answers in ~1.5 ms at 10^5 with recall@10 0.95.
- raw vectors (``n * dim * 4`` bytes) <= ``MEMORY_FRACTION`` (0.5) of RAM: ``IVF-Flat`` with
  ``nlist = clamp(round(4 * sqrt(n)), 16, 65536)`` lists (at most n / 39; 4000 at 10^6). Above
  2048 lists the coarse quantizer is an HNSW32 graph over the centroids.
- larger: ``IVF-PQ`` with ``dim/16`` sub-quantizers of 8 bits (64 bytes a vector at dim 1024) and
  a refine step over float16 copies of the vectors kept in a memory-mapped file.
- ``kind="hnsw"`` is available explicitly; at dim 1024 its build is far slower than IVF on 2
  cores, so ``auto`` never picks it.

One ANN backend per table: the FAISS index. LanceDB's own IVF-PQ is measured side by side by
``benchmarks/vector_search.py`` (``backend="lancedb"`` stays available for that comparison) but
never wins there at equal recall, so ``auto`` never uses it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any, Literal

import faiss

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
def query_threads(nq: int) -> Iterator[None]:
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


def ensure_threads() -> None:
    if not _threads_set:
        set_threads()


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



def pq_subquantizers(dim: int) -> int:
    m = max(1, dim // PQ_DIMS_PER_SUBQUANTIZER)
    while dim % m:
        m -= 1
    return m


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


