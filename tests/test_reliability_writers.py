"""Two writers at once never double a row; the writer lock; `acsearch check` and `--repair`."""

from __future__ import annotations

import errno
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from audioclip_search.store import Store, row_id
from audioclip_search.store.lock import ENV_NO_LOCK, DatabaseBusyError, writer_lock

from .conftest import SHARED_DATA

SHA = "a" * 64
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _acsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "audioclip_search.cli", *args]


def _rows(paths: list[str], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"path": p, "embedding": rng.standard_normal(16).astype(np.float32), "model": "m",
             "model_sha256": SHA, "size": 1, "mtime": 1.0, "content_sha256": "c" * 64} for p in paths]


def _clips(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for clip in sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:n]:
        shutil.copy(clip, folder / clip.name)
    return folder


def _ids(db: Path, modality: str = "audio") -> list[str]:
    return list(Store.open(db, create=False, read_only=True).ids(modality))


# ------------------------------------------------------------------ the commit protocol itself
def test_two_first_time_writers_from_one_version_do_not_double_rows(tmp_path):
    """Writer A plans from the empty table, B commits the same files meanwhile, then A commits: the
    race two `acsearch index` runs hit. With `id` as the primary key LanceDB sees the conflict and
    retries A's insert as an update (before: every row twice, for good)."""
    a = Store.open(tmp_path / "db")
    b = Store.open(tmp_path / "db")
    for s in (a, b):
        s.bind_model("m", SHA, 16)
    paths = [f"/data/{i}.wav" for i in range(20)]
    a.upsert_files("audio", _rows(["/other.wav"]))  # the table exists; neither writer touches this file
    stale = a._db.open_table(a.table_name("audio"))  # A's view of the table, frozen before B's commit
    a._latest = lambda modality: stale  # noqa: SLF001 - stop A from seeing B's commit
    b.upsert_files("audio", _rows(paths))
    a.upsert_files("audio", _rows(paths, seed=1))
    ids = _ids(tmp_path / "db")
    assert len(ids) == len(set(ids)) == 21


def test_old_tables_get_the_primary_key_before_the_next_write(tmp_path):
    import lancedb
    import pyarrow as pa

    from audioclip_search.store.migrate import has_primary_key
    from audioclip_search.store.schema import modality_schema

    old = pa.schema([f.remove_metadata() if f.name == "id" else f for f in modality_schema("text", 16)
                     if f.name != "caption_source"])
    lancedb.connect(tmp_path / "db").create_table("text", schema=old)
    store = Store.open(tmp_path / "db")
    store.bind_model("m", SHA, 16)
    store.upsert_files("text", _rows(["/t/a.txt"]))
    tbl = lancedb.connect(tmp_path / "db").open_table("text")
    assert has_primary_key(tbl.schema) and "caption_source" in tbl.schema.names


# ------------------------------------------------------------------ the writer lock
def test_lock_is_exclusive_names_the_holder_and_is_reentrant(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nfrom audioclip_search.store.lock import writer_lock\n"
         f"with writer_lock({str(db)!r}):\n    print('held', flush=True)\n    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)  # holds until killed below
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseBusyError) as err, writer_lock(str(db)):
            pass
        msg = str(err.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in msg and "--wait" in msg and str(db) in msg
        # a holder killed with -9 never blocks: the kernel drops its flock
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with writer_lock(str(db), wait=5), writer_lock(str(db)):  # nested: no deadlock
            pass
    finally:
        if holder.poll() is None:
            holder.kill()


def test_without_flock_a_dead_local_holder_is_broken_and_a_remote_one_is_not(tmp_path, monkeypatch):
    from audioclip_search.store import lock as lock_mod

    def no_flock(fd, op):  # noqa: ANN001 - a filesystem without flock (some NFS mounts)
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    db = tmp_path / "db"
    db.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    excl = db / (lock_mod.LOCK_NAME + ".excl")
    excl.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x", "command": "y"}))
    with writer_lock(str(db)):
        assert json.loads(excl.read_text())["pid"] == os.getpid()
    assert not excl.exists()
    excl.write_text(json.dumps({"pid": dead.pid, "host": "another-host", "started": "x", "command": "y"}))
    with pytest.raises(DatabaseBusyError, match="another-host"), writer_lock(str(db)):
        pass


def _lines_of(proc: subprocess.Popen) -> queue.Queue:
    """``proc``'s output lines as they come, then ``None`` at its end (read by a thread, so the test
    waits for a line, not on a clock)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_cli_refuses_a_busy_database_before_loading_anything_and_wait_queues(tmp_path, tiny_checkpoint):
    folder = _clips(tmp_path / "media", 2)
    db = tmp_path / "db"
    db.mkdir()
    cmd = _acsearch("index", str(folder), "--db", str(db), "--model", str(tiny_checkpoint), "--workers", "0")
    with writer_lock(str(db)):
        run = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        assert run.returncode == 2, run.stderr
        assert f"pid {os.getpid()}" in run.stderr and "--wait" in run.stderr
        waiting = subprocess.Popen([*cmd, "--wait"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=ENV)  # fmt: skip
        lines = _lines_of(waiting)
        said: list[str] = []
        while not said or "waiting for" not in said[-1]:  # the run says it queues behind this lock
            line = lines.get(timeout=300)  # only a hung run gets here without a line
            assert line is not None, "".join(said)  # it ended instead of waiting
            said.append(line)
        assert not (db / "audio.lance").exists()  # nothing written while queued
    assert waiting.wait(timeout=300) == 0, "".join(said)
    assert len(_ids(db)) == 2


def _run_two_at_once(cmd: list[str], env: dict) -> None:
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]


def test_two_cli_index_runs_started_together_store_every_row_once(tmp_path, tiny_checkpoint):
    folder = _clips(tmp_path / "media", 4)
    db = tmp_path / "db"
    cmd = _acsearch("index", str(folder), "--db", str(db), "--model", str(tiny_checkpoint), "--workers", "0",
                    "--wait")
    _run_two_at_once(cmd, ENV)
    ids = _ids(db)
    assert len(ids) == len(set(ids)) == 4
    run = subprocess.run(_acsearch("check", "--db", str(db)), capture_output=True, text=True, env=ENV)
    assert run.returncode == 0 and "healthy" in run.stdout, run.stdout + run.stderr


def test_two_cli_runs_with_the_lock_bypassed_still_store_every_row_once(tmp_path, tiny_checkpoint):
    """Object stores get no lock: the commit protocol alone must keep rows single."""
    folder = _clips(tmp_path / "media", 4)
    db = tmp_path / "db"
    cmd = _acsearch("index", str(folder), "--db", str(db), "--model", str(tiny_checkpoint), "--workers", "0",
                    "--no-vector-index", "--commit-every", "1")
    _run_two_at_once(cmd, {**ENV, ENV_NO_LOCK: "1"})
    ids = _ids(db)
    assert len(ids) == len(set(ids)) == 4


def test_binding_that_another_writer_is_still_creating_is_not_an_error(tmp_path):
    """The moment two unlocked writers meet: the other's meta table is listed (its folder exists) but its
    first version has not landed. Reading it is "not bound yet", not "Table 'meta' was not found"."""
    db = tmp_path / "db"
    Store.open(db)  # the database folder
    (db / "meta.lance").mkdir()  # what a writer mid-create_table leaves for a moment
    store = Store.open(db)
    assert store.model_info() is None
    bound = store.bind_model("m", SHA, dim=16)
    assert bound["model_sha256"] == SHA
    assert Store.open(db, read_only=True).model_info()["model_sha256"] == SHA


# ------------------------------------------------------------------ acsearch check / --repair
def test_check_finds_and_repairs_without_reencoding(tmp_path):
    import lancedb
    import pyarrow as pa

    from audioclip_search.store.schema import to_arrow_rows

    db = tmp_path / "db"
    media = tmp_path / "media"
    media.mkdir()
    present = [media / f"{i}.wav" for i in range(3)]
    for p in present:
        p.write_bytes(b"x")
    store = Store.open(db)
    store.bind_model("m", SHA, 16)
    store.upsert_files("audio", _rows([str(p) for p in present]))
    ids_before, mat_before = store.embeddings("audio")
    tbl = lancedb.connect(db).open_table("audio")
    # what two racing writers of an older version left: every row of one file twice
    tbl.add(to_arrow_rows("audio", _rows([str(present[0])]), 16, model="m", model_sha256=SHA))
    # the same window of a file under a foreign id
    odd = to_arrow_rows("audio", _rows([str(present[1])]), 16, model="m", model_sha256=SHA)
    tbl.add(odd.set_column(0, "id", pa.array(["foreign-id"], pa.string())))
    # rows without a file state, of a file that is gone
    gone = to_arrow_rows("audio", [{**_rows([str(media / "gone.wav")])[0], "size": None, "mtime": None,
                                    "content_sha256": None}], 16, model="m", model_sha256=SHA)
    tbl.add(gone)
    (db / "_faiss").mkdir()
    orphan = db / "_faiss" / "audio.abc.faiss.tmp"
    orphan.write_bytes(b"half an index")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))

    run = subprocess.run(_acsearch("check", "--db", str(db), "--json"), capture_output=True, text=True, env=ENV)
    assert run.returncode == 1, run.stderr
    kinds = {p["kind"]: p for p in json.loads(run.stdout)["problems"]}
    assert set(kinds) == {"duplicate-ids", "path-window-duplicates", "no-file-state", "vector-index", "temp-files"}
    assert kinds["duplicate-ids"]["count"] == 1 and kinds["path-window-duplicates"]["count"] == 1

    run = subprocess.run(_acsearch("check", "--db", str(db), "--repair", "--json"), capture_output=True,
                         text=True, env=ENV)
    assert run.returncode == 0, run.stdout + run.stderr
    done = {p["kind"]: p["repaired"] for p in json.loads(run.stdout)["problems"]}
    assert done["duplicate-ids"].startswith("deleted 1 extra copies")
    assert done["no-file-state"].startswith("deleted 1 rows of 1 missing files")
    assert done["vector-index"].startswith("rebuilt the FAISS index")
    assert not orphan.exists()
    run = subprocess.run(_acsearch("check", "--db", str(db)), capture_output=True, text=True, env=ENV)
    assert run.returncode == 0 and "healthy" in run.stdout, run.stdout
    ids, mat = Store.open(db, read_only=True).embeddings("audio")
    assert sorted(ids) == sorted(ids_before) == sorted(row_id("audio", str(p), 0) for p in present)
    order = np.argsort(ids)
    np.testing.assert_array_equal(mat[order], mat_before[np.argsort(ids_before)])  # nothing re-encoded
