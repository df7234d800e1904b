"""Uploaded query files: type checks (415), a size limit (413), a temp file deleted after use.

Only the extension of the client's file name is used (the decoders pick a backend by it); the name
itself never becomes a path. A name with a directory part or ``..`` is refused outright.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..image import IMAGE_EXTENSIONS
from .errors import ApiError

# Content types a browser or client may send for a file of the right kind besides audio/* / image/*.
_NEUTRAL_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_AUDIO_EXTRA_TYPES = {"application/ogg", "video/ogg", "video/webm", "video/mp4", "video/x-ms-asf",
                      "application/vnd.ms-asf"}
KINDS = {
    "audio": (AUDIO_EXTENSIONS, "audio/", _AUDIO_EXTRA_TYPES),
    "image": (IMAGE_EXTENSIONS, "image/", set()),
}


def check_upload(kind: str, filename: str | None, content_type: str | None) -> str:
    """Return the lower-case extension to give the temp file, or raise ApiError 400/415."""
    extensions, prefix, extra = KINDS[kind]
    name = filename or ""
    if "/" in name or "\\" in name or "\x00" in name or name.strip() in (".", ".."):
        raise ApiError(400, f"the uploaded {kind} file name must be a plain file name")
    suffix = Path(name).suffix.lower()
    if suffix not in extensions:
        shown = suffix or "no extension"
        raise ApiError(415, f"unsupported {kind} file type ({shown}): use one of {', '.join(extensions)}")
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if not (ctype.startswith(prefix) or ctype in _NEUTRAL_TYPES or ctype in extra):
        raise ApiError(415, f"the {kind} upload was sent as {ctype!r}, which is not {prefix}*")
    return suffix


def save_upload(source, suffix: str, max_bytes: int, tmp_dir: str | None = None) -> Path:  # noqa: ANN001
    """Copy a file-like upload to a new temp file, refusing (413) past ``max_bytes``."""
    fd, name = tempfile.mkstemp(prefix="acsearch-query-", suffix=suffix, dir=tmp_dir)
    path = Path(name)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(256 * 1024):
                written += len(chunk)
                if written > max_bytes:
                    raise ApiError(413, f"uploaded file too large: the limit is {max_bytes / 1024 / 1024:.4g} MiB")
                out.write(chunk)
        if written == 0:
            raise ApiError(400, "the uploaded file is empty")
        return path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def temp_files() -> Iterator[list[Path]]:
    """Collects temp paths and deletes them all on exit, whatever happened."""
    paths: list[Path] = []
    try:
        yield paths
    finally:
        for p in paths:
            with contextlib.suppress(OSError):
                p.unlink()
