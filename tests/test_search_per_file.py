"""Results per file: a long sound does not fill the top k with its own windows; same content merges."""

from __future__ import annotations

import numpy as np
import pytest

from audioclip_search.search import SearchEngine
from audioclip_search.store import Store, VectorIndex

DIM = 32
SHA = "d" * 64
LONG_WINDOWS = 300


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def windows(path: str, vecs: np.ndarray, sha: str) -> list[dict]:
    return [{"path": path, "window_index": w, "start": 2.5 * w, "end": 2.5 * w + 5.0, "duration": 2.5 * len(vecs) + 2.5,
             "content_sha256": sha, "embedding": v, "model": "m", "model_sha256": SHA} for w, v in enumerate(vecs)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[SearchEngine, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    query = unit(rng.standard_normal(DIM))
    store = Store.open(tmp_path_factory.mktemp("perfile") / "db.lancedb")
    store.bind_model("m", SHA, DIM)
    files: dict[str, np.ndarray] = {}
    # a 12-minute recording: every window is close to the query
    files["/long.wav"] = unit(query + 0.35 * rng.standard_normal((LONG_WINDOWS, DIM)))
    for i in range(40):  # short sounds, some close, most far
        files[f"/short{i:02d}.wav"] = unit(query * (0.9 - 0.02 * i) + 0.5 * rng.standard_normal((2, DIM)))
    for path, vecs in files.items():
        store.upsert_files("audio", windows(path, vecs, sha=path))
    # the same bytes at two more paths (same sha256 as short03)
    store.upsert_files("audio", windows("/copy/short03.wav", files["/short03.wav"], sha="/short03.wav"))
    store.upsert_files("audio", windows("/other/short03.wav", files["/short03.wav"], sha="/short03.wav"))
    VectorIndex.build(store, "audio", "flat", device="cpu")
    return SearchEngine(store, embedder=None, device="cpu"), query, files  # type: ignore[arg-type]


def brute_files(query: np.ndarray, files: dict[str, np.ndarray], k: int) -> list[tuple[str, float, int]]:
    """(key, best score, best window) per distinct content, by best window, from all rows."""
    best = {p: (float((v @ query).max()), int((v @ query).argmax())) for p, v in files.items()}
    ranked = sorted(best.items(), key=lambda kv: -kv[1][0])
    return [(p, s, w) for p, (s, w) in ranked[:k]]


def test_one_hit_per_file_scored_by_its_best_window(engine) -> None:  # noqa: ANN001
    eng, query, files = engine
    hits = eng.search_vector(query, "audio", k=8)
    assert len(hits) == 8 and len({h.path for h in hits}) == 8
    truth = brute_files(query, files, 8)
    assert hits[0].path == truth[0][0]
    assert [round(h.score, 4) for h in hits] == [round(s, 4) for _, s, _ in truth]
    long_hit = next(h for h in hits if h.path == "/long.wav")
    _, score, w = next(t for t in truth if t[0] == "/long.wav")
    assert (long_hit.start, long_hit.end) == (2.5 * w, 2.5 * w + 5.0)
    assert len(long_hit.windows) >= 10  # other matching windows listed under the file
    assert [x.score for x in long_hit.windows] == sorted((x.score for x in long_hit.windows), reverse=True)
    assert all(x.score <= long_hit.score and x.id != long_hit.id for x in long_hit.windows)
    assert [h.rank for h in hits] == list(range(1, 9))


def test_identical_content_is_one_hit_listing_its_paths(engine) -> None:  # noqa: ANN001
    eng, query, files = engine
    hits = eng.search_vector(query, "audio", k=41)
    copies = [h for h in hits if "short03" in h.path]
    assert len(copies) == 1
    assert sorted(copies[0].paths) == ["/copy/short03.wav", "/other/short03.wav", "/short03.wav"]
    assert copies[0].path == copies[0].paths[0]
    assert len(hits) == 41  # 1 long + 40 short contents, every file once


def test_per_window_keeps_the_old_behaviour(engine) -> None:  # noqa: ANN001
    eng, query, files = engine
    hits = eng.search_vector(query, "audio", k=10, per_window=True)
    scores = np.sort(np.concatenate([v @ query for v in files.values()]))[::-1]
    assert len(hits) == 10 and [round(h.score, 4) for h in hits] == [round(float(s), 4) for s in scores[:10]]
    assert {h.path for h in hits} == {"/long.wav"}  # a long file fills the top 10 with its windows
    assert all(h.windows == [] for h in hits)
