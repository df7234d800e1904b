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

The database, snapshot and FAISS names are imported on first use: code that needs only the schema
(discovery, the evaluator's reader) does not load LanceDB, and code that only reads or writes the
store does not load faiss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
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

_DATABASE = ("DEFAULT_URI", "ENV_URI", "ModelInfo", "Store", "UpsertResult", "resolve_uri")
#: The names of ``__all__`` not imported above, by the module that defines them; the rest of them
#: are ``vector_index``'s (FAISS).
_LAZY = {name: ".database" if name in _DATABASE else ".snapshot" if name == "TableSnapshot" else ".vector_index"
         for name in __all__ if name not in globals()}  # fmt: skip

if TYPE_CHECKING:  # pragma: no cover
    from .database import DEFAULT_URI, ENV_URI, ModelInfo, Store, UpsertResult, resolve_uri
    from .snapshot import TableSnapshot
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

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
