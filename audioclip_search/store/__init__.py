"""The store: an embedded LanceDB database (the record) plus FAISS indexes (fast search).

Everything the indexer and the CLI need is importable from here::

    from audioclip_search.store import Store, VectorIndex, search, ModelMismatchError

- :class:`Store` (``database.py``): open/create the database, bind the model, upsert/delete
  files atomically, read file states, embeddings and rows.
- :class:`TableSnapshot` (``snapshot.py``): one table at one version; every read of a query.
- :class:`VectorIndex`, :func:`search`, :class:`Searcher` (``vector_index/``): FAISS indexes
  saved beside the database, correct results even when stale, SQL filters.
- ``filters.py``: user SQL filters checked with sqlglot (:func:`parse_filter`).
- ``schema.py``: Arrow schemas, :func:`row_id`, table-set naming, SQL quoting helpers.

The FAISS names are imported on first use, so code that only reads or writes the store does not
load faiss.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .database import DEFAULT_URI, ENV_URI, ModelInfo, Store, UpsertResult, resolve_uri
from .errors import IndexNotFoundError, ModelMismatchError, StoreError, StoreNotFoundError
from .schema import (
    DEFAULT_DIM,
    DEFAULT_TABLE_SET,
    MODALITIES,
    SCHEMA_VERSION,
    FileState,
    meta_table_name,
    modality_schema,
    row_id,
    sql_in,
    sql_str,
    table_name,
)
from .snapshot import TableSnapshot

__all__ = [
    "DEFAULT_DIM",
    "DEFAULT_TABLE_SET",
    "DEFAULT_URI",
    "ENV_URI",
    "MODALITIES",
    "SCHEMA_VERSION",
    "FileState",
    "IndexNotFoundError",
    "ModelInfo",
    "ModelMismatchError",
    "SearchResult",
    "Searcher",
    "Store",
    "StoreError",
    "TableSnapshot",
    "StoreNotFoundError",
    "UpsertResult",
    "VectorIndex",
    "choose_kind",
    "exact_search",
    "gpu_available",
    "gpu_unavailable_reason",
    "index_dir",
    "index_manifest",
    "meta_table_name",
    "modality_schema",
    "resolve_uri",
    "row_id",
    "search",
    "set_threads",
    "sql_in",
    "sql_str",
    "table_name",
]

#: The names of ``__all__`` not imported above are ``vector_index``'s (FAISS), imported on first use.
_LAZY = {name: ".vector_index" for name in __all__ if name not in globals()}

if TYPE_CHECKING:  # pragma: no cover
    from .vector_index import (
        Searcher,
        SearchResult,
        VectorIndex,
        choose_kind,
        exact_search,
        gpu_available,
        gpu_unavailable_reason,
        index_dir,
        index_manifest,
        search,
        set_threads,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
