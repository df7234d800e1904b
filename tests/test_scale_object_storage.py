"""Object storage as input and as the database: a real S3 server (moto) on 127.0.0.1, real clips
and pictures from ../shared/data, the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audioclip_search.fsio import ObjectPath, input_path, is_object_uri, list_files
from audioclip_search.index import Index
from audioclip_search.indexer.pipeline import IndexOptions

from .conftest import SHARED_DATA
from .s3_server import make_bucket, s3_server, upload

BUCKET = "acs-corpus"
REPO = Path(__file__).resolve().parents[1]


def corpus_files() -> dict[str, Path]:
    """key -> local file: esc50 clips, tuxpaint pictures, one with a caption sidecar."""
    esc = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:3]
    pics = sorted((SHARED_DATA / "tuxpaint-triples" / "animals").rglob("*.png"))[:2]
    assert len(esc) == 3 and len(pics) == 2
    files = {f"corpus/sounds/{p.name}": p for p in esc}
    files.update({f"corpus/pictures/{p.name}": p for p in pics})
    return files


@pytest.fixture(scope="module")
def s3():
    with s3_server() as env:
        make_bucket(BUCKET)
        files = corpus_files()
        upload(BUCKET, files)
        first = next(k for k in files if k.endswith(".wav"))
        upload(
            BUCKET,
            {
                first.rsplit(".", 1)[0] + ".txt": b"a caption from a sidecar object\n",
                "corpus/sounds/broken.wav": b"RIFF\x10\x00\x00\x00WAVEjunk",
                "corpus/notes/readme.txt": b"a text document stored in a bucket",
            },
        )
        yield env, files, first


def test_paths_keep_uris_whole():
    p = input_path("s3://bucket/a/b.wav")
    assert isinstance(p, ObjectPath) and str(p) == "s3://bucket/a/b.wav"
    assert (p.name, p.suffix, p.stem, str(p.parent)) == ("b.wav", ".wav", "b", "s3://bucket/a")
    assert str(p.with_suffix(".txt")) == "s3://bucket/a/b.txt"
    assert is_object_uri("gs://b/x") and is_object_uri("az://c/x") and not is_object_uri("/tmp/x")
    assert not is_object_uri("http://127.0.0.1/x") and not is_object_uri("s3://")
    assert input_path("rel") == Path("rel").resolve()


def test_listing(s3):
    _, files, _ = s3
    listed = {str(o.path): o.size for o in list_files(ObjectPath(f"s3://{BUCKET}/corpus"))}
    for key, local in files.items():
        assert listed[f"s3://{BUCKET}/{key}"] == local.stat().st_size
    with pytest.raises(FileNotFoundError):
        list_files(ObjectPath(f"s3://{BUCKET}/nothing-here"))


def test_index_bucket_equals_local(s3, tmp_path, tiny_encoder):
    _, files, first = s3
    remote = Index.open(tmp_path / "remote-db", encoder=tiny_encoder)
    report = remote.add(f"s3://{BUCKET}/corpus", IndexOptions(workers=0))
    assert report.indexed == {"audio": 3, "image": 2, "text": 1}
    assert report.failed == [(f"s3://{BUCKET}/corpus/sounds/broken.wav", report.failed[0][1])]
    assert "corrupt" in report.failed[0][1] or "not" in report.failed[0][1]

    local = Index.open(tmp_path / "local-db", encoder=tiny_encoder)
    assert local.add(sorted(files.values()), IndexOptions(workers=0)).ok
    for modality in ("audio", "image"):
        r_ids, r_emb = remote.store.embeddings(modality)
        l_ids, l_emb = local.store.embeddings(modality)
        r_rows = remote.store.rows_by_ids(modality, list(r_ids))
        l_rows = local.store.rows_by_ids(modality, list(l_ids))
        key = lambda r: (Path(r["path"]).name, r.get("window_index") or 0)  # noqa: E731
        r_by = {key(r): i for i, r in enumerate(r_rows)}
        l_by = {key(r): i for i, r in enumerate(l_rows)}
        assert set(r_by) == set(l_by) and len(r_by) == len(r_rows)
        for k in r_by:
            rid = r_rows[r_by[k]]["id"]
            lid = l_rows[l_by[k]]["id"]
            np.testing.assert_allclose(r_emb[list(r_ids).index(rid)], l_emb[list(l_ids).index(lid)], atol=1e-6)
            assert r_rows[r_by[k]]["path"].startswith(f"s3://{BUCKET}/corpus/")
            assert r_rows[r_by[k]]["content_sha256"] == l_rows[l_by[k]]["content_sha256"]
    captions = {r["path"]: r["caption"] for r in remote.store.rows_by_ids("audio", list(remote.store.ids("audio")))}
    assert captions[f"s3://{BUCKET}/{first}"] == "a caption from a sidecar object"

    again = remote.add(f"s3://{BUCKET}/corpus", IndexOptions(workers=0))
    assert sum(again.indexed.values()) == 0 and again.unchanged["audio"] == 3 and again.unchanged["image"] == 2

    hits = remote.search(text="a dog barking", target="audio", k=10, where=f"path LIKE 's3://{BUCKET}/%'")
    assert hits and all(h.path.startswith(f"s3://{BUCKET}/corpus/sounds/") for h in hits)

    # a deleted object is pruned under its prefix only
    import boto3

    boto3.client("s3").delete_object(Bucket=BUCKET, Key="corpus/notes/readme.txt")
    pruned = remote.add(f"s3://{BUCKET}/corpus", IndexOptions(workers=0, prune=True))
    assert pruned.pruned["text"] == 1 and remote.store.count("text") == 0
    upload(BUCKET, {"corpus/notes/readme.txt": b"a text document stored in a bucket"})


def test_captions_manifest_in_a_bucket_and_a_local_one_naming_objects(s3, tmp_path, tiny_encoder):
    _, files, first = s3
    sounds = sorted(k for k in files if k.startswith("corpus/sounds/"))
    second, third = sounds[1], sounds[2]
    # in the bucket, beside the sounds: one path relative to the manifest's prefix, one full URI
    upload(BUCKET, {"corpus/captions.jsonl": (
        f'{{"path": "sounds/{Path(second).name}", "caption": "rain on a tin roof", "labels": ["rain"]}}\n'
        f'{{"path": "s3://{BUCKET}/{first}", "labels": "dog;bark"}}\n').encode()})
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    report = index.add(f"s3://{BUCKET}/corpus/sounds",
                       IndexOptions(workers=0, captions=f"s3://{BUCKET}/corpus/captions.jsonl"))
    assert report.indexed["audio"] == 3
    rows = {r["path"]: r for r in index.store.rows_by_ids("audio", list(index.store.ids("audio")))}
    got = rows[f"s3://{BUCKET}/{second}"]
    assert (got["caption"], list(got["labels"]), got["caption_source"]) == ("rain on a tin roof", ["rain"], "manifest")
    got = rows[f"s3://{BUCKET}/{first}"]  # the manifest gives labels only: the sidecar caption stays
    assert (got["caption"], list(got["labels"]), got["caption_source"]) == (
        "a caption from a sidecar object", ["dog", "bark"], "sidecar")
    assert rows[f"s3://{BUCKET}/{third}"]["caption"] is None

    # a local manifest naming objects by URI; an edited caption is picked up without re-encoding
    local = tmp_path / "captions.csv"
    local.write_text(f"path,caption\ns3://{BUCKET}/{third},a glass breaking\n")
    again = index.add(f"s3://{BUCKET}/corpus/sounds", IndexOptions(workers=0, captions=local))
    assert sum(again.indexed.values()) == 0
    rows = {r["path"]: r for r in index.store.rows_by_ids("audio", list(index.store.ids("audio")))}
    assert rows[f"s3://{BUCKET}/{third}"]["caption"] == "a glass breaking"

    with pytest.raises(FileNotFoundError, match="captions manifest not found"):
        index.add(f"s3://{BUCKET}/corpus/sounds",
                  IndexOptions(workers=0, captions=f"s3://{BUCKET}/corpus/missing.csv"))


def test_media_served_from_bucket(s3, tmp_path, tiny_encoder):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from audioclip_search.server import ServerSettings, create_app

    _, files, _ = s3
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    key = next(k for k in files if k.endswith(".wav"))
    pic = next(k for k in files if k.endswith(".png"))
    assert index.add([f"s3://{BUCKET}/{key}", f"s3://{BUCKET}/{pic}"], IndexOptions(workers=0)).ok
    audio_id = str(index.store.ids("audio")[0])
    image_id = str(index.store.ids("image")[0])
    raw = files[key].read_bytes()
    with TestClient(create_app(index, ServerSettings(warm_up=False)), base_url="http://127.0.0.1") as client:
        whole = client.get(f"/api/media/audio/{audio_id}")
        assert whole.status_code == 200 and whole.content == raw
        assert whole.headers["content-type"].startswith("audio/wav")
        part = client.get(f"/api/media/audio/{audio_id}", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == raw[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(raw)}"
        thumb = client.get(f"/api/thumbnails/{image_id}?size=64")
        assert thumb.status_code == 200 and thumb.headers["content-type"] in ("image/png", "image/jpeg")


def test_cli_bucket_in_and_database_in_bucket(s3, tiny_checkpoint, tmp_path):
    env, files, _ = s3
    make_bucket("acs-db")
    child_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    db = "s3://acs-db/index.lancedb"
    cmd = [
        sys.executable,
        "-m",
        "audioclip_search.cli",
        "index",
        f"s3://{BUCKET}/corpus/pictures",
        f"s3://{BUCKET}/corpus/sounds/{next(iter(files)).rsplit('/', 1)[1]}",
        "--db",
        db,
        "--model",
        str(tiny_checkpoint),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--json",
        "--log",
        str(tmp_path / "errors.log"),
    ]
    out = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    store = Index.open(db, create=False).store
    assert store.count("image") == 2 and store.count("audio") >= 1
    assert store.model_info()["model_sha256"]
    again = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert '"unchanged"' in again.stdout and Index.open(db, create=False).store.count("image") == 2
    query = subprocess.run(
        [
            sys.executable,
            "-m",
            "audioclip_search.cli",
            "query",
            "--text",
            "a frog",
            "--db",
            db,
            "--where",
            f"path LIKE 's3://{BUCKET}/%'",
            "--target",
            "image",
            "--json",
        ],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert query.returncode == 0, query.stderr[-2000:]
    assert f"s3://{BUCKET}/corpus/pictures/" in query.stdout
