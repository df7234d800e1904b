"""Fetching checkpoints into the cache: resumable, checksummed, locked, and honest when offline.

A download streams to `<cache>/<filename>.part`, resumes from the partial size with an HTTP Range
request (falling back to a fresh start when the server ignores Range), is verified by sha256 over
the complete file, and only then is moved to its final name with `os.replace`. A
`<filename>.sha256` marker records a verified hash so later loads need only compare sizes.

Only the standard library is used (urllib); nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._version import __version__
from ..errors import CheckpointError
from ..fileio import atomic_write_text, fsync_dir
from ..progress import make_progress
from .registry import REGISTRY, CheckpointEntry, cached_path, get_entry, is_offline

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

PathLike = str | os.PathLike[str]

_CHUNK = 1 << 20
_HASH_CHUNK = 8 << 20
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


# --------------------------------------------------------------------------------------------
# messages


def missing_message(entry: CheckpointEntry, dest: Path, reason: str) -> str:
    """One line that says exactly which file to put where: the fix for offline machines."""
    return (
        f"{reason}: put {entry.filename} ({entry.size} bytes, sha256 {entry.sha256}) at "
        f"{Path(dest).absolute()} -- download it from {entry.url}"
    )


# --------------------------------------------------------------------------------------------
# hashing and the .sha256 marker


def marker_path(path: PathLike) -> Path:
    """`<file>.sha256`: the verified hash of `<file>`, valid while its size and mtime are unchanged."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _hash_file(path: Path, limit: int | None = None) -> hashlib._Hash:
    """sha256 of the file (or of its first `limit` bytes)."""
    hasher = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            want = _HASH_CHUNK if remaining is None else min(_HASH_CHUNK, remaining)
            block = f.read(want)
            if not block:
                break
            hasher.update(block)
            if remaining is not None:
                remaining -= len(block)
    return hasher


def read_marker(path: PathLike) -> str | None:
    """The hash recorded for `path`, or None when there is no marker or the file changed since."""
    path = Path(path)
    try:
        data = json.loads(marker_path(path).read_text(encoding="utf-8"))
        st = path.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    digest = data.get("sha256")
    if data.get("size") != st.st_size or data.get("mtime_ns") != st.st_mtime_ns:
        return None
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None
    return digest


def write_marker(path: PathLike, digest: str) -> None:
    """Record a verified hash next to the file; best effort (a read-only folder is not an error)."""
    path = Path(path)
    marker = marker_path(path)
    try:
        st = path.stat()
        payload = {"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "file": path.name}
        atomic_write_text(marker, json.dumps(payload) + "\n")
    except OSError:
        pass


def _drop_marker(path: Path) -> None:
    with contextlib.suppress(OSError):
        marker_path(path).unlink()


def checkpoint_sha256(path: PathLike, *, use_marker: bool = True, write: bool = False) -> str:
    """sha256 of a file: taken from its valid `.sha256` marker when present, else computed.

    `write=True` records a marker after computing (do that only once the hash is known good).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if use_marker:
        recorded = read_marker(path)
        if recorded is not None:
            return recorded
    try:
        digest = _hash_file(path).hexdigest()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if write:
        write_marker(path, digest)
    return digest


# --------------------------------------------------------------------------------------------
# name-or-path resolution


def _lookup(
    name_or_path: str | PathLike | CheckpointEntry,
    registry: Mapping[str, CheckpointEntry] | None,
) -> tuple[CheckpointEntry | None, Path | None]:
    """(entry, None) for a registered name, (None, path) for a local file; errors otherwise.

    A registered name wins over a file of the same name in the working directory unless the
    argument is a Path or is spelled like a path (has a folder part or a checkpoint suffix).
    """
    if isinstance(name_or_path, CheckpointEntry):
        return name_or_path, None
    if isinstance(name_or_path, os.PathLike):
        path = Path(name_or_path).expanduser()
        return None, path
    text = str(name_or_path)
    looks_like_path = os.sep in text or "/" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)
    table = REGISTRY if registry is None else registry
    if not looks_like_path and text in table:
        return table[text], None
    path = Path(text).expanduser()
    if path.exists() or looks_like_path:
        return None, path
    get_entry(text, registry)  # raises the "unknown checkpoint" error listing the known names
    raise AssertionError("unreachable")


def _entry_for_file(path: Path, registry: Mapping[str, CheckpointEntry] | None) -> CheckpointEntry | None:
    """The registry entry whose filename is this file's name, if exactly one matches."""
    table = REGISTRY if registry is None else registry
    matches = [e for e in table.values() if e.filename == path.name]
    return matches[0] if len(matches) == 1 else None


def _check_cached(entry: CheckpointEntry, dest: Path) -> Path:
    """A cached file must have the registered size (cheap, every load) and, once, the registered
    sha256 (then recorded in the marker so it is never hashed again)."""
    size = dest.stat().st_size
    if size != entry.size:
        raise CheckpointError(
            f"cached checkpoint {dest} has {size} bytes, expected {entry.size}: it is incomplete or "
            f"not {entry.filename}; delete it and run `acsearch weights download {entry.name}`"
        )
    digest = read_marker(dest)
    if digest is None:
        digest = checkpoint_sha256(dest, use_marker=False)
        if digest == entry.sha256:
            write_marker(dest, digest)
    if digest != entry.sha256:
        raise CheckpointError(
            f"cached checkpoint {dest} has sha256 {digest}, expected {entry.sha256}: delete it and "
            f"run `acsearch weights download {entry.name}`"
        )
    return dest


def resolve_checkpoint(
    name_or_path: str | PathLike | CheckpointEntry = "audioclip-full",
    cache_dir: PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: bool = True,
    registry: Mapping[str, CheckpointEntry] | None = None,
    timeout: float = 30.0,
    retries: int = 2,
) -> Path:
    """A local file for a registered name (downloaded on first use) or an existing local path."""
    entry, path = _lookup(name_or_path, registry)
    if entry is None:
        assert path is not None
        if not path.is_file():
            what = "is a folder, not a checkpoint file" if path.is_dir() else "no such file"
            raise CheckpointError(f"{path.absolute()}: {what}")
        return path
    dest = cached_path(entry, cache_dir)
    if dest.is_file():
        return _check_cached(entry, dest)
    return download_checkpoint(entry, cache_dir, offline=offline, progress=progress,
                               timeout=timeout, retries=retries)


# --------------------------------------------------------------------------------------------
# locking and progress


@contextlib.contextmanager
def _file_lock(path: Path, quiet: bool) -> Iterator[None]:
    """An exclusive fcntl lock on `path` (created if needed); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another process downloading into {path.parent} ({path.name})",
                      file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class _Bar:
    """What the transfer reports to: the shared progress display's task for this file."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def set(self, completed: int) -> None:
        self._progress.update(self._task, completed=completed)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


@contextlib.contextmanager
def _progress_bar(entry: CheckpointEntry, enabled: bool) -> Iterator[_Bar]:
    with make_progress("bytes", quiet=not enabled) as progress:
        yield _Bar(progress, progress.add_task(entry.filename, total=entry.size))


# --------------------------------------------------------------------------------------------
# the transfer


class _Retryable(Exception):
    """A network hiccup: try again, resuming from what is on disk."""


class _Fatal(Exception):
    """The server answered, but not with this file: retrying will not help."""


class _Restart(Exception):
    """The partial file cannot be resumed; it was deleted and the next attempt starts at 0."""


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _Transfer:
    """Streams one entry into its .part file, keeping a running sha256 of what is on disk."""

    def __init__(self, entry: CheckpointEntry, part: Path, *, timeout: float, chunk_size: int, bar) -> None:
        self.entry = entry
        self.part = part
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.bar = bar
        self.hasher = hashlib.sha256()
        self.hashed = 0

    def _sync_hash(self, start: int) -> None:
        """Make the running hash cover exactly the first `start` bytes of the .part file."""
        if self.hashed != start:
            self.hasher = _hash_file(self.part, limit=start) if start else hashlib.sha256()
            self.hashed = start

    def _open(self, start: int):
        headers = {"User-Agent": f"audioclip-search/{__version__}", "Accept-Encoding": "identity"}
        if start > 0:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(self.entry.url, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and start > 0:
                self.part.unlink(missing_ok=True)
                raise _Restart(f"HTTP 416 for the range from byte {start}") from None
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
            raise _Fatal(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise _Retryable(_describe(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(_describe(exc)) from None

    def attempt(self) -> None:
        """One request: resume from the .part size, stream to EOF. Raises on any interruption."""
        size = self.entry.size
        start = self.part.stat().st_size if self.part.exists() else 0
        if start > size:
            self.part.unlink()
            start = 0
        if start == size:
            return
        response = self._open(start)
        with response:
            status = response.status
            if status == 206:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != start:
                    self.part.unlink(missing_ok=True)
                    raise _Restart(f"the server sent a range other than bytes {start}-")
                if match.group(3) != "*" and int(match.group(3)) != size:
                    raise _Fatal(f"the server has {match.group(3)} bytes, expected {size}")
                mode = "ab"
            elif status == 200:
                # No Range sent, or the server ignored it: the body is the whole file.
                start = 0
                mode = "wb"
                length = response.headers.get("Content-Length")
                if length is not None and length.isdigit() and int(length) != size:
                    raise _Fatal(f"the server offers {length} bytes, expected {size}")
            else:
                raise _Fatal(f"unexpected HTTP status {status}")
            self._sync_hash(start)
            self.bar.set(start)
            written = start
            with open(self.part, mode) as out:
                while True:
                    try:
                        block = response.read(self.chunk_size)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(f"connection lost after {written} of {size} bytes "
                                         f"({_describe(exc)})") from None
                    if not block:
                        break
                    if written + len(block) > size:
                        raise _Fatal(f"the server sent more than the expected {size} bytes")
                    out.write(block)  # a local OSError (disk full) is not retried
                    self.hasher.update(block)
                    written += len(block)
                    self.hashed = written
                    self.bar.advance(len(block))
                out.flush()
                os.fsync(out.fileno())  # on disk before it is renamed into place
        if written < size:
            raise _Retryable(f"connection closed after {written} of {size} bytes")


def _describe(exc: object) -> str:
    if isinstance(exc, http.client.IncompleteRead):
        return "incomplete read"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    return text or type(exc).__name__


def download_checkpoint(
    name_or_entry: str | CheckpointEntry = "audioclip-full",
    cache_dir: PathLike | None = None,
    *,
    offline: bool | None = None,
    progress: bool = True,
    force: bool = False,
    timeout: float = 30.0,
    retries: int = 2,
    registry: Mapping[str, CheckpointEntry] | None = None,
    chunk_size: int = _CHUNK,
) -> Path:
    """Make sure the checkpoint is in the cache, verified, and return its path.

    A cached file with the right size and hash is returned at once (no network). Otherwise the
    file is fetched (resuming a .part left by an interrupted run), verified by sha256, and moved
    into place atomically. `offline` (or ACSEARCH_OFFLINE=1) forbids any network access; then, as
    after a network failure, the CheckpointError says which file to put where.
    """
    entry = name_or_entry
    if not isinstance(entry, CheckpointEntry):
        entry = get_entry(entry, registry)
    dest = cached_path(entry, cache_dir).absolute()

    def cached_ok() -> bool:
        if not dest.is_file():
            return False
        try:
            _check_cached(entry, dest)
        except CheckpointError:
            return False
        return True

    if not force and cached_ok():
        return dest
    if is_offline(offline):
        reason = (f"checkpoint {entry.name!r} is not in the cache and offline mode is on"
                  if not dest.exists() else
                  f"the cached {entry.filename} is damaged and offline mode is on")
        raise CheckpointError(missing_message(entry, dest, reason))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(
            f"cannot create the checkpoint cache folder {dest.parent} ({exc.strerror or exc}); "
            f"set ACSEARCH_CACHE_DIR or pass a cache dir"
        ) from None

    lock = dest.with_name(dest.name + ".lock")
    part = dest.with_name(dest.name + ".part")
    try:
        with _file_lock(lock, quiet=not progress):
            if not force and cached_ok():  # another process finished it while we waited
                return dest
            _check_free_space(entry, part)
            digest = _fetch(entry, dest, part, progress=progress, timeout=timeout, retries=retries,
                            chunk_size=chunk_size)
            if digest != entry.sha256:
                part.unlink(missing_ok=True)
                raise CheckpointError(
                    f"checksum mismatch for {entry.filename} downloaded from {entry.url}: expected sha256 "
                    f"{entry.sha256}, got {digest}; the download was deleted, try again"
                )
            os.replace(part, dest)
            fsync_dir(dest.parent)
            write_marker(dest, digest)
    except OSError as exc:  # local trouble: permissions, a full disk, a vanished folder
        where = exc.filename or dest.parent
        raise CheckpointError(
            f"cannot write the checkpoint {entry.filename} into {dest.parent}: {where}: "
            f"{exc.strerror or exc}"
        ) from None
    return dest


def _check_free_space(entry: CheckpointEntry, part: Path) -> None:
    have = part.stat().st_size if part.is_file() else 0
    need = entry.size - have
    try:
        free = shutil.disk_usage(part.parent).free
    except OSError:
        return
    if free < need:
        raise CheckpointError(
            f"not enough disk space in {part.parent} for {entry.filename}: {need / 1e6:.1f} MB needed, "
            f"{free / 1e6:.1f} MB free; free some space or set ACSEARCH_CACHE_DIR"
        )


def _fetch(entry: CheckpointEntry, dest: Path, part: Path, *, progress: bool, timeout: float,
           retries: int, chunk_size: int) -> str:
    """Bring `part` to the full size (with retries and resumes); return its sha256."""
    with _progress_bar(entry, progress) as bar:
        transfer = _Transfer(entry, part, timeout=timeout, chunk_size=chunk_size, bar=bar)
        failures = restarts = 0
        while True:
            try:
                transfer.attempt()
                break
            except _Restart:
                restarts += 1
                if restarts > 2:
                    raise CheckpointError(missing_message(
                        entry, dest, f"downloading {entry.name!r} failed (the server cannot resume)"
                    )) from None
            except _Retryable as exc:
                failures += 1
                if failures > retries:
                    raise CheckpointError(missing_message(
                        entry, dest, f"downloading {entry.name!r} from {entry.url} failed ({exc})"
                    )) from None
                time.sleep(min(0.25 * 2 ** (failures - 1), 2.0))
            except _Fatal as exc:
                part.unlink(missing_ok=True)
                raise CheckpointError(missing_message(
                    entry, dest, f"downloading {entry.name!r} from {entry.url} failed ({exc})"
                )) from None
    transfer._sync_hash(part.stat().st_size)
    return transfer.hasher.hexdigest()


# --------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a full sha256 check. `ok` is None when there was nothing to compare with."""

    path: Path
    size: int
    sha256: str
    expected_sha256: str | None
    expected_size: int | None
    entry: CheckpointEntry | None

    @property
    def ok(self) -> bool | None:
        if self.expected_sha256 is None:
            return None
        size_ok = self.expected_size is None or self.expected_size == self.size
        return size_ok and self.sha256 == self.expected_sha256


def verify_checkpoint(
    name_or_path: str | PathLike | CheckpointEntry,
    cache_dir: PathLike | None = None,
    *,
    expected_sha256: str | None = None,
    registry: Mapping[str, CheckpointEntry] | None = None,
) -> VerifyResult:
    """Hash the whole file (ignoring any marker) and compare it with the registry or `expected_sha256`.

    A registered name checks its cached file (never downloads). A path is compared with the entry
    of the same file name, if any. A good result refreshes the marker; a bad one removes it.
    """
    entry, path = _lookup(name_or_path, registry)
    if entry is not None:
        path = cached_path(entry, cache_dir).absolute()
        if not path.is_file():
            raise CheckpointError(missing_message(
                entry, path, f"checkpoint {entry.name!r} is not downloaded yet "
                             f"(run `acsearch weights download {entry.name}`)"
            ))
    else:
        assert path is not None
        if not path.is_file():
            raise CheckpointError(f"{path.absolute()}: no such file")
        entry = _entry_for_file(path, registry)
    if expected_sha256:
        expected, expected_size = expected_sha256.strip().lower(), None
    elif entry is not None:
        expected, expected_size = entry.sha256, entry.size
    else:
        expected = expected_size = None
    digest = checkpoint_sha256(path, use_marker=False)
    result = VerifyResult(path=path, size=path.stat().st_size, sha256=digest, expected_sha256=expected,
                          expected_size=expected_size, entry=entry)
    if result.ok:
        write_marker(path, digest)
    elif result.ok is False:
        _drop_marker(path)
    return result
