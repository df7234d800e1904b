"""The LanceDB store: schema, atomic per-file upserts, deletes, model binding, table sets, quoting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from audioclip_search.store import (
    FileState,
    ModelMismatchError,
    Store,
    StoreError,
    StoreNotFoundError,
    modality_schema,
    row_id,
    table_name,
)
from audioclip_search.store.schema import sql_in, sql_str, to_arrow_rows

DIM = 32
SHA = "a" * 64
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _vec(rng: np.random.Generator, n: int = 1, dim: int = DIM) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


def audio_rows(path: str, windows: int, *, tag: str = "v1", rng: np.random.Generator | None = None,
               model: str = "m1", sha: str = SHA, dim: int = DIM) -> list[dict]:
    rng = rng or np.random.default_rng(abs(hash((path, windows, tag))) % 2**32)
    vecs = _vec(rng, windows, dim)
    return [
        {
            "path": path,
            "window_index": w,
            "start": float(w),
            "end": float(w + 1),
            "duration": float(windows),
            "sample_rate": 44100,
            "channels": 2,
            "content_sha256": tag,
            "size": 1000 + windows,
            "mtime": 1_700_000_000.5,
            "caption": f"{tag}|{windows}",
            "labels": ["dog", tag],
            "embedding": vecs[w],
            "model": model,
            "model_sha256": sha,
        }
        for w in range(windows)
    ]


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "db.lancedb")
    s.bind_model("m1", SHA, DIM)
    return s


def rows_of(store: Store, modality: str, path: str) -> list[dict]:
    ids = store.ids(modality, sql_in("path", [path]))
    return store.rows_by_ids(modality, ids)


# --------------------------------------------------------------------------------------- basics
def test_upsert_and_read_back(store: Store) -> None:
    rng = np.random.default_rng(0)
    rows = audio_rows("/music/a.wav", 3, rng=rng)
    res = store.upsert_files("audio", rows)
    assert (res.inserted, res.updated, res.deleted) == (3, 0, 0)
    assert store.count("audio") == 3
    assert store.tables() == ["audio"]
    assert store.version("audio") is not None

    got = rows_of(store, "audio", "/music/a.wav")
    assert sorted(r["window_index"] for r in got) == [0, 1, 2]
    r0 = next(r for r in got if r["window_index"] == 0)
    assert r0["id"] == row_id("audio", "/music/a.wav", 0)
    assert r0["caption"] == "v1|3" and r0["labels"] == ["dog", "v1"]
    assert r0["sample_rate"] == 44100 and r0["channels"] == 2 and r0["end"] == 1.0
    assert r0["model"] == "m1" and r0["model_sha256"] == SHA
    assert r0["indexed_at"].tzinfo is not None
    assert "embedding" not in r0

    ids, mat = store.embeddings("audio")
    assert mat.shape == (3, DIM) and mat.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, rtol=1e-5)
    with_emb = store.rows_by_ids("audio", [ids[0]], with_embedding=True)
    np.testing.assert_allclose(with_emb[0]["embedding"], mat[0])
    expected = rows[[r["window_index"] for r in rows].index(with_emb[0]["window_index"])]["embedding"]
    np.testing.assert_allclose(mat[0], expected / np.linalg.norm(expected), rtol=1e-5)

    assert store.file_states("audio") == {"/music/a.wav": FileState(1003, 1_700_000_000.5, "v1")}
    info = store.info()
    assert info["tables"]["audio"]["rows"] == 3 and info["model"]["model"] == "m1"


def test_image_and_text_tables_and_arrow_input(store: Store) -> None:
    rng = np.random.default_rng(1)
    store.upsert_files("image", [{"path": "/p/cat.jpg", "width": 640, "height": 480, "embedding": _vec(rng)[0]}])
    tab = pa.table({
        "path": ["/t/a.txt", "/t/b.txt"],
        "text": ["a dog barks", "rain on a roof"],
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(_vec(rng, 2).ravel()), DIM),
    })
    store.upsert_files("text", tab)
    assert store.tables() == ["audio", "image", "text"][1:]
    (img,) = store.rows_by_ids("image", [row_id("image", "/p/cat.jpg")])
    assert (img["width"], img["height"], img["labels"]) == (640, 480, [])
    texts = store.rows_by_ids("text", [row_id("text", "/t/b.txt"), row_id("text", "/t/a.txt")])
    assert [t["text"] for t in texts] == ["rain on a roof", "a dog barks"]  # order of the ids given
    assert store.rows_by_ids("text", ["nope"]) == []
    assert modality_schema("image", DIM).field("embedding").type.list_size == DIM


def test_reupsert_same_file_replaces_without_duplicates(store: Store) -> None:
    store.upsert_files("audio", audio_rows("/a.wav", 2, tag="v1"))
    ids_before = set(store.ids("audio"))
    v = store.version("audio")
    res = store.upsert_files("audio", audio_rows("/a.wav", 2, tag="v1"))
    assert (res.inserted, res.updated) == (0, 2)
    assert store.count("audio") == 2
    assert set(store.ids("audio")) == ids_before
    assert store.version("audio") == v + 1  # one commit


def test_changed_file_rows_are_replaced_in_one_commit(store: Store) -> None:
    store.upsert_files("audio", audio_rows("/a.wav", 3, tag="old") + audio_rows("/b.wav", 1, tag="old"))
    v = store.version("audio")
    res = store.upsert_files("audio", audio_rows("/a.wav", 2, tag="new"))
    assert store.version("audio") == v + 1  # shrinking file: still one commit
    assert res.deleted == 1
    got = rows_of(store, "audio", "/a.wav")
    assert len(got) == 2
    assert {r["window_index"] for r in got} == {0, 1}
    assert {r["content_sha256"] for r in got} == {"new"}
    assert len(rows_of(store, "audio", "/b.wav")) == 1  # other files untouched
    # growing again, plus a file that now gives no rows, in one call
    store.upsert_files("audio", audio_rows("/a.wav", 4, tag="newer"), delete_paths=["/b.wav"])
    assert sorted(r["window_index"] for r in rows_of(store, "audio", "/a.wav")) == [0, 1, 2, 3]
    assert store.count("audio") == 4
    # the whole batch in one commit: a shrinking file, a new file and a deleted file
    store.upsert_files("audio", audio_rows("/b.wav", 2))
    v = store.version("audio")
    store.upsert_files("audio", audio_rows("/a.wav", 1, tag="x") + audio_rows("/c.wav", 2),
                       delete_paths=["/b.wav"], single_commit=True)
    assert store.version("audio") == v + 1
    assert {p: len(rows_of(store, "audio", p)) for p in ("/a.wav", "/b.wav", "/c.wav")} == {
        "/a.wav": 1, "/b.wav": 0, "/c.wav": 2}


def test_delete_paths(store: Store) -> None:
    for i in range(5):
        store.upsert_files("audio", audio_rows(f"/d/{i}.wav", 2))
    assert store.delete_paths("audio", ["/d/1.wav", "/d/3.wav", "/not/there.wav"]) == 4
    assert set(store.file_states("audio")) == {"/d/0.wav", "/d/2.wav", "/d/4.wav"}
    assert store.delete_paths("audio", []) == 0
    assert store.delete_paths("image", ["/d/0.wav"]) == 0  # no table: nothing to do


def test_paths_with_quotes_spaces_and_unicode(store: Store) -> None:
    paths = [
        "/m/it's here.wav",
        '/m/"double" quotes.wav',
        "/m/ünïcødé 音楽 🎵.wav",
        "/m/back\\slash\\'mixed.wav",
        "/m/new\nline\ttab.wav",
        "/m/semi;colon -- comment /* x */.wav",
        "/m/x') OR ('1'='1",
        "/m/per%cent_under.wav",
        "s3://bucket/key with space.flac",
    ]
    for p in paths:
        store.upsert_files("audio", audio_rows(p, 2))
    assert store.count("audio") == 2 * len(paths)
    assert set(store.file_states("audio")) == set(paths)
    assert set(store.file_states("audio", paths=[paths[0], paths[6]])) == {paths[0], paths[6]}
    # replace one (shrink path: the by-source delete filter is quoted too), delete another
    store.upsert_files("audio", audio_rows(paths[0], 1, tag="v2"))
    assert len(rows_of(store, "audio", paths[0])) == 1
    store.delete_paths("audio", [paths[6]])
    assert paths[6] not in store.file_states("audio")
    assert store.count("audio") == 2 * len(paths) - 3
    for p in paths[1:6]:
        assert store.count("audio", f"path = {sql_str(p)}") == 2


def test_empty_and_missing_tables(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        Store.open(tmp_path / "nope.lancedb", create=False)
    s = Store.open(tmp_path / "new.lancedb")
    assert s.tables() == [] and s.model_info() is None
    assert s.count("audio") == 0 and s.version("audio") is None
    assert s.file_states("audio") == {}
    ids, mat = s.embeddings("audio")
    assert ids.shape == (0,) and mat.shape == (0, 1024)
    assert s.rows_by_ids("audio", ["x"]) == []
    assert s.delete_paths("audio", ["/x"]) == 0
    assert s.info()["tables"] == {}
    with pytest.raises(ValueError, match="unknown modality"):
        s.count("video")
    with pytest.raises(StoreError, match="bind_model"):
        s.upsert_files("audio", [{"path": "/x.wav", "embedding": np.ones(8)}])


def test_env_uri_and_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACSEARCH_DB", str(tmp_path / "env.lancedb"))
    s = Store.open()
    assert s.uri == str(tmp_path / "env.lancedb")
    s.bind_model("m1", SHA, DIM)
    s.upsert_files("audio", audio_rows("/a.wav", 1))
    ro = Store.open(create=False, read_only=True)
    assert ro.count("audio") == 1
    with pytest.raises(StoreError, match="read-only"):
        ro.upsert_files("audio", audio_rows("/b.wav", 1))
    with pytest.raises(ModelMismatchError):
        ro.bind_model("m2", "b" * 64, DIM)


def test_reader_sees_latest_commit(store: Store) -> None:
    reader = Store.open(store.uri, create=False)
    assert reader.count("audio") == 0
    store.upsert_files("audio", audio_rows("/a.wav", 2))
    assert reader.count("audio") == 2
    v = reader.version("audio")
    store.upsert_files("audio", audio_rows("/b.wav", 1))
    assert reader.count("audio") == 3
    ids_old, _ = reader.embeddings("audio", version=v)  # a pinned version still reads the old data
    assert len(ids_old) == 2


# --------------------------------------------------------------------------------------- model binding
def test_model_binding_refusal_and_new_table_set(store: Store) -> None:
    store.upsert_files("audio", audio_rows("/a.wav", 2))
    assert store.bind_model("m1", SHA, DIM)["model"] == "m1"  # same model: fine
    assert store.bind_model("m1-renamed", SHA, DIM)["model"] == "m1"  # same weights, other name
    with pytest.raises(ModelMismatchError) as err:
        Store.open(store.uri).bind_model("m2", "b" * 64, DIM)
    msg = str(err.value)
    assert "'m1'" in msg and "'m2'" in msg and "--table-set" in msg
    assert err.value.stored["model_sha256"] == SHA
    with pytest.raises(ModelMismatchError):
        store.bind_model("m1", SHA, DIM * 2)  # same weights, other dim
    with pytest.raises(ModelMismatchError):  # rows computed with another model
        store.upsert_files("audio", audio_rows("/c.wav", 1, model="m2", sha="b" * 64))

    other = Store.open(store.uri, table_set="m2")
    other.bind_model("m2", "b" * 64, 16)
    other.upsert_files("audio", audio_rows("/a.wav", 3, model="m2", sha="b" * 64, dim=16))
    assert table_name("audio", "m2") == "m2__audio"
    assert other.count("audio") == 3 and store.count("audio") == 2  # queries pick the set
    assert store.table_sets() == ["default", "m2"]
    assert other.model_info()["model"] == "m2" and store.model_info()["model"] == "m1"
    with pytest.raises(ValueError, match="table set"):
        Store.open(store.uri, table_set="bad__name")


def test_first_upsert_binds_the_model(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "x.lancedb")
    s.upsert_files("image", [{"path": "/a.png", "embedding": np.ones(DIM), "model": "mx", "model_sha256": "c" * 64}])
    assert s.model_info()["dim"] == DIM and s.model_info()["model"] == "mx"
    with pytest.raises(ModelMismatchError):
        Store.open(s.uri).bind_model("my", "d" * 64, DIM)


def test_row_validation() -> None:
    ok = {"path": "/a", "embedding": np.ones(4)}
    with pytest.raises(ValueError, match="shape"):
        to_arrow_rows("image", [{"path": "/a", "embedding": np.ones(5)}], 4)
    with pytest.raises(ValueError, match="NaN"):
        to_arrow_rows("image", [{"path": "/a", "embedding": np.array([1, np.nan, 0, 0])}], 4)
    with pytest.raises(ValueError, match="zero"):
        to_arrow_rows("image", [{"path": "/a", "embedding": np.zeros(4)}], 4)
    with pytest.raises(ValueError, match="duplicate"):
        to_arrow_rows("image", [ok, ok], 4)
    with pytest.raises(ValueError, match="unknown column"):
        to_arrow_rows("image", [{**ok, "colour": "red"}], 4)
    with pytest.raises(ValueError, match="path"):
        to_arrow_rows("image", [{"embedding": np.ones(4)}], 4)
    t = to_arrow_rows("image", [ok], 4)
    assert t.schema == modality_schema("image", 4)
    assert row_id("audio", "/a", 1) == row_id("audio", "/a", 1) != row_id("audio", "/a", 2)


# --------------------------------------------------------------------------------------- crash safety
_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from audioclip_search.store import Store
    store = Store.open(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    paths = [f"/k/{j} it's.wav" for j in range(6)]
    i = 0
    while True:
        rows = []
        for j, p in enumerate(paths):
            w = 1 + (i * 7 + j * 3) % 4            # window counts go up and down
            tag = f"gen{i}"
            vec = rng.standard_normal((w, 16)).astype(np.float32)
            rows += [dict(path=p, window_index=k, content_sha256=tag, caption=f"{tag}|{w}",
                          embedding=vec[k], model="m1", model_sha256="a" * 64) for k in range(w)]
        store.upsert_files("audio", rows)
        print(i, flush=True)
        i += 1
    """
)


def test_sigkill_during_upserts_leaves_consistent_files(tmp_path: Path) -> None:
    uri = str(tmp_path / "crash.lancedb")
    Store.open(uri).bind_model("m1", SHA, 16)
    for attempt in range(2):
        # Let 2 (then 3) batches land, then die inside the next one, between its first commit (the
        # files that kept or grew their windows) and its second (the files that lost windows).
        done = 2 + attempt
        env = {**os.environ, "ACSEARCH_CRASH_AT": f"store.upsert.after-merge:{done + 1}"}
        proc = subprocess.run([sys.executable, "-c", _WRITER, uri, str(attempt)], capture_output=True, text=True,
                              cwd=PROJECT_ROOT, env=env, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert proc.stdout.split() == [str(i) for i in range(done)]  # killed inside batch number `done`

        s = Store.open(uri, create=False)
        # the kill interrupted a batch: some files hold the new generation, the others the previous one
        assert {r["caption"].split("|")[0] for p in s.file_states("audio") for r in rows_of(s, "audio", p)} == \
            {f"gen{done}", f"gen{done - 1}"}
        ids = s.ids("audio")
        assert len(ids) == len(set(ids)), "duplicated rows after a crash"
        states = s.file_states("audio")
        assert len(states) == 6
        for p in states:
            rows = rows_of(s, "audio", p)
            captions = {r["caption"] for r in rows}
            assert len(captions) == 1, f"{p}: mixed generations {captions}"
            tag, w = captions.pop().split("|")
            assert {r["content_sha256"] for r in rows} == {tag}
            assert sorted(r["window_index"] for r in rows) == list(range(int(w))), p
