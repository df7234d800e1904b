"""One odd file never stops a run: non-UTF-8 names, symlink loops, FIFOs and friends, storage errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from audioclip_search.index import Index
from audioclip_search.indexer.paths import fs_path, stored_path
from audioclip_search.indexer.pipeline import IndexOptions
from audioclip_search.store import Store

from .conftest import SHARED_DATA

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
CLIPS = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))
LATIN1 = b"caf\xe9.wav"


def _acsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "audioclip_search.cli", *args]


def _latin1_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(CLIPS[0], folder / "plain.wav")
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/" + LATIN1))
    shutil.copy(CLIPS[1], odd)
    return folder, odd


def test_stored_path_is_lossless_and_unambiguous():
    odd = os.fsdecode(b"/data/caf\xe9 50%.wav")
    text = stored_path(odd)
    text.encode("utf-8")  # storable
    assert text == "file:///data/caf%E9%2050%25.wav"
    assert os.fsencode(fs_path(text)) == b"/data/caf\xe9 50%.wav"
    assert stored_path("/data/caf%E9.wav") == "/data/caf%E9.wav"  # a real name with % stays itself
    assert fs_path("/data/caf%E9.wav") == Path("/data/caf%E9.wav")


def test_non_utf8_file_name_is_indexed_rerun_and_served(tmp_path, tiny_encoder):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from audioclip_search.server import ServerSettings, create_app

    folder, odd = _latin1_folder(tmp_path)
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    report = index.add(folder, IndexOptions(workers=0))
    assert report.ok, report.failed
    assert report.indexed["audio"] == 2
    states = index.store.file_states("audio")
    key = stored_path(odd.resolve())
    assert key.startswith("file://") and key in states
    again = Index.open(tmp_path / "db", encoder=tiny_encoder).add(folder, IndexOptions(workers=0))
    assert again.ok and again.unchanged["audio"] == 2 and sum(again.indexed.values()) == 0
    # served from `acsearch serve`: the media route finds the very bytes of the file
    served = Index.open(tmp_path / "db", encoder=tiny_encoder, create=False, read_only=True)
    hit = next(h for h in served.search(audio=odd, target="audio", k=2) if h.path == key)
    with TestClient(create_app(served, ServerSettings()), base_url="http://127.0.0.1") as client:
        response = client.get(f"/api/media/audio/{hit.id}")
    assert response.status_code == 200
    assert response.content == odd.read_bytes()
    # and pruning understands the stored form
    odd.unlink()
    pruned = Index.open(tmp_path / "db", encoder=tiny_encoder).add(folder, IndexOptions(workers=0, prune=True))
    assert pruned.pruned["audio"] == 1 and key not in index.store.file_states("audio")


def test_cli_prints_and_logs_non_utf8_failures(tmp_path, tiny_checkpoint):
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(CLIPS[0], folder / "plain.wav")
    Path(os.fsdecode(os.fsencode(folder) + b"/" + LATIN1)).write_bytes(b"not audio at all" * 100)
    db = tmp_path / "db"
    run = subprocess.run(_acsearch("index", str(folder), "--db", str(db), "--model", str(tiny_checkpoint),
                                   "--workers", "0", "--no-vector-index"), capture_output=True, env=ENV)
    assert run.returncode == 1, run.stderr
    assert b"Traceback" not in run.stderr and b"caf%E9.wav" in run.stderr
    assert b"caf%E9.wav" in (db / "index-errors.log").read_bytes()
    assert Store.open(db, read_only=True).count("audio") == 1


def test_special_files_are_reported_with_their_kind_and_the_run_goes_on(tmp_path, tiny_encoder):
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(CLIPS[0], folder / "good.wav")
    os.mkfifo(folder / "pipe.wav")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.wav"))
    os.symlink("/dev/null", folder / "device.wav")
    os.symlink(folder / "nowhere.wav", folder / "dangling.wav")
    os.symlink("loop.wav", folder / "loop.wav")
    (folder / "folder.wav").mkdir()
    shutil.copy(CLIPS[1], folder / "folder.wav" / "inside.wav")
    os.symlink("self", tmp_path / "self")  # a self-looping symlink given as an argument
    try:
        report = Index.open(tmp_path / "db", encoder=tiny_encoder).add([tmp_path / "self", folder],
                                                                      IndexOptions(workers=0))
    finally:
        sock.close()
    failed = {Path(p).name: reason for p, reason in report.failed}
    assert failed == {
        "self": "symlink loop",
        "pipe.wav": "not a regular file: FIFO",
        "sock.wav": "not a regular file: socket",
        "device.wav": "not a regular file: character device",
        "dangling.wav": "dangling symlink",
        "loop.wav": "symlink loop",
        "folder.wav": "not a regular file: directory",
    }
    assert report.indexed["audio"] == 2  # good.wav and the file inside folder.wav


# ------------------------------------------------------------------ storage errors
@pytest.fixture
def small_fs(tmp_path):
    """A 40 MiB tmpfs (needs mount rights: root in a container or VM)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _index_cmd(folder: Path, db: Path, ckpt: Path) -> list[str]:
    return _acsearch("index", str(folder), "--db", str(db), "--model", str(ckpt), "--workers", "0")


def test_read_only_database_is_one_line_exit_2_before_encoding(tmp_path, tiny_checkpoint, small_fs):
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(CLIPS[0], folder / "a.wav")
    db = small_fs / "db"
    assert subprocess.run(_index_cmd(folder, db, tiny_checkpoint), env=ENV, capture_output=True).returncode == 0
    shutil.copy(CLIPS[1], folder / "b.wav")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    run = subprocess.run(_index_cmd(folder, db, tiny_checkpoint), env=ENV, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(db) in lines[0] and "read-only file system" in lines[0], run.stderr
    assert "loading the model" not in run.stderr  # refused before any work
    # a fresh database on a read-only filesystem too
    run = subprocess.run(_index_cmd(folder, small_fs / "new", tiny_checkpoint), env=ENV, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "read-only file system" in run.stderr and "Traceback" not in run.stderr


def test_full_disk_is_refused_before_encoding(tmp_path, tiny_checkpoint, small_fs):
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(CLIPS[0], folder / "a.wav")
    filler = small_fs / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
        except OSError:
            pass
    run = subprocess.run(_index_cmd(folder, small_fs / "db", tiny_checkpoint), env=ENV, capture_output=True,
                         text=True)
    assert run.returncode == 2, run.stderr
    assert "no space left on device" in run.stderr and str(small_fs / "db") in run.stderr
    assert "Traceback" not in run.stderr and "loading the model" not in run.stderr


def test_raw_lancedb_write_errors_become_one_line(small_fs):
    import numpy as np

    from audioclip_search.store.storage import StorageError, storage_errors

    store = Store.open(small_fs / "db")
    store.bind_model("m", "a" * 64, 8)
    row = {"path": "/x.wav", "embedding": np.ones(8, np.float32), "model": "m", "model_sha256": "a" * 64}
    store.upsert_files("audio", [row])
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    with pytest.raises(StorageError) as err, storage_errors(store.uri):
        store.upsert_files("audio", [{**row, "path": "/y.wav"}])
    message = str(err.value)
    assert message == f"cannot write the database {store.uri}: read-only file system"
