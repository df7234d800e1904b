"""One read path per query: LanceDB calls counted, ranking and shown rows from one table version."""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterator
from pathlib import Path

import lance
import lancedb.db
import lancedb.table
import numpy as np
import pyarrow as pa
import pytest

from audioclip_search.search import SearchEngine
from audioclip_search.store import Store, VectorIndex, row_id, snapshot
from audioclip_search.store.schema import fixed_size_list

DIM = 32
SHA = "c" * 64
#: Every LanceDB table / connection entry point a read could go through.
TABLE_METHODS = ("search", "take_row_ids", "take_offsets", "count_rows", "checkout", "checkout_latest",
                 "list_indices", "to_arrow", "to_pandas", "head", "query", "list_versions", "stats")
TABLE_PROPERTIES = ("version", "schema")
DB_METHODS = ("open_table", "list_tables", "table_names")
#: The Lance dataset under a table (the store asks it for the latest version: counted as "version").
DATASET_METHODS = ("take", "_take_rows", "to_table", "to_batches", "scanner", "count_rows", "checkout_version")
DATASET_PROPERTIES = {"latest_version": "version"}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter]:
    """Counts calls to LanceDB's table and connection methods while the test runs."""
    counter: collections.Counter = collections.Counter()

    def counted(name: str, fn):  # noqa: ANN001, ANN202
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            counter[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in TABLE_METHODS:
        fn = getattr(lancedb.table.LanceTable, name, None)
        if callable(fn):
            monkeypatch.setattr(lancedb.table.LanceTable, name, counted(name, fn))
    for name in TABLE_PROPERTIES:
        prop = getattr(lancedb.table.LanceTable, name)
        monkeypatch.setattr(lancedb.table.LanceTable, name, property(counted(name, prop.fget)))
    for name in DB_METHODS:
        fn = getattr(lancedb.db.LanceDBConnection, name)
        monkeypatch.setattr(lancedb.db.LanceDBConnection, name, counted(name, fn))
    for name in DATASET_METHODS:
        fn = getattr(lance.LanceDataset, name)
        monkeypatch.setattr(lance.LanceDataset, name, counted(f"lance.{name}", fn))
    for name, as_name in DATASET_PROPERTIES.items():
        prop = getattr(lance.LanceDataset, name)
        monkeypatch.setattr(lance.LanceDataset, name, property(counted(as_name, prop.fget)))
    yield counter


@pytest.fixture()
def taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables of any size take their rows (as above ``RESIDENT_ROWS``) instead of holding them."""
    monkeypatch.setattr(snapshot, "RESIDENT_ROWS", 0)


def fill(store: Store, modality: str, vectors: np.ndarray, tag: str = "v1") -> list[str]:
    paths = [f"/{modality}/{i:05d}" for i in range(len(vectors))]
    store.add_rows(modality, pa.table({"path": paths, "embedding": fixed_size_list(vectors),
                                       "caption": [f"{tag}:{p}" for p in paths]}))
    return [row_id(modality, p) for p in paths]


@pytest.fixture()
def filled(tmp_path: Path) -> tuple[Store, np.ndarray]:
    store = Store.open(tmp_path / "db.lancedb")
    store.bind_model("m", SHA, DIM)
    rng = np.random.default_rng(0)
    vecs = unit(rng.standard_normal((600, DIM)))
    for m in ("image", "text"):
        fill(store, m, vecs)
        VectorIndex.build(store, m, "flat", device="cpu")
    return store, vecs


def test_warm_single_target_query_makes_at_most_two_lancedb_calls(filled, calls, taken) -> None:  # noqa: ANN001
    store, vecs = filled
    engine = SearchEngine(store, embedder=None, device="cpu")  # type: ignore[arg-type]
    engine.search_vector(vecs[3], "image", 5)  # cold: opens the table, pins the version, loads FAISS
    calls.clear()
    hits = engine.search_vector(vecs[7], "image", 5)
    assert hits[0].id == row_id("image", "/image/00007") and hits[0].path == "/image/00007"
    assert hits[0].caption == "v1:/image/00007"
    assert sum(calls.values()) <= 2, dict(calls)
    assert calls["version"] == 1 and calls["lance._take_rows"] + calls["take_row_ids"] == 1, dict(calls)
    # two targets: two calls each
    engine.search_vector(vecs[7], ["image", "text"], 5)
    calls.clear()
    engine.search_vector(vecs[9], ["image", "text"], 5)
    assert sum(calls.values()) <= 4, dict(calls)


def test_a_commit_between_ranking_and_row_fetch_does_not_change_the_rows_shown(filled) -> None:  # noqa: ANN001
    store, vecs = filled
    engine = SearchEngine(store, embedder=None, device="cpu")  # type: ignore[arg-type]
    before = engine.search_vector(vecs[11], "image", 5)
    rank = engine.searcher.search

    def rank_then_index_run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = rank(*args, **kwargs)
        # an index run commits now: the top file is re-written, the second one deleted
        top, second = (str(i) for i in result.ids[0][:2])
        top_path, second_path = (store.rows_by_ids("image", [x])[0]["path"] for x in (top, second))
        store.upsert_files("image", [{"path": top_path, "embedding": -vecs[11], "caption": "v2",
                                      "model": "m", "model_sha256": SHA}])
        assert store.delete_paths("image", [second_path]) == 1
        return result

    engine.searcher.search = rank_then_index_run  # type: ignore[method-assign]
    during = engine.search_vector(vecs[11], "image", 5)
    assert [(h.id, h.path, h.caption, h.score) for h in during] == \
        [(h.id, h.path, h.caption, h.score) for h in before]
    engine.searcher.search = rank  # type: ignore[method-assign]
    after = engine.search_vector(vecs[11], "image", 5)  # the next query sees the new version
    assert after[0].id != before[0].id and before[1].id not in {h.id for h in after}


@pytest.mark.parametrize("lance_take", [True, False], ids=["lance-take", "pylance-without-_take_rows"])
def test_rows_fall_back_to_ids_when_row_ids_moved(filled, taken, calls, monkeypatch, lance_take) -> None:  # noqa: ANN001
    """Rows are taken by address from the Lance dataset (or through LanceDB where pylance lacks
    that unstable call); once compaction has moved them, by id."""
    if not lance_take:
        monkeypatch.delattr(lance.LanceDataset, "_take_rows")
    store, vecs = filled
    engine = SearchEngine(store, embedder=None, device="cpu")  # type: ignore[arg-type]
    hits = engine.search_vector(vecs[21], "image", 3)
    assert hits[0].path == "/image/00021" and hits[0].caption == "v1:/image/00021"
    assert calls["lance._take_rows" if lance_take else "take_row_ids"] == 1, dict(calls)
    store.optimize("image")  # compaction rewrites fragments: the index's row ids are stale now
    hits = engine.search_vector(vecs[21], "image", 3)
    assert hits[0].path == "/image/00021" and hits[0].caption == "v1:/image/00021"
    assert all(h.path for h in hits)


def test_find_similar_reads_the_query_vector_from_the_index(filled, calls, taken) -> None:  # noqa: ANN001
    store, vecs = filled
    engine = SearchEngine(store, embedder=None, device="cpu")  # type: ignore[arg-type]
    item = row_id("image", "/image/00042")
    np.testing.assert_array_equal(engine.item_vector("image", item), vecs[42])
    engine.similar("image", item, "image", 5)
    calls.clear()
    hits = engine.similar("image", item, "image", 5)
    assert hits[0].id == item and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # one version for the vector and the search (the same pinned snapshot) + at most one take, no scan
    assert sum(calls.values()) <= 2 and calls["search"] == 0 and calls["version"] == 1, dict(calls)
    with pytest.raises(KeyError):
        engine.item_vector("image", "no-such-id")


def test_a_small_table_is_read_once_per_version_then_served_from_memory(filled, calls) -> None:  # noqa: ANN001
    store, vecs = filled
    engine = SearchEngine(store, embedder=None, device="cpu")  # type: ignore[arg-type]
    item = row_id("image", "/image/00042")
    engine.similar("image", item, ["image", "text"], 5)  # cold: each table's rows read in one scan
    calls.clear()
    hits = engine.similar("image", item, ["image", "text"], 5)
    assert hits[0].id == item and hits[0].caption == "v1:/image/00042"
    assert {h.modality for h in hits} == {"image", "text"}
    assert dict(calls) == {"version": 2}, dict(calls)  # only each table's version: no take, no scan
    # a commit makes a new version: its rows are read again, and show the change
    path = "/image/00042"
    store.upsert_files("image", [{"path": path, "embedding": vecs[42], "caption": "v2",
                                  "model": "m", "model_sha256": SHA}])
    hits = engine.similar("image", item, "image", 5)
    assert hits[0].id == item and hits[0].caption == "v2"
    # rows whose row id moved (compaction) are still found, by id
    store.optimize("image")
    hits = engine.search_vector(vecs[21], "image", 3)
    assert hits[0].path == "/image/00021" and hits[0].caption == "v1:/image/00021"
