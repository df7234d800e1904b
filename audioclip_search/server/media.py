"""Serving indexed files: byte ranges (RFC 9110) through Starlette's ``FileResponse``, and in-memory
LRU thumbnails.

``FileResponse`` does the streaming, ``ETag``/``Last-Modified`` and the 206 answer; which range to
serve is decided here so the behaviour stays ours: ``Accept-Ranges: bytes`` always, one range per
request (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) answered with 206 and ``Content-Range``, an
unsatisfiable range with a JSON 416 and ``Content-Range: bytes */size``, several ranges or a
malformed header answered with the whole file (200, which RFC 9110 allows; Starlette would send
multipart/byteranges or a plain-text 400), ``If-Range`` honoured.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlparse

from PIL import Image, ImageOps
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .. import fsio
from ..fsio import ObjectPath, is_object_uri
from ..image import to_rgb

CHUNK = 64 * 1024

CONTENT_TYPES: dict[str, str] = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".aiff": "audio/aiff",
    ".aif": "audio/aiff",
    ".wma": "audio/x-ms-wma",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".txt": "text/plain; charset=utf-8",
}


def content_type_for(path: str | Path | ObjectPath) -> str:
    return CONTENT_TYPES.get(os.path.splitext(str(path))[1].lower(), "application/octet-stream")


def local_file(stored_path: str) -> Path | ObjectPath | None:
    """The file a stored ``path`` names (an absolute path, a ``file://`` URI, or an object-store URI
    such as ``s3://bucket/key``, read through :mod:`audioclip_search.fsio`), else None."""
    if not stored_path:
        return None
    if stored_path.startswith("file://"):
        parsed = urlparse(stored_path)
        if parsed.netloc not in ("", "localhost"):
            return None
        stored_path = os.fsdecode(unquote_to_bytes(parsed.path))  # lossless for non-UTF-8 names
    elif "://" in stored_path:
        return ObjectPath(stored_path) if is_object_uri(stored_path) else None
    path = Path(stored_path)
    return path if path.is_absolute() else None


def _stat(path: Path | ObjectPath) -> tuple[int, int]:
    """(size, mtime in ns) of a local file or an object."""
    if isinstance(path, ObjectPath):
        info = fsio.file_info(path)
        return info.size, int(info.mtime * 1e9)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _open(path: Path | ObjectPath):  # noqa: ANN202 - a seekable binary file
    return fsio.open_object(path) if isinstance(path, ObjectPath) else open(path, "rb")  # noqa: SIM115


# ---------------------------------------------------------------------------------------- ranges
def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """One satisfiable byte range ``(first, last)`` inclusive; ``None`` = serve the whole file
    (no header, a malformed one, another unit, or several ranges); ``"unsatisfiable"`` = 416."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if len(parts) != 1:
        return None
    first_s, dash, last_s = parts[0].partition("-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()) or not (first_s or last_s):
        return None
    if not first_s:  # suffix range: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # malformed: ignore the header
    if first >= size:
        return "unsatisfiable"
    return first, min(last, size - 1)


class _OneRangeFileResponse(FileResponse):
    """Starlette's ``FileResponse`` serving exactly the range decided by :func:`file_response`
    (none: the whole file), whatever ``Range`` / ``If-Range`` the request carried."""

    def __init__(self, path: Path, byte_range: tuple[int, int] | None, **kwargs: object):
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self._byte_range = byte_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"range", b"if-range")]
        if self._byte_range is not None:
            headers.append((b"range", f"bytes={self._byte_range[0]}-{self._byte_range[1]}".encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)


def _unsatisfiable(size: int) -> Response:
    from .errors import error_response

    return error_response(416, f"range not satisfiable (the file has {size} bytes)",
                          {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})


def _object_response(path: ObjectPath, range_header: str | None, if_range: str | None, method: str,
                     media_type: str | None) -> Response:
    """An object in a bucket, streamed through :mod:`~audioclip_search.fsio` with the same range rules."""
    size, mtime_ns = _stat(path)
    etag, last_modified = f'"{size:x}-{mtime_ns:x}"', formatdate(mtime_ns / 1e9, usegmt=True)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": last_modified,
               "Cache-Control": "private, max-age=300"}
    wanted = parse_range(range_header, size)
    if wanted is not None and if_range and if_range.strip() not in (etag, last_modified):
        wanted = None
    if wanted == "unsatisfiable":
        return _unsatisfiable(size)
    first, last = (0, size - 1) if wanted is None else wanted
    length = max(0, last - first + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    def chunks():  # noqa: ANN202
        if method == "HEAD":
            return
        with _open(path) as fh:
            fh.seek(first)
            left = length
            while left > 0 and (data := fh.read(min(CHUNK, left))):
                left -= len(data)
                yield data

    return StreamingResponse(chunks(), status_code=status, headers=headers,
                             media_type=media_type or content_type_for(path))


def file_response(path: Path | ObjectPath, range_header: str | None, if_range: str | None = None, *,
                  method: str = "GET", media_type: str | None = None) -> Response:
    """Serve ``path`` (whole or one range): Starlette's ``FileResponse`` for local files.

    The range is decided here (see :func:`parse_range`): one range -> 206, several or a malformed
    header -> the whole file, unsatisfiable -> a JSON 416. Raises FileNotFoundError /
    IsADirectoryError / PermissionError when the file cannot be served (checked before answering).
    """
    if isinstance(path, ObjectPath):
        return _object_response(path, range_header, if_range, method, media_type)
    with open(path, "rb") as fh:  # readable now (permissions), and a regular file
        st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise IsADirectoryError(str(path))
    response = _OneRangeFileResponse(path, None, stat_result=st, media_type=media_type or content_type_for(path),
                                     headers={"Cache-Control": "private, max-age=300"})
    wanted = parse_range(range_header, st.st_size)
    validators = (response.headers.get("etag"), response.headers.get("last-modified"))
    if wanted is not None and if_range and if_range.strip() not in validators:
        wanted = None  # the client's copy is stale: send the whole (new) file
    if wanted == "unsatisfiable":
        return _unsatisfiable(st.st_size)
    response._byte_range = wanted  # type: ignore[assignment]
    return response


# ---------------------------------------------------------------------------------------- thumbnails
@dataclass(frozen=True)
class Thumbnail:
    data: bytes
    media_type: str
    etag: str


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


def make_thumbnail(path: Path, size: int, fmt: str = "auto", max_pixels: int = 200_000_000) -> Thumbnail:
    """Fit ``path`` in a ``size`` square, EXIF orientation applied. ``fmt``: ``auto`` (PNG when the
    picture has transparency, else JPEG), ``jpeg`` or ``png``. Undecodable or huge pictures raise
    ``ValueError``; a missing file ``FileNotFoundError``."""
    try:
        return _make_thumbnail(path, size, fmt, max_pixels)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable picture ({' '.join(str(exc).split())[:200]})") from None


def _make_thumbnail(path: Path, size: int, fmt: str, max_pixels: int) -> Thumbnail:
    with _open(path) as fh, Image.open(fh) as img:
        if img.size[0] * img.size[1] > max_pixels:
            raise ValueError(f"image too large ({img.size[0]}x{img.size[1]} pixels)")
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        alpha = _has_alpha(img)
        fmt = ("png" if alpha else "jpeg") if fmt == "auto" else fmt
        img = img.convert("RGBA" if alpha else "RGB") if fmt == "png" else to_rgb(img)
        img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        if fmt == "png":
            img.save(out, "PNG", optimize=True)
        else:
            img.save(out, "JPEG", quality=85, optimize=True, progressive=True)
    data = out.getvalue()
    return Thumbnail(data, f"image/{fmt}", '"' + hashlib.sha1(data).hexdigest()[:20] + '"')


class ThumbnailCache:
    """Thread-safe LRU of encoded thumbnails bounded by item count and total bytes.

    Keys include the file's size and mtime, so a changed file gets a fresh thumbnail.
    """

    def __init__(self, max_items: int = 512, max_bytes: int = 64 * 1024 * 1024):
        self.max_items = max(1, int(max_items))
        self.max_bytes = max(1, int(max_bytes))
        self._items: OrderedDict[tuple, Thumbnail] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path, size: int, fmt: str, max_pixels: int = 200_000_000) -> Thumbnail:
        key = (str(path), *_stat(path), size, fmt)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        thumb = make_thumbnail(path, size, fmt, max_pixels)  # outside the lock: may be slow
        with self._lock:
            if key not in self._items and len(thumb.data) <= self.max_bytes:
                self._items[key] = thumb
                self._bytes += len(thumb.data)
                while len(self._items) > self.max_items or self._bytes > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= len(old.data)
        return thumb

    def stats(self) -> dict:
        with self._lock:
            return {"items": len(self._items), "bytes": self._bytes, "hits": self.hits, "misses": self.misses}
