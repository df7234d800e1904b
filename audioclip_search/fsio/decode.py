"""Decoding an object: a local copy (see :mod:`.storage`) decoded by the ordinary reader."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from ..indexer.discover import SourceFile
from .storage import local_copy


def decode_object_pieces(source: SourceFile, decode: Callable[[SourceFile], Iterator]) -> Iterator:
    """``decode`` (the reader's ``decode_pieces`` with its options bound) run on a local copy of
    ``source``'s object; every piece names the object, not the copy. A failed download is the
    file's one-line failure, like any unreadable file."""
    from ..indexer.reader import DecodedFile

    try:
        with local_copy(source.path) as local:  # type: ignore[arg-type]
            for piece in decode(dataclasses.replace(source, path=local)):
                piece.source = source
                yield piece
    except OSError as exc:
        reason = (exc.strerror or str(exc)).splitlines()[0]
        yield DecodedFile(source, error=f"cannot read the object ({reason})", complete=True)
