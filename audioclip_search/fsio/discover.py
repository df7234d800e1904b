"""Discovery under object-store prefixes: the local rules (extensions, ``NAME.txt`` caption
sidecars beside ``NAME.ext``) applied to a listing from ``pyarrow.fs``."""

from __future__ import annotations

from ..indexer.discover import (
    MAX_TEXT_BYTES,
    CaptionEntries,
    Discovery,
    SourceFile,
    manifest_key,
    modality_of,
    with_captions,
)
from .paths import ObjectPath
from .storage import ObjectInfo, list_files, read_bytes


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).splitlines()[0]


def discover_objects(roots: list[ObjectPath], into: Discovery, manifest: CaptionEntries | None = None) -> Discovery:
    """Add the indexable objects under ``roots`` to ``into`` (a local discovery) and return it,
    captions from sidecars and from ``manifest`` (entries keyed by object URI) attached.

    An object reached from two roots is listed once; an unreadable root is reported in
    ``skipped`` and the others go on.
    """
    found: dict[str, ObjectInfo] = {}
    for root in roots:
        try:
            listing = list_files(root)
        except OSError as exc:
            into.skipped.append((str(root), f"cannot list ({_reason(exc)})"))
            continue
        for info in listing:
            found.setdefault(info.path.uri, info)
    infos = [found[k] for k in sorted(found)]
    media_stems = {i.path.with_suffix("").uri for i in infos if modality_of(i.path) in ("audio", "image")}
    sidecars: dict[str, str | None] = {}
    for info in infos:
        stem = info.path.with_suffix("").uri
        if modality_of(info.path) == "text" and stem in media_stems:
            sidecars[stem] = _read_sidecar(info, into.skipped)
    for info in infos:
        kind = modality_of(info.path)
        stem = info.path.with_suffix("").uri
        if kind is None or (kind == "text" and stem in media_stems):
            continue
        caption, labels, source = with_captions(sidecars.get(stem), (manifest or {}).get(manifest_key(info.path)))
        into.files[kind].append(SourceFile(info.path, kind, info.size, info.mtime, caption, labels,  # type: ignore[arg-type]
                                           caption_source=source))
    return into


def _read_sidecar(info: ObjectInfo, skipped: list[tuple[str, str]]) -> str | None:
    try:
        raw = read_bytes(info.path, MAX_TEXT_BYTES)
    except OSError as exc:
        skipped.append((str(info.path), f"caption sidecar unreadable ({_reason(exc)})"))
        return None
    return " ".join(raw.decode("utf-8", errors="replace").split()) or None
