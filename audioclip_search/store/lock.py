"""One writer at a time per local database: an advisory lock file inside the database folder.

Why: two ``acsearch index`` runs on one database (two terminals, a cron job plus a person) would
both encode everything and race on every commit. The lock turns that into a clear message naming
the holder (pid, host, start time, command), or, with ``wait=True``, a queue.

How: ``<db>/.acsearch-writer.lock`` is locked with ``flock(LOCK_EX)``. The kernel drops the lock
when the holder's process ends in any way (exit, crash, ``kill -9``), so a dead holder never
blocks anyone: the next writer takes the lock and overwrites the holder record. Where ``flock``
is not supported (some network filesystems), the lock falls back to creating the file with
``O_EXCL``; such a lock left by a dead process *on this host* is broken (checked with
``kill(pid, 0)``), while one held from another host is reported and never broken.

Object-store databases (``s3://``, ``gs://`` ...) cannot take a local lock, and need none for
correctness: every table's ``id`` column is its primary key (see :mod:`.keys`), so LanceDB's
commit conflict detection sees two concurrent ``merge_insert`` calls inserting the same ids and
retries the later one as an update; rows are never doubled. Two writers then only waste work.

A process may take the lock of one database again inside its own ``with`` (the CLI and the
indexer both take it): the inner take is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import AudioClipSearchError
from .errors import StoreError

LOCK_NAME = ".acsearch-writer.lock"
ENV_NO_LOCK = "ACSEARCH_NO_WRITER_LOCK"  # "1": skip the lock (tests of the commit protocol only)


class DatabaseBusyError(StoreError, AudioClipSearchError):
    """Another process is writing to this database."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a writer lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started} ({self.command})"


def lock_path(db_dir: str | os.PathLike[str]) -> Path:
    """Where the writer lock of the local database ``db_dir`` lives."""
    return Path(db_dir) / LOCK_NAME


def read_holder(path: Path) -> Holder | None:
    """The holder record in a lock file, or ``None`` if absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _me() -> Holder:
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    argv = list(sys.argv) or ["python"]
    program = Path(argv[0]).name
    program = "acsearch" if program in ("acsearch", "__main__.py") else program
    command = " ".join([program, *argv[1:]])[:200]
    return Holder(os.getpid(), socket.gethostname(), now, command)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record(fd: int, holder: Holder) -> None:
    data = json.dumps(holder.__dict__).encode("utf-8") + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


class WriterLock:
    """The writer lock of one local database folder. Use :func:`writer_lock`."""

    def __init__(self, db_dir: str | os.PathLike[str]):
        self.path = lock_path(db_dir)
        self._fd: int | None = None
        self._exclusive_file = False

    def try_acquire(self) -> Holder | None:
        """Take the lock if free; returns ``None`` on success, else the current holder (if known)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return read_holder(self.path) or Holder(0, "?", "?", "unknown process")
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return self._try_exclusive_file()
            raise
        self._fd = fd
        _record(fd, _me())
        return None

    def _try_exclusive_file(self) -> Holder | None:
        """Fallback without flock: the lock is the existence of a file created with O_EXCL."""
        excl = self.path.with_name(self.path.name + ".excl")
        for _ in range(2):
            try:
                fd = os.open(excl, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                holder = read_holder(excl)
                if holder is not None and holder.host == socket.gethostname() and not _pid_alive(holder.pid):
                    with contextlib.suppress(FileNotFoundError):
                        excl.unlink()  # a dead process on this host: break its lock and retry once
                    continue
                return holder or Holder(0, "?", "?", "unknown process")
            self._fd, self._exclusive_file = fd, True
            self.path = excl
            _record(fd, _me())
            return None
        return read_holder(excl) or Holder(0, "?", "?", "unknown process")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._exclusive_file:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# Locks this process holds, by real path of the database: a nested take is a no-op.
_HELD: dict[str, WriterLock] = {}


def busy_message(db: str, holder: Holder) -> str:
    return (f"the database {db} is being written by {holder.describe()}; wait for it to finish, "
            "or pass --wait to queue behind it")


@contextlib.contextmanager
def writer_lock(
    uri: str,
    *,
    wait: bool | float = False,
    on_wait: Callable[[Holder], None] | None = None,
    poll_seconds: float = 0.2,
) -> Iterator[Holder | None]:
    """Hold the writer lock of the database at ``uri`` for the ``with`` block.

    ``uri``: a resolved database URI (:func:`~audioclip_search.store.database.resolve_uri`);
    non-local URIs get no lock (see the module doc) and yield ``None``. ``wait``: ``False`` raises
    :class:`DatabaseBusyError` at once when another process holds it, ``True`` waits for as long
    as it takes, a number waits at most that many seconds. ``on_wait(holder)`` is called once when
    the wait starts (e.g. to print who is being waited for). The folder must exist; an unwritable
    folder raises ``OSError`` (callers turn it into a one-line storage error).
    """
    if "://" in uri or os.environ.get(ENV_NO_LOCK) == "1":
        yield None
        return
    key = os.path.realpath(uri)
    if key in _HELD:  # this process already holds it (an outer `with`): nothing more to take
        yield None
        return
    lock = WriterLock(key)
    deadline = None if wait is True or wait is False else time.monotonic() + float(wait)
    told = False
    while (holder := lock.try_acquire()) is not None:
        if wait is False or (deadline is not None and time.monotonic() >= deadline):
            raise DatabaseBusyError(busy_message(uri, holder))
        if not told and on_wait is not None:
            on_wait(holder)
            told = True
        time.sleep(poll_seconds)
    _HELD[key] = lock
    try:
        yield read_holder(lock.path)
    finally:
        _HELD.pop(key, None)
        lock.release()
