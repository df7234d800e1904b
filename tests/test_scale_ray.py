"""`acsearch index --engine ray` on a local Ray (2 CPUs, no dashboard, started once for the module):
the same tables as the in-process engine on real clips and pictures, a re-run that adds nothing,
a `kill -9` of the driver at a commit, an encoder actor killed mid-run, a corrupt file reported,
a file whose decoder kills every worker that opens it reported as the local engine reports it,
a bucket on a real S3 server (moto, 127.0.0.1) as input and as the database, a captions manifest,
and `--prune` of an object deleted from the bucket.

Ray starts in ~15-25 s on a 2-core machine and every run starts its actor pool, so the module
indexes a handful of files and shares one cluster and one pair of databases between tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from audioclip_search import crashpoints
from audioclip_search.index import Index
from audioclip_search.indexer.distributed import engine
from audioclip_search.indexer.pipeline import IndexOptions
from audioclip_search.indexer.reader import CRASHED
from audioclip_search.store import Store

from .conftest import SHARED_DATA
from .s3_server import make_bucket, s3_server, upload

ray = pytest.importorskip("ray", reason='the Ray engine needs ray: pip install "audioclip-search[ray]"')

REPO = Path(__file__).resolve().parents[1]
BUCKET = "acs-ray"
COLUMNS = ("id", "path", "content_sha256", "size", "mtime", "caption", "caption_source", "labels", "model",
           "model_sha256")  # fmt: skip
AUDIO_COLUMNS = ("window_index", "start", "end", "duration", "sample_rate", "channels")
MANIFEST_CAPTION = "a drawing of an animal"
CRASHER = "decoder-killer.wav"  # its decoder is SIGKILLed wherever it runs (crash point reader.decode.<name>)


@pytest.fixture(scope="module")
def s3():
    """A real S3 server on 127.0.0.1, started before Ray so the workers inherit its environment
    (on a real cluster each node has its own credentials)."""
    with s3_server() as env:
        make_bucket(BUCKET)
        yield env


@pytest.fixture(scope="module")
def cluster(s3):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two ESC-50 clips (one with a caption sidecar), two tuxpaint pictures, a text note, a corrupt wav."""
    folder = tmp_path_factory.mktemp("ray-corpus")
    clips = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:2]
    pictures = sorted((SHARED_DATA / "tuxpaint-triples" / "animals").rglob("*.png"))[:2]
    for src in [*clips, *pictures]:
        shutil.copy(src, folder / src.name)
    (folder / f"{clips[0].stem}.txt").write_text("a caption from a sidecar\n")
    (folder / "note.txt").write_text("rain falling on a tin roof")
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    return folder


def _table(store: Store, modality: str) -> dict[str, dict]:
    return {r["id"]: r for r in store.snapshot(modality).to_lance().to_table().to_pylist()}


def _assert_once(store: Store, prefix: str, corpus: Path) -> None:
    """Every file of the corpus (but the corrupt one) is stored under ``prefix``, each row once."""
    for modality, pattern in (("audio", "*.wav"), ("image", "*.png")):
        ids = store.id_column(modality).to_pylist()
        assert len(ids) == len(set(ids))
        rows = store.snapshot(modality).to_lance().to_table(columns=["path", "window_index"]
                                                             if modality == "audio" else ["path"]).to_pylist()
        keys = Counter((r["path"], r.get("window_index")) for r in rows)
        assert max(keys.values()) == 1
        expected = {f"{prefix}/{p.name}" for p in corpus.glob(pattern) if p.name != "broken.wav"}
        assert {r["path"] for r in rows} == expected
    assert [r["path"] for r in _table(store, "text").values()] == [f"{prefix}/note.txt"]


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory, corpus) -> Path:
    """A real clip named ``CRASHER``; the folder's name sorts before the corpus's, so it is planned first."""
    folder = tmp_path_factory.mktemp("ray-boom")
    shutil.copy(next(corpus.glob("[!b]*.wav")), folder / CRASHER)
    return folder


def _fresh_forkserver(preload: list[str]) -> None:
    """The reader's worker pools fork from multiprocessing's one forkserver, which keeps the
    environment it was started with: stop it, so the next pool sees the current crash points.
    ``preload``: modules the next forkserver imports once, so that each of the pools' worker
    (re)starts is a fork instead of a fresh import of torch."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # the stdlib's own tests stop it this way
    forkserver.set_forkserver_preload(preload)
    crashpoints.reset()


@pytest.fixture(scope="module")
def indexed(cluster, corpus, crash_dir, tmp_path_factory, tiny_encoder):
    """The corpus and ``CRASHER`` indexed by both engines (one Ray run less for the module):

    - in the Ray run, an encoder actor is killed (SIGKILL) at its first batch, so the equality
      below also proves that Ray's restart and retry lose and duplicate nothing;
    - every process that decodes ``CRASHER`` is killed, as a segfault in a native decoder would
      end it: the local engine's worker pool, and in the Ray run the decode task (blocks of 2
      files, so it shares its task with a good clip) and then the driver's pool."""
    root = tmp_path_factory.mktemp("ray-dbs")
    paths = [crash_dir, corpus]
    manifest = root / "captions.csv"
    manifest.write_text(f"path,caption,labels\n{sorted(corpus.glob('*.png'))[0]},{MANIFEST_CAPTION},animal;drawing\n")
    with pytest.MonkeyPatch.context() as mp:
        # one encoder actor dies (the first to create the marker); every decoder of CRASHER dies
        mp.setenv("ACSEARCH_CRASH_AT", f"ray.encode:once,reader.decode.{CRASHER}")  # not reached by this process
        mp.setenv("ACSEARCH_CRASH_ONCE", str(root / "crashed-once"))
        mp.setattr(engine, "FILES_PER_BLOCK", 2)
        mp.setattr(engine, "DECODE_RETRIES", 0)  # Ray's retry of a dead decode worker: the S3 test below
        _fresh_forkserver(["audioclip_search.indexer.reader"])
        try:
            local = Index.open(root / "local", encoder=tiny_encoder).add(paths, IndexOptions(workers=1,
                                                                                             captions=manifest))
            remote = Index.open(root / "ray", encoder=tiny_encoder).add(paths, IndexOptions(workers=0,
                                                                                            captions=manifest),
                                                                        engine="ray")  # fmt: skip
        finally:
            mp.undo()
            _fresh_forkserver(["__main__"])  # the default
    return root, local, remote


def test_same_tables_as_the_local_engine(indexed, corpus, crash_dir):
    root, local, remote = indexed
    assert (root / "crashed-once").exists()  # an encoder actor did die with its batch in flight
    assert remote.indexed == local.indexed == {"audio": 2, "image": 2, "text": 1}
    assert remote.rows == local.rows
    assert sorted(remote.failed) == sorted(local.failed) and len(remote.failed) == 2  # same report, same exit 1
    reasons = dict(remote.failed)
    assert str(corpus / "broken.wav") in reasons
    assert reasons[str(crash_dir / CRASHER)] == CRASHED  # pinpointed, not its whole task
    assert remote.stage_seconds["encode"] > 0  # the driver did encode the files of the failed task
    a, b = Store.open(root / "local"), Store.open(root / "ray")
    assert {k: v for k, v in a.model_info().items() if k != "created_at"} == {
        k: v for k, v in b.model_info().items() if k != "created_at"}
    for modality in ("audio", "image", "text"):
        rows_a, rows_b = _table(a, modality), _table(b, modality)
        assert rows_a.keys() == rows_b.keys()
        extra = AUDIO_COLUMNS if modality == "audio" else ("width", "height") if modality == "image" else ("text",)
        for rid, row in rows_a.items():
            other = rows_b[rid]
            assert {c: row[c] for c in (*COLUMNS, *extra)} == {c: other[c] for c in (*COLUMNS, *extra)}
            np.testing.assert_allclose(row["embedding"], other["embedding"], atol=1e-5)
        assert b.info()["tables"][modality]["vector_index"]["table_version"] == b.version(modality)
    _assert_once(b, str(corpus), corpus)
    caption = next(r for r in _table(b, "audio").values() if r["caption"])
    assert caption["caption"] == "a caption from a sidecar" and caption["caption_source"] == "sidecar"
    picture = {r["path"]: r for r in _table(b, "image").values()}[str(sorted(corpus.glob("*.png"))[0])]
    assert (picture["caption"], picture["caption_source"], picture["labels"]) == (
        MANIFEST_CAPTION, "manifest", ["animal", "drawing"])  # fmt: skip


def test_driver_killed_at_a_commit_then_rerun_then_nothing_to_add(cluster, corpus, tiny_checkpoint, tiny_encoder):
    """A bucket as input and as the database: the CLI's driver is killed at its first commit (after
    a decode worker died and Ray retried its task); a re-run completes it, each file once; a third
    run finds nothing to do and commits nothing."""
    upload(BUCKET, {f"corpus/{p.name}": p for p in corpus.iterdir() if p.name != "broken.wav"})
    source, db = f"s3://{BUCKET}/corpus", f"s3://{BUCKET}/index.lancedb"
    cmd = [sys.executable, "-m", "audioclip_search.cli", "index", source, "--db", db, "--model", str(tiny_checkpoint),
           "--engine", "ray", "--ray-address", cluster, "--commit-every", "1", "--no-vector-index"]  # fmt: skip
    marker = corpus.parent / "decode-crashed-once"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ACSEARCH_CRASH_AT": "index.commit:1,ray.decode:once",
           "ACSEARCH_CRASH_ONCE": str(marker)}  # fmt: skip
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert marker.exists()
    store = Store.open(db)
    stored = sum(store.count(m) for m in ("audio", "image", "text"))
    assert 0 < stored < 5  # part of the run was committed, whole files only

    index = Index.open(db, encoder=tiny_encoder)
    report = index.add(source, IndexOptions(workers=0), engine="ray")
    assert report.ok and sum(report.indexed.values()) + sum(report.unchanged.values()) == 5
    assert 0 < sum(report.indexed.values()) < 5
    _assert_once(store, f"s3://{BUCKET}/corpus", corpus)
    caption = {r["path"]: r["caption"] for r in _table(store, "audio").values()}
    assert "a caption from a sidecar" in caption.values()

    versions = {m: store.version(m) for m in ("audio", "image", "text")}
    again = index.add(source, IndexOptions(workers=0), engine="ray")
    assert again.ok and again.indexed == {"audio": 0, "image": 0, "text": 0}
    assert again.unchanged == {"audio": 2, "image": 2, "text": 1}
    assert {m: store.version(m) for m in versions} == versions  # not one commit
    _assert_once(store, f"s3://{BUCKET}/corpus", corpus)

    # --prune: an object deleted from the bucket loses its rows and nothing else changes
    import boto3

    gone = f"s3://{BUCKET}/corpus/{sorted(corpus.glob('*.png'))[0].name}"
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=gone.removeprefix(f"s3://{BUCKET}/"))
    before = {m: _table(store, m) for m in ("audio", "image", "text")}
    pruned = index.add(source, IndexOptions(workers=0, prune=True), engine="ray")
    assert pruned.ok and pruned.pruned == {"audio": 0, "image": 1, "text": 0}
    assert pruned.indexed == {"audio": 0, "image": 0, "text": 0}
    after = {m: _table(store, m) for m in ("audio", "image", "text")}
    assert after["audio"] == before["audio"] and after["text"] == before["text"]
    assert after["image"] == {k: r for k, r in before["image"].items() if r["path"] != gone} != before["image"]


def test_unknown_engine_is_one_line(tmp_path, corpus):
    from typer.testing import CliRunner

    from audioclip_search.cli.app import _register, app

    _register()
    run = CliRunner().invoke(app, ["index", str(corpus), "--db", str(tmp_path / "db"), "--engine", "spark"])
    assert run.exit_code == 2 and "--engine must be local or ray" in run.output


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch):
    from audioclip_search.indexer.distributed.engine import RayEngineError, require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    with pytest.raises(RayEngineError, match=r'pip install "audioclip-search\[ray\]"'):
        require_ray()
