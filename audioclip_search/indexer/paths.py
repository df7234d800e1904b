"""File names as the store records them: lossless for names that are not valid UTF-8.

The ``path`` column is UTF-8 text. A name from a Latin-1 archive (``b'caf\\xe9.wav'``) reaches
Python as ``'caf\\udce9.wav'`` (surrogate escape) and cannot be written as UTF-8. Such a path is
stored as a ``file://`` URI whose bytes are %-escaped (``file:///data/caf%E9.wav``): it is valid
text, it maps back to exactly the same bytes, and it cannot be confused with a plain path (stored
plain paths are absolute, so they start with ``/``). Every valid UTF-8 path is stored unchanged,
so databases written before this rule read the same. ``acsearch serve`` already resolves
``file://`` URIs to local files.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

FILE_URI = "file://"
# Kept literally in the URI form: path separators and the usual unreserved characters.
_SAFE = "/-._~!$&'()*+,;=:@"


def is_utf8(path: str | os.PathLike[str]) -> bool:
    """True when the path's bytes are valid UTF-8 (so it can be stored as is)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stored_path(path: str | os.PathLike[str]) -> str:
    """The text the store records for a file: a local path as the module doc says, an object's URI as is."""
    from ..fsio.paths import ObjectPath

    if isinstance(path, ObjectPath):
        return str(path)
    text = os.fspath(path)
    if is_utf8(text):
        return text
    return FILE_URI + quote_from_bytes(os.fsencode(text), safe=_SAFE)


def fs_path(stored: str) -> Path:
    """The local path a stored value names (inverse of :func:`stored_path` for local files)."""
    if stored.startswith(FILE_URI):
        return Path(os.fsdecode(unquote_to_bytes(stored[len(FILE_URI):])))
    return Path(stored)


def display_path(path: str | os.PathLike[str]) -> str:
    """A printable, loggable form of any path (the stored form: never raises on odd bytes)."""
    return stored_path(path)
