"""Storage failures as one line: the database path and the reason, never a Rust source path.

LanceDB and FAISS report a full disk or a read-only folder as long messages naming their own
source files ("... (os error 28), /home/runner/.cargo/.../local.rs:..."). :func:`storage_errors`
turns any such failure into a :class:`StorageError` "``<db>``: no space left on device", and
:func:`check_writable` finds an unwritable or full database folder before any encoding starts,
not at the first commit after minutes of work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import AudioClipSearchError
from .errors import StoreError

#: A database folder with less free space than this is refused before encoding.
MIN_FREE_BYTES = 16 * 1024 * 1024
_OS_ERROR = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")
_KNOWN = {e: os.strerror(e).lower() for e in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                                               errno.EDQUOT, errno.EIO, errno.ENOTDIR, errno.EEXIST)}


class StorageError(StoreError, AudioClipSearchError):
    """The database cannot be written (or read): read-only, full, no permission, I/O error."""


def storage_reason(exc: BaseException) -> str | None:
    """The OS-level reason behind a storage failure ("no space left on device"), or ``None`` when
    ``exc`` is not one (then it is left to propagate as it is)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).lower()
    text = str(exc)
    match = _OS_ERROR.search(text)
    if match:
        return os.strerror(int(match.group(1) or match.group(2))).lower()
    lowered = text.lower()
    return next((reason for reason in _KNOWN.values() if reason in lowered), None)


@contextlib.contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """Re-raise storage failures inside the block as one-line :class:`StorageError`\\s naming ``uri``."""
    try:
        yield
    except (StorageError, AudioClipSearchError):
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        reason = storage_reason(exc)
        if reason is None:
            raise
        raise StorageError(f"cannot write the database {uri}: {reason}") from None


def _probe(folder: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".acsearch-probe-", dir=folder)
    try:
        os.write(fd, b"x")
        os.fsync(fd)
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)


def check_writable(uri: str) -> None:
    """Raise :class:`StorageError` unless the local database ``uri`` can take writes now.

    Creates the folder if missing, writes and removes a probe file in it and in every table's
    data and version folders, and checks the free space. Object-store URIs are not checked
    (their credentials and permissions show at the first commit).
    """
    if "://" in uri:
        return
    root = Path(uri)
    with storage_errors(uri):
        root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise StorageError(f"cannot write the database {uri}: not a folder")
        folders = [root]
        for table in root.glob("*.lance"):
            folders += [d for d in (table / "_versions", table / "data") if d.is_dir()]
        for folder in folders:
            _probe(folder)
        free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise StorageError(f"cannot write the database {uri}: no space left on device "
                           f"({free // 1024} KiB free, at least {MIN_FREE_BYTES // 2**20} MiB needed)")
