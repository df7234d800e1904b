"""Listing, reading and local copies of objects, through ``pyarrow.fs`` (one filesystem per bucket).

Decoders get a local copy of an object (:func:`local_copy`): libsndfile and FFmpeg seek freely
(headers, trailers, MP4 indexes), and over object storage each seek of a Python file object is
one ranged GET; one sequential read into a temporary file costs one request and the decoders then
run exactly as on a local file, long files streamed block by block as usual. The copy is deleted
as soon as the file is decoded. The server, which sends byte ranges, reads objects directly
(:func:`open_object`, a seekable ``pyarrow`` input file).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .paths import ObjectPath

CHUNK = 1 << 20


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, bucket: str):  # noqa: ANN202 - pyarrow.fs.FileSystem
    """The ``pyarrow.fs`` filesystem for ``scheme://bucket`` (cached: S3 clients are costly to make).

    S3 takes its endpoint from ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph ...) through Arrow's own
    environment handling; ``az://container`` is Azure Blob Storage with the account in
    ``AZURE_STORAGE_ACCOUNT_NAME`` (the convention LanceDB uses for ``az://`` databases).
    """
    import pyarrow.fs as pafs

    if scheme == "az":
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
        if not account:
            raise OSError("az:// needs AZURE_STORAGE_ACCOUNT_NAME (and a key or other Azure credentials)")
        key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
        return (
            pafs.AzureFileSystem(account_name=account, account_key=key)
            if key
            else pafs.AzureFileSystem(account_name=account)
        )
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")
    return fs


def filesystem(path: ObjectPath):  # noqa: ANN201 - pyarrow.fs.FileSystem
    return _filesystem(path.scheme, path.key.split("/", 1)[0])


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    path: ObjectPath
    size: int
    mtime: float  # seconds since the epoch (the object's last-modified time)


def _info(path: ObjectPath, info) -> ObjectInfo:  # noqa: ANN001 - pyarrow.fs.FileInfo
    mtime_ns = info.mtime_ns
    return ObjectInfo(path, int(info.size or 0), (mtime_ns or 0) / 1e9)


def file_info(path: ObjectPath) -> ObjectInfo:
    """Size and last-modified time of one object; ``FileNotFoundError`` when there is none."""
    import pyarrow.fs as pafs

    info = filesystem(path).get_file_info(path.key)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{path}: no such object")
    return _info(path, info)


def list_files(root: ObjectPath) -> list[ObjectInfo]:
    """Every object under ``root`` (an object or a prefix, recursively), sorted by key.

    ``FileNotFoundError`` when there is nothing at ``root``.
    """
    import pyarrow.fs as pafs

    fs = filesystem(root)
    top = fs.get_file_info(root.key)
    if top.type == pafs.FileType.File:
        return [_info(root, top)]
    if top.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{root}: no such object or prefix")
    infos = fs.get_file_info(pafs.FileSelector(root.key, recursive=True, allow_not_found=True))
    out = [_info(root.child(i.path), i) for i in infos if i.type == pafs.FileType.File]
    return sorted(out, key=lambda o: o.path.key)


def open_object(path: ObjectPath):  # noqa: ANN201 - pyarrow.NativeFile (seekable, read/seek/tell/close)
    """A seekable binary file reading the object; ``FileNotFoundError`` when it does not exist."""
    file_info(path)
    return filesystem(path).open_input_file(path.key)


def read_bytes(path: ObjectPath, limit: int | None = None) -> bytes:
    """The object's bytes (at most ``limit``): small objects such as caption sidecars."""
    with filesystem(path).open_input_stream(path.key) as fh:
        return fh.read(limit) if limit is not None else fh.read()


@contextlib.contextmanager
def local_copy(path: ObjectPath, digest: hashlib._Hash | None = None) -> Iterator[Path]:
    """Copy the object to a private temporary file (named like the object) and yield its path.

    The copy streams in 1 MiB chunks (bounded memory for any size) and is removed on exit. When
    ``digest`` is given it is fed the bytes on the way.
    """
    folder = Path(tempfile.mkdtemp(prefix="acsearch-object-"))
    try:
        target = folder / (path.name or "object")
        with filesystem(path).open_input_stream(path.key) as src, open(target, "wb") as dst:
            while chunk := src.read(CHUNK):
                if digest is not None:
                    digest.update(chunk)
                dst.write(chunk)
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)
