"""Find the files to index under the given paths and sort them by content kind.

Audio and image files are recognised by extension; a `.txt` file is a text document unless it is a
sidecar `NAME.txt` beside an audio or image file `NAME.ext`, which becomes that file's caption. A
captions manifest (CSV or JSONL with `path` and `caption` and/or `labels`) attaches captions and
labels in bulk and wins over sidecars. Directory symlinks are followed once: a loop is detected by
the (device, inode) of every directory entered.

Nothing here stops a run: a path that cannot be used (a symlink loop, a dangling symlink, a FIFO,
socket or device, a folder named like a media file) is reported as one failed path with its kind,
and the walk goes on. Paths are reported in their stored form (see :mod:`.paths`), so a name that
is not valid UTF-8 prints and logs without error.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..audio import AUDIO_EXTENSIONS
from ..image import IMAGE_EXTENSIONS
from ..store.schema import MODALITIES
from .paths import display_path

if TYPE_CHECKING:
    from ..fsio import ObjectPath

TEXT_EXTENSIONS = (".txt",)
MAX_TEXT_BYTES = 1_000_000  # a text document larger than this is not a caption-like document


@dataclass
class SourceFile:
    """A file to index with what is known before decoding it."""

    path: Path
    modality: str
    size: int
    mtime: float
    caption: str | None = None
    labels: list[str] = field(default_factory=list)
    known_sha256: str | None = None  # content hash stored for this path by an earlier run
    caption_source: str | None = None  # "sidecar", "manifest" or None
    stored: bool = False  # the store holds rows of this path from an earlier run


@dataclass
class Discovery:
    files: dict[str, list[SourceFile]]
    skipped: list[tuple[str, str]]  # (path, reason): not indexable, reported

    def count(self) -> int:
        return sum(len(v) for v in self.files.values())


def modality_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return "audio"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in TEXT_EXTENSIONS:
        return "text"
    return None


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory"))


def unusable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a file ("not a regular file: FIFO", "symlink loop" ...), or
    ``None`` for a regular file (symlinks followed)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if exc.errno == errno.ENOENT:
            return "dangling symlink" if os.path.islink(path) else "no such file or folder"
        return f"cannot stat ({exc.strerror})"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "special file")
    return f"not a regular file: {kind}"


#: A captions manifest's entries: a file's key (:func:`manifest_key`) -> (caption, labels).
CaptionEntries = dict[str, tuple[str | None, list[str]]]


def manifest_key(path: Path | ObjectPath) -> str:
    """How a discovered file is looked up in a captions manifest: its resolved local path, or its URI."""
    return str(path)


def read_captions_manifest(manifest: str | os.PathLike[str] | ObjectPath) -> CaptionEntries:
    """CSV/TSV/JSONL/JSON with `path` and `caption` and/or `labels`, on disk or in a bucket.

    A `path` may be absolute, an object URI (``s3://...``), or relative to the manifest's folder
    (its prefix, for a manifest in a bucket). Labels are a JSON list or 'a;b' (the dataset
    manifests' format, read by the same code).
    """
    from ..datasets.manifest import parse_records, split_list
    from ..fsio import input_path, is_object_path, is_object_uri

    where = input_path(manifest)
    columns, records = parse_records(_manifest_bytes(where), where.suffix, where)
    if "path" not in columns:
        raise ValueError(f"{where}: needs a 'path' column (found: {', '.join(columns)})")
    if not {"caption", "labels"} & set(columns):
        raise ValueError(f"{where}: needs a 'caption' or 'labels' column")
    out: CaptionEntries = {}
    for line, row in records:
        entry = str(row.get("path") or "")
        if not entry:
            raise ValueError(f"{where}, line {line}: empty 'path'")
        if is_object_uri(entry) or os.path.isabs(entry):
            target = input_path(entry)
        elif is_object_path(where):
            target = input_path(f"{where.parent.uri}/{posixpath.normpath(entry)}")
        else:
            target = input_path(where.parent / entry)
        caption = row.get("caption")
        caption = " ".join(str(caption).split()) or None if caption is not None else None
        out[manifest_key(target)] = (caption, split_list(row.get("labels"), f"{where}, line {line}"))
    return out


def _manifest_bytes(where: Path | ObjectPath) -> bytes:
    from ..fsio import is_object_path
    from ..fsio.storage import read_bytes

    try:
        return read_bytes(where) if is_object_path(where) else where.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: captions manifest not found") from None
    except OSError as exc:
        raise FileNotFoundError(f"{where}: captions manifest cannot be read ({exc.strerror or exc})") from None


def with_captions(sidecar: str | None, entry: tuple[str | None, list[str]] | None,
                  ) -> tuple[str | None, list[str], str | None]:
    """(caption, labels, source) of a file: a manifest caption wins over a sidecar, labels come from
    the manifest; source is "manifest", "sidecar" or None."""
    caption, labels, source = sidecar, [], "sidecar" if sidecar is not None else None
    if entry is not None:
        m_caption, labels = entry
        if m_caption:
            caption, source = m_caption, "manifest"
        source = source or "manifest"
    return caption, labels, source


def _walk(root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    found: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as exc:
            skipped.append((display_path(folder), f"cannot open folder ({exc.strerror})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # a symlink loop or a second link to a folder already walked
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((display_path(folder), f"cannot list folder ({exc.strerror})"))
            continue
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(Path(entry.path))
                    if modality_of(Path(entry.name)) is not None:  # walked, but not the file it names
                        skipped.append((display_path(entry.path), "not a regular file: directory"))
                elif entry.is_file(follow_symlinks=True):
                    found.append(Path(entry.path))
                elif modality_of(Path(entry.name)) is not None:
                    skipped.append((display_path(entry.path), unusable_reason(entry.path) or "unreadable"))
            except OSError as exc:
                reason = unusable_reason(entry.path) or f"cannot stat ({exc.strerror})"
                skipped.append((display_path(entry.path), reason))
        stack.extend(reversed(subdirs))
    return found


def discover(paths: list[Path | ObjectPath], captions_manifest: str | os.PathLike[str] | ObjectPath | None = None,
             ) -> Discovery:
    """Walk `paths` (files or folders, recursively; object-store prefixes too) and return the
    indexable files by modality, with the captions of sidecars and of the manifest attached."""
    from ..fsio import is_object_path  # object-store prefixes (s3://, gs://, az://): see fsio

    manifest = read_captions_manifest(captions_manifest) if captions_manifest else {}
    found = _discover_local([p for p in paths if not is_object_path(p)], manifest)
    objects = [p for p in paths if is_object_path(p)]
    if objects:
        from ..fsio.discover import discover_objects

        discover_objects(objects, into=found, manifest=manifest)
    return found


def _discover_local(paths: list[Path], manifest: CaptionEntries) -> Discovery:
    skipped: list[tuple[str, str]] = []
    candidates: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        reason = unusable_reason(p)
        if reason is None:
            candidates.append(p)
        elif reason == "not a regular file: directory":
            candidates.extend(_walk(p, skipped))
        else:
            skipped.append((display_path(p), reason))
    resolved = {}
    for path in candidates:
        real = Path(os.path.realpath(path))  # never raises, even on a loop
        resolved.setdefault(real, path)  # the same file reached twice is indexed once
    media_stems = {
        real.with_suffix("") for real in resolved if modality_of(real) in ("audio", "image")
    }
    files: dict[str, list[SourceFile]] = {m: [] for m in MODALITIES}
    sidecars: dict[Path, str] = {}
    for real in sorted(resolved):
        kind = modality_of(real)
        if kind == "text" and real.with_suffix("") in media_stems:
            sidecars[real.with_suffix("")] = _read_sidecar(real, skipped)
    for real in sorted(resolved):
        kind = modality_of(real)
        if kind is None:
            continue  # not a media file: silently ignored, like any file browser would
        if kind == "text" and real.with_suffix("") in media_stems:
            continue
        try:
            st = real.stat()
        except OSError as exc:
            skipped.append((display_path(real), f"cannot stat ({exc.strerror})"))
            continue
        caption, labels, source = with_captions(sidecars.get(real.with_suffix("")) or None,
                                                manifest.get(manifest_key(real)))
        files[kind].append(SourceFile(real, kind, st.st_size, st.st_mtime, caption, labels, caption_source=source))
    return Discovery(files, skipped)


def _read_sidecar(path: Path, skipped: list[tuple[str, str]]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        skipped.append((display_path(path), f"caption sidecar unreadable ({exc.strerror})"))
        return None
    return " ".join(text.split()) or None
