"""What the store says about each file beyond its content: caption, where it came from, labels.

A caption sidecar (``NAME.txt``) or a captions manifest is part of a file's state: when the
sidecar is edited or deleted, the stored caption must follow even though the media file did not
change. A run without ``--captions`` cannot see manifest captions, so those (recorded with
``caption_source = "manifest"``) are kept as they are; so are captions of unknown origin written
before ``caption_source`` existed, when no sidecar is present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .discover import SourceFile

_COLUMNS = ("path", "caption", "caption_source", "labels")


@dataclass(frozen=True)
class CaptionState:
    caption: str | None
    source: str | None
    labels: tuple[str, ...]


def stored_captions(store: Any, modality: str) -> dict[str, CaptionState]:
    """``{stored path: CaptionState}`` for every file of ``modality`` (first row of each file)."""
    snap = store.snapshot(modality)
    if snap is None:
        return {}
    columns = [c for c in _COLUMNS if c in snap.schema.names]
    out: dict[str, CaptionState] = {}
    for batch in snap.scan(columns):
        data = {c: batch.column(c).to_pylist() for c in columns}
        for i, path in enumerate(data["path"]):
            if path not in out:
                source = data["caption_source"][i] if "caption_source" in data else None
                out[path] = CaptionState(data["caption"][i], source, tuple(data["labels"][i] or ()))
    return out


def settle_caption(source: SourceFile, stored: CaptionState | None, have_manifest: bool) -> bool:
    """Set ``source``'s caption, labels and caption source to what should be stored now; returns
    True when that differs from ``stored`` (so an unchanged file still needs its rows updated)."""
    if stored is not None and not have_manifest:
        source.labels = list(stored.labels)  # labels only ever come from a manifest
        keep = stored.source == "manifest" or (stored.source is None and stored.caption is not None
                                               and source.caption is None)
        if keep:
            source.caption, source.caption_source = stored.caption, stored.source
    if stored is None:
        return False
    return (source.caption, source.caption_source, tuple(source.labels)) != (
        stored.caption, stored.source, stored.labels)
