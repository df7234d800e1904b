"""Keep every table's FAISS index in step with the table, whoever left it behind.

A run that committed rows but never built the index (killed, a full disk, ``--no-vector-index``)
must not leave "vector index: none" for good: the next ``acsearch index``, ``query`` and
``serve`` call :func:`refresh_vector_indexes`, which builds a missing index (or one built for
another model) and updates a stale one. An index whose manifest already names the table's
current version is left alone without being loaded, so the check costs one small JSON read.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def refresh_vector_index(store: Any, modality: str) -> bool:
    """Build or update ``modality``'s FAISS index if it is missing or stale; True if it did."""
    from ..store import IndexNotFoundError, VectorIndex, index_manifest

    version = store.version(modality)
    if version is None or not store.count(modality):
        return False
    manifest = index_manifest(store, modality)
    sha = (store.model_info() or {}).get("model_sha256")
    if (manifest is not None and manifest.get("table_version") == version
            and (not sha or manifest.get("model_sha256") in (None, sha))):
        return False
    try:
        index = VectorIndex.load(store, modality)
    except IndexNotFoundError:
        VectorIndex.build(store, modality)
        return True
    return index.update(store) is not index


def refresh_vector_indexes(store: Any, *, quiet: bool = False) -> list[str]:
    """:func:`refresh_vector_index` for every table of the store; returns the modalities refreshed.

    ``quiet=True`` (readers: query, serve) logs a failure (e.g. a read-only database folder) and
    goes on, since search stays correct without the index, only slower.
    """
    done = []
    for modality in store.tables():
        try:
            if refresh_vector_index(store, modality):
                done.append(modality)
        except Exception as exc:  # noqa: BLE001 - readers must still answer
            if not quiet:
                raise
            log.warning("could not refresh the %s vector index of %s: %s", modality, store.uri, exc)
    return done
