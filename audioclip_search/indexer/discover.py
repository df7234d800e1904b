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
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..image import IMAGE_EXTENSIONS
from ..store.schema import MODALITIES
from .paths import display_path

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


def read_captions_manifest(manifest: Path) -> dict[Path, tuple[str | None, list[str]]]:
    """CSV/TSV/JSONL/JSON with `path` and `caption` and/or `labels` -> resolved path -> (caption, labels).

    Relative paths are relative to the manifest's folder; labels are a JSON list or 'a;b'
    (the dataset manifests' format, read by the same code).
    """
    from ..datasets.manifest import read_records, split_list

    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: captions manifest not found")
    columns, records = read_records(manifest)
    if "path" not in columns:
        raise ValueError(f"{manifest}: needs a 'path' column (found: {', '.join(columns)})")
    if not {"caption", "labels"} & set(columns):
        raise ValueError(f"{manifest}: needs a 'caption' or 'labels' column")
    out: dict[Path, tuple[str | None, list[str]]] = {}
    for line, row in records:
        if not row.get("path"):
            raise ValueError(f"{manifest}, line {line}: empty 'path'")
        path = Path(str(row["path"]))
        path = path if path.is_absolute() else manifest.parent / path
        caption = row.get("caption")
        caption = " ".join(str(caption).split()) or None if caption is not None else None
        out[path.resolve()] = (caption, split_list(row.get("labels"), f"{manifest}, line {line}"))
    return out


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


def discover(paths: list[Path], captions_manifest: Path | None = None) -> Discovery:
    """Walk `paths` (files or folders, recursively) and return the indexable files by modality."""
    from ..fsio import is_object_path  # object-store prefixes (s3://, gs://, az://): see fsio

    if any(is_object_path(p) for p in paths):
        from ..fsio.discover import discover_objects

        local = discover([p for p in paths if not is_object_path(p)], captions_manifest)
        return discover_objects([p for p in paths if is_object_path(p)], into=local)
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
    manifest = read_captions_manifest(captions_manifest) if captions_manifest else {}
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
        caption, labels = sidecars.get(real.with_suffix("")) or None, []
        source = "sidecar" if caption is not None else None
        if real in manifest:
            m_caption, m_labels = manifest[real]
            if m_caption:
                caption, source = m_caption, "manifest"
            labels = m_labels
            source = source or "manifest"
        files[kind].append(SourceFile(real, kind, st.st_size, st.st_mtime, caption, labels, caption_source=source))
    return Discovery(files, skipped)


def _read_sidecar(path: Path, skipped: list[tuple[str, str]]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as exc:
        skipped.append((display_path(path), f"caption sidecar unreadable ({exc.strerror})"))
        return None
    return " ".join(text.split()) or None
