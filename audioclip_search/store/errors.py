"""Errors raised by the store and the vector index."""

from __future__ import annotations

from ..errors import AudioClipSearchError


class StoreError(AudioClipSearchError):
    """Base class of the store's own errors."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The database does not exist and the caller asked not to create it."""


class ModelMismatchError(StoreError):
    """The table set was filled by another model (or another embedding dimension).

    Attributes ``stored`` and ``requested`` are dicts with ``model``, ``model_sha256`` and ``dim``.
    """

    def __init__(self, message: str, *, stored: dict | None = None, requested: dict | None = None):
        super().__init__(message)
        self.stored = stored or {}
        self.requested = requested or {}


class IndexNotFoundError(StoreError, FileNotFoundError):
    """No saved vector index for this table (build one with ``VectorIndex.build``)."""
