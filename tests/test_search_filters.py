"""Filters: a checked SQL subset, applied across targets to the tables that have its columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from audioclip_search.search import SearchEngine
from audioclip_search.store import Store
from audioclip_search.store.filters import FilterError, parse_filter
from audioclip_search.store.schema import fixed_size_list

DIM = 16
SHA = "e" * 64


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[SearchEngine, np.ndarray]:
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((30, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = Store.open(tmp_path_factory.mktemp("filters") / "db.lancedb")
    store.bind_model("m", SHA, DIM)
    store.upsert_files("audio", [{"path": f"/a/{i}.wav", "duration": float(i), "embedding": vecs[i],
                                  "labels": ["dog"] if i % 2 else ["cat"], "model": "m", "model_sha256": SHA}
                                 for i in range(20)])
    store.add_rows("image", pa.table({"path": [f"/i/{i}.png" for i in range(10)],
                                      "embedding": fixed_size_list(vecs[20:]), "labels": [["dog"]] * 10}))
    return SearchEngine(store, embedder=None, device="cpu"), vecs  # type: ignore[arg-type]


def test_filter_applies_to_tables_having_its_columns_and_names_the_others(engine) -> None:  # noqa: ANN001
    eng, vecs = engine
    hits = eng.search_vector(vecs[0], "all", k=30, where="duration > 10")
    assert hits and all(h.modality == "audio" for h in hits)
    assert sorted(h.path for h in hits) == sorted(f"/a/{i}.wav" for i in range(11, 20))
    assert hits.skipped == {"image": ["duration"]}
    # a filter every table can take is applied everywhere, nothing skipped
    both = eng.search_vector(vecs[0], "all", k=40, where="array_has(labels, 'dog')")
    assert {h.modality for h in both} == {"audio", "image"} and both.skipped == {}
    assert len(both) == 10 + 10


def test_a_filter_no_table_can_take_names_the_columns_that_exist(engine) -> None:  # noqa: ANN001
    eng, vecs = engine
    with pytest.raises(FilterError, match=r"loudness.*columns: .*caption.*duration"):
        eng.search_vector(vecs[0], "all", k=5, where="loudness > 3")
    with pytest.raises(FilterError, match="duration"):
        eng.search_vector(vecs[0], "image", k=5, where="duration > 3")


@pytest.mark.parametrize(("text", "refused"), [
    ("duration IN (SELECT duration FROM audio)", "subqueries are not allowed"),
    ("(SELECT 1) = 1", "subqueries are not allowed"),
    ("lower(path) = 'a'", r"function lower\(\) is not allowed"),
    ("read_file('/etc/passwd') IS NULL", r"function read_file\(\) is not allowed"),
    ("duration > 1; DROP TABLE audio", "one expression"),
    ("a.path = 'x'", "not a plain column"),
])
def test_refused_filters(text: str, refused: str) -> None:
    with pytest.raises(FilterError, match=refused):
        parse_filter(text)


def test_accepted_filters_are_rewritten_from_the_checked_tree() -> None:
    f = parse_filter("duration >= 2 AND (caption IS NOT NULL OR path LIKE '%dog''s%') AND "
                     "array_has_any(labels, ['a', 'b']) AND size IN (1, -2)")
    assert f.columns == {"duration", "caption", "path", "labels", "size"}
    assert f.sql == ("((((duration >= 2) AND ((NOT (caption IS NULL)) OR (path LIKE '%dog''s%'))) AND "
                     "array_has_any(labels, ['a', 'b'])) AND (size IN (1, -2)))")
    assert parse_filter("duration > 1 -- trailing comment").sql == "(duration > 1)"
