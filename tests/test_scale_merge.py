"""`acsearch merge`: two real shard databases (tiny model, esc50 clips and tuxpaint pictures) folded
into one, each file once, newest copy winning, FAISS index refreshed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from audioclip_search.index import Index
from audioclip_search.indexer.pipeline import IndexOptions
from audioclip_search.store import ModelMismatchError, Store, VectorIndex
from audioclip_search.store.merge import merge_stores

from .conftest import SHARED_DATA

NO_FAISS = IndexOptions(workers=0, build_vector_index=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tiny_encoder):
    """Shard A: a.wav, b.wav, pic.png; shard B (later): b.wav with other content, c.wav.

    Both shards name the same corpus folder, as two machines indexing halves of one archive would."""
    tmp = tmp_path_factory.mktemp("merge")
    clips = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:4]
    pic = sorted((SHARED_DATA / "tuxpaint-triples" / "animals").rglob("*.png"))[0]
    corpus = tmp / "corpus"
    corpus.mkdir()
    for name, src in (("a.wav", clips[0]), ("b.wav", clips[1]), ("pic.png", pic)):
        shutil.copy(src, corpus / name)
    a = Index.open(tmp / "shard-a", encoder=tiny_encoder)
    assert a.add([corpus / "a.wav", corpus / "b.wav", corpus / "pic.png"], NO_FAISS).ok
    shutil.copy(clips[2], corpus / "b.wav")  # b changed before shard B indexed it
    shutil.copy(clips[3], corpus / "c.wav")
    b = Index.open(tmp / "shard-b", encoder=tiny_encoder)
    assert b.add([corpus / "b.wav", corpus / "c.wav"], NO_FAISS).ok
    return tmp, corpus, a.store, b.store


def _by_path(store: Store, modality: str) -> dict[str, list[dict]]:
    ids, matrix = store.embeddings(modality)
    out: dict[str, list[dict]] = {}
    for row in store.rows_by_ids(modality, list(ids)):
        row["embedding"] = matrix[list(ids).index(row["id"])]
        out.setdefault(row["path"], []).append(row)
    return out


@pytest.mark.parametrize("order", ["ab", "ba"])
def test_merge_keeps_each_file_once_newest_wins(shards, tmp_path, order):
    _, corpus, a, b = shards
    sources = [a, b] if order == "ab" else [b, a]
    into = Store.open(tmp_path / "merged")
    report = merge_stores(sources, into)
    assert report.files == {"audio": 3, "image": 1, "text": 0}
    assert report.duplicates["audio"] == 1
    merged = _by_path(into, "audio")
    assert sorted(merged) == sorted(str(corpus / n) for n in ("a.wav", "b.wav", "c.wav"))
    a_rows, b_rows = _by_path(a, "audio"), _by_path(b, "audio")
    expected = {**a_rows, **b_rows}  # b.wav: shard B's newer copy
    assert merged[str(corpus / "b.wav")][0]["content_sha256"] == b_rows[str(corpus / "b.wav")][0]["content_sha256"]
    assert merged[str(corpus / "b.wav")][0]["content_sha256"] != a_rows[str(corpus / "b.wav")][0]["content_sha256"]
    for path, rows in merged.items():
        want = {r["window_index"]: r for r in expected[path]}
        assert sorted(r["window_index"] for r in rows) == sorted(want)  # every window, once
        for r in rows:
            np.testing.assert_array_equal(r["embedding"], want[r["window_index"]]["embedding"])
    assert into.count("audio") == sum(len(v) for v in expected.values())
    assert into.model_info()["model_sha256"] == a.model_info()["model_sha256"]
    # the FAISS index was built over the merged rows
    index = VectorIndex.load(into, "audio")
    assert not index.is_stale(into)
    ids, matrix = into.embeddings("audio")
    _, found = index.search(matrix[:1], 1)
    assert found[0][0] == ids[0]

    again = merge_stores(sources, into)  # nothing new: nothing rewritten, nothing doubled
    assert sum(again.files.values()) == 0 and again.kept["audio"] == 3
    assert into.count("audio") == sum(len(v) for v in expected.values())


def test_merge_refuses_another_model(shards, tmp_path):
    _, _, a, _ = shards
    other = Store.open(tmp_path / "other")
    other.bind_model("some-other-model", "f" * 64, 1024)
    with pytest.raises(ModelMismatchError, match="same model"):
        merge_stores([a, other], Store.open(tmp_path / "out"))


def test_merge_cli(shards, tmp_path):
    tmp, _, a, b = shards
    from audioclip_search.cli.app import _register, app

    _register()
    out = tmp_path / "cli-merged"
    result = CliRunner().invoke(app, ["merge", a.uri, b.uri, "--into", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert '"audio": 3' in result.output
    assert Store.open(out, create=False).count("image") == 1
    missing = CliRunner().invoke(app, ["merge", str(tmp / "nope"), "--into", str(out)])
    assert missing.exit_code == 2 and "no database" in missing.output
