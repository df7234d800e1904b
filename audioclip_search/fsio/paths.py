"""Names of files in object storage: ``scheme://bucket/key`` kept whole, never through ``pathlib``."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

#: URI schemes read through ``pyarrow.fs`` (``az``/``abfs``: Azure Blob Storage / ADLS Gen2).
OBJECT_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")


def is_object_uri(value: object) -> bool:
    """True for a string naming an object-store location (``s3://...``, ``gs://...``, ``az://...``)."""
    if not isinstance(value, str):
        return False
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme.lower() in OBJECT_SCHEMES and bool(rest.strip("/"))


def is_object_path(value: object) -> bool:
    return isinstance(value, ObjectPath)


@dataclass(frozen=True, slots=True)
class ObjectPath:
    """An object (or prefix) in object storage; ``str()`` is its URI, as stored in the database.

    Offers the few :class:`~pathlib.PurePath` members the indexer uses on file names (``name``,
    ``suffix``, ``stem``, ``with_suffix``, ``parent``) and deliberately no ``__fspath__``: handing
    it to ``open()`` by mistake fails loudly instead of looking for a local file.
    """

    uri: str

    def __post_init__(self) -> None:
        if not is_object_uri(self.uri):
            raise ValueError(f"not an object-store URI: {self.uri!r} (use {', '.join(OBJECT_SCHEMES)}://...)")
        scheme, _, rest = self.uri.partition("://")
        object.__setattr__(self, "uri", f"{scheme.lower()}://{rest.rstrip('/')}")

    def __str__(self) -> str:
        return self.uri

    @property
    def scheme(self) -> str:
        return self.uri.partition("://")[0]

    @property
    def key(self) -> str:
        """``bucket/key``: the path ``pyarrow.fs`` takes."""
        return self.uri.partition("://")[2]

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(f"{self.scheme}://{posixpath.dirname(self.key)}")

    def with_suffix(self, suffix: str) -> ObjectPath:
        return ObjectPath(f"{self.scheme}://{posixpath.splitext(self.key)[0]}{suffix}")

    def child(self, key: str) -> ObjectPath:
        """The object at bucket-relative ``key`` (as ``pyarrow.fs`` lists it) on the same service."""
        return ObjectPath(f"{self.scheme}://{key}")


def input_path(value: str | os.PathLike[str]) -> Path | ObjectPath:
    """A command-line or API input: an :class:`ObjectPath` for an object-store URI, else a local path
    (``~`` expanded, ``file://`` stripped, made absolute)."""
    if isinstance(value, ObjectPath):
        return value
    text = os.fspath(value)
    if is_object_uri(text):
        return ObjectPath(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return Path(os.path.realpath(os.path.expanduser(text)))  # realpath never raises on symlink loops
