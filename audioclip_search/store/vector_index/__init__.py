"""FAISS vector indexes over store tables, and the one search entry point the product uses.

- ``policy.py``: which index a table gets (``choose_kind``), threads, devices.
- ``build.py``: building and tuning an index from a pinned table.
- ``files.py``: saving (atomically) and loading indexes beside the database.
- ``index.py``: :class:`VectorIndex`, the loaded index (FAISS search, refine, filters, GPU).
- ``search.py``: :func:`search` / :class:`Searcher` over a :class:`~..snapshot.TableSnapshot`,
  correct even when the index is stale.
"""

from __future__ import annotations

from .build import two_level_kmeans
from .files import index_dir, index_manifest
from .index import VectorIndex, encode_ids
from .policy import (
    FILTER_BRUTE_MAX,
    FLAT_MAX_ROWS,
    choose_kind,
    estimate_index_bytes,
    gpu_available,
    gpu_unavailable_reason,
    ivf_lists,
    resolve_device,
    set_threads,
)
from .search import Searcher, SearchResult, exact_search, search

__all__ = [
    "FILTER_BRUTE_MAX",
    "FLAT_MAX_ROWS",
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
    "resolve_device",
    "search",
    "set_threads",
    "two_level_kmeans",
]
