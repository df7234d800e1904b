"""FAISS indexes over the store: exactness, recall, staleness, filters, persistence, backends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from audioclip_search.store import (
    IndexNotFoundError,
    Searcher,
    Store,
    VectorIndex,
    choose_kind,
    exact_search,
    gpu_available,
    gpu_unavailable_reason,
    index_dir,
    row_id,
    search,
)
from audioclip_search.store import vector_index as vx
from audioclip_search.store.schema import fixed_size_list

SHA = "f" * 64


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray, noise: float = 0.8) -> np.ndarray:
    a = rng.integers(0, len(centres), n)
    b = rng.integers(0, len(centres), n)
    beta = rng.uniform(0, 0.5, n)[:, None].astype(np.float32)
    eps = rng.standard_normal((n, dim)).astype(np.float32)
    return unit(centres[a] + beta * centres[b] + noise / np.sqrt(dim) * eps)


def fill(store: Store, vectors: np.ndarray, prefix: str = "/v/", modality: str = "image") -> list[str]:
    paths = [f"{prefix}{i:06d}.png" for i in range(len(vectors))]
    store.add_rows(modality, pa.table({"path": paths, "embedding": fixed_size_list(vectors)}))
    return [row_id(modality, p) for p in paths]


def make_store(tmp_path: Path, dim: int, name: str = "db.lancedb") -> Store:
    s = Store.open(tmp_path / name)
    s.bind_model("m", SHA, dim)
    return s


def brute(matrix: np.ndarray, ids: list[str], queries: np.ndarray, k: int) -> list[list[str]]:
    s = queries @ matrix.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return [[ids[j] for j in row] for row in order]


def recall(found: np.ndarray, truth: list[list[str]]) -> float:
    hits = sum(len(set(f.tolist()) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


# ------------------------------------------------------------------------------------- exact
def test_exact_faiss_equals_numpy_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dim = 1024
    store = make_store(tmp_path, dim)
    vecs = unit(rng.standard_normal((400, dim)))
    ids = fill(store, vecs)
    queries = unit(rng.standard_normal((7, dim)))
    idx = VectorIndex.build(store, "image", "flat", save=False, device="cpu")
    assert idx.kind == "flat" and idx.size == 400
    scores, got = idx.search(queries, 10)
    assert [list(r) for r in got] == brute(vecs, ids, queries, 10)
    np.testing.assert_allclose(scores, np.sort(queries @ vecs.T, axis=1)[:, ::-1][:, :10], rtol=1e-5, atol=1e-6)
    # exact streaming search over the table and single-query calls agree too
    es, ei = exact_search(store, "image", queries, 10, batch_rows=64)
    assert [list(r) for r in ei] == [list(r) for r in got]
    s1, i1 = idx.search(queries[0], 10)
    assert list(i1[0]) == list(got[0])
    # k larger than the table pads with None / -inf
    s, i = idx.search(queries[:1], 405)
    assert i[0, 399] is not None and i[0, 400] is None and np.isneginf(s[0, 400])


# ------------------------------------------------------------------------------------- approximate
@pytest.mark.parametrize(("kind", "extra"), [("ivf_flat", {}), ("ivf_pq", {"pq_m": 4}), ("hnsw", {})])
def test_approximate_recall_on_clustered_data(tmp_path: Path, kind: str, extra: dict) -> None:
    rng = np.random.default_rng(1)
    dim = 64
    centres = unit(rng.standard_normal((40, dim)))
    store = make_store(tmp_path, dim)
    vecs = clustered(4000, dim, rng, centres)
    ids = fill(store, vecs)
    queries = clustered(100, dim, rng, centres)  # not in the base set
    idx = VectorIndex.build(store, "image", kind, save=False, device="cpu", **extra)
    tuning = idx.manifest["tuning"]
    assert tuning["recall_at_10"] >= 0.95 and tuning["method"] == "held-out table rows"
    _, got = idx.search(queries, 10)
    assert recall(got, brute(vecs, ids, queries, 10)) >= 0.9
    assert idx.size == 4000 and idx.index.ntotal == 4000  # held-out tuning rows are added back


def test_two_level_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vx.build, "TWO_LEVEL_FROM", 16)  # production: from 1024 lists
    rng = np.random.default_rng(11)
    dim = 32
    centres = unit(rng.standard_normal((30, dim)))
    store = make_store(tmp_path, dim)
    vecs = clustered(3000, dim, rng, centres)
    ids = fill(store, vecs)
    idx = VectorIndex.build(store, "image", "ivf_flat", save=False, device="cpu")
    assert idx.params["training"] == "two-level k-means"
    queries = clustered(50, dim, rng, centres)
    assert recall(idx.search(queries, 10)[1], brute(vecs, ids, queries, 10)) >= 0.9
    cents = vx.two_level_kmeans(vecs[:500], 120)
    assert cents.shape == (120, dim)
    np.testing.assert_allclose(np.linalg.norm(cents, axis=1), 1.0, rtol=1e-5)


def test_auto_policy_thresholds() -> None:
    assert choose_kind(1_000, 1024) == "flat"
    assert choose_kind(vx.FLAT_MAX_ROWS, 1024) == "flat"
    assert choose_kind(vx.FLAT_MAX_ROWS + 1, 1024, memory_budget=16 * 2**30) == "ivf_flat"
    assert choose_kind(10_000_000, 1024, memory_budget=16 * 2**30) == "ivf_pq"
    assert vx.ivf_lists(1_000_000) == 4000
    assert vx.ivf_lists(100) >= 1


# ------------------------------------------------------------------------------------- staleness
def test_stale_index_falls_back_correctly(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    dim = 32
    store = make_store(tmp_path, dim)
    vecs = unit(rng.standard_normal((300, dim)))
    ids = fill(store, vecs)
    idx = VectorIndex.build(store, "image", "flat", device="cpu")
    queries = unit(rng.standard_normal((5, dim)))
    assert not idx.is_stale(store)
    assert search(store, "image", queries, 10, index=idx).backend == "faiss:flat"

    # new rows right next to the queries, a re-embedded old row, deleted rows
    near = unit(queries + 0.01 * rng.standard_normal(queries.shape))
    new_ids = fill(store, near, prefix="/new/")
    top0 = search(store, "image", queries, 1, index=idx).ids[0, 0]
    changed = f"/v/{ids.index(top0) if top0 in ids else 0:06d}.png"
    store.upsert_files("image", [{"path": changed, "embedding": -queries[0]}])
    store.delete_paths("image", ["/v/000001.png", "/v/000002.png"])
    assert idx.is_stale(store)

    for where in (None, "path LIKE '/v/%'", "path LIKE '/new/%' OR path LIKE '/v/0001%'"):
        res = search(store, "image", queries, 10, index=idx, where=where)
        ex_s, ex_i = exact_search(store, "image", queries, 10, where=where)
        assert res.stale and res.backend == "faiss:flat+delta"
        assert [list(r) for r in res.ids] == [list(r) for r in ex_i], where
        np.testing.assert_allclose(res.scores, ex_s, rtol=1e-5)
    res = search(store, "image", queries, 10, index=idx)
    assert all(res.ids[i, 0] == new_ids[i] for i in range(5))
    assert row_id("image", "/v/000001.png") not in set(res.ids.ravel())
    assert search(store, "image", queries, 10, index=idx, stale="exact").backend == "exact"

    fresh = idx.update(store)
    assert fresh is not idx and not fresh.is_stale(store)
    _, ex_i = exact_search(store, "image", queries, 10)
    assert [list(r) for r in search(store, "image", queries, 10, index=fresh).ids] == [list(r) for r in ex_i]


def test_stale_ivf_never_returns_deleted_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    dim = 32
    centres = unit(rng.standard_normal((20, dim)))
    store = make_store(tmp_path, dim)
    vecs = clustered(3000, dim, rng, centres)
    ids = fill(store, vecs)
    idx = VectorIndex.build(store, "image", "ivf_flat", device="cpu")
    queries = vecs[:4]
    before = search(store, "image", queries, 10, index=idx)
    gone = sorted({x for x in before.ids.ravel().tolist() if x is not None})
    store.delete_paths("image", [f"/v/{ids.index(g):06d}.png" for g in gone])
    after = search(store, "image", queries, 10, index=idx)
    assert after.stale and not set(after.ids.ravel().tolist()) & set(gone)
    assert all(x is not None for x in after.ids.ravel())
    truth = exact_search(store, "image", queries, 10)[1]
    assert recall(after.ids, [list(r) for r in truth]) >= 0.8
    updated = idx.update(store)  # reuses the trained centroids
    assert updated.params["nlist"] == idx.params["nlist"] and updated.size == 3000 - len(gone)
    assert not updated.is_stale(store)


def test_compaction_does_not_make_the_index_stale(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    store = make_store(tmp_path, 16)
    for i in range(3):
        fill(store, unit(rng.standard_normal((50, 16))), prefix=f"/b{i}/")
    idx = VectorIndex.build(store, "image", "flat", device="cpu")
    v = store.version("image")
    store.optimize()
    assert store.version("image") > v
    assert not idx.is_stale(store)
    assert search(store, "image", unit(rng.standard_normal((1, 16))), 5, index=idx).backend == "faiss:flat"


# ------------------------------------------------------------------------------------- filters
@pytest.mark.parametrize("brute_max", [100_000, 10])
def test_where_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, brute_max: int) -> None:
    monkeypatch.setattr(vx, "FILTER_BRUTE_MAX", brute_max)  # 10: the IDSelector path
    rng = np.random.default_rng(5)
    dim = 32
    store = make_store(tmp_path, dim)
    fill(store, unit(rng.standard_normal((400, dim))), prefix="/cats/")
    fill(store, unit(rng.standard_normal((400, dim))), prefix="/dogs/")
    queries = unit(rng.standard_normal((4, dim)))
    idx = VectorIndex.build(store, "image", "flat", device="cpu")
    for where in ("path LIKE '/dogs/%'", "path = '/cats/000007.png'", "path LIKE '/none/%'"):
        res = search(store, "image", queries, 10, where=where, index=idx)
        _, ex = exact_search(store, "image", queries, 10, where=where)
        assert [list(r) for r in res.ids] == [list(r) for r in ex], where
    res = search(store, "image", queries, 10, where="path LIKE '/dogs/%'", index=idx)
    rows = store.rows_by_ids("image", [x for x in res.ids[0] if x])
    assert rows and all(r["path"].startswith("/dogs/") for r in rows)


def test_where_filter_on_ivf_uses_selector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vx, "FILTER_BRUTE_MAX", 10)
    rng = np.random.default_rng(6)
    dim = 32
    centres = unit(rng.standard_normal((20, dim)))
    store = make_store(tmp_path, dim)
    fill(store, clustered(1500, dim, rng, centres), prefix="/a/")
    fill(store, clustered(1500, dim, rng, centres), prefix="/b/")
    idx = VectorIndex.build(store, "image", "ivf_flat", device="cpu")
    queries = clustered(20, dim, rng, centres)
    res = search(store, "image", queries, 10, where="path LIKE '/b/%'", index=idx)
    _, ex = exact_search(store, "image", queries, 10, where="path LIKE '/b/%'")
    allowed = set(store.ids("image", "path LIKE '/b/%'"))
    assert all(x is not None and x in allowed for x in res.ids.ravel())
    assert recall(res.ids, [list(r) for r in ex]) >= 0.9


def test_filtered_brute_force_reads_vectors_from_every_kind(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    dim = 16
    store = make_store(tmp_path, dim)
    vecs = unit(rng.standard_normal((1500, dim)))
    ids = fill(store, vecs)
    queries = unit(rng.standard_normal((3, dim)))
    where = "path LIKE '/v/0001%'"
    _, ex = exact_search(store, "image", queries, 5, where=where)
    for kind, extra in (("ivf_flat", {}), ("hnsw", {}), ("ivf_pq", {"pq_m": 4})):
        idx = VectorIndex.build(store, "image", kind, save=False, device="cpu", **extra)
        labels, found = idx.labels_for(ids[:50])
        assert found.all()
        np.testing.assert_allclose(idx.vectors(labels), vecs[:50], atol=2e-3 if kind == "ivf_pq" else 1e-6)
        res = search(store, "image", queries, 5, where=where, index=idx)
        assert [list(r) for r in res.ids] == [list(r) for r in ex], kind
    with pytest.raises(ValueError, match="dim"):
        search(store, "image", np.ones((1, dim + 1), np.float32), 5)
    with pytest.raises(ValueError, match="k must be"):
        search(store, "image", queries, 0)


# ------------------------------------------------------------------------------------- persistence
def test_save_load_and_backends(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    dim = 24
    store = make_store(tmp_path, dim)
    vecs = unit(rng.standard_normal((500, dim)))
    fill(store, vecs)
    queries = unit(rng.standard_normal((3, dim)))

    with pytest.raises(IndexNotFoundError):
        VectorIndex.load(store, "image")
    assert search(store, "image", queries, 5).backend == "exact"  # no index yet
    with pytest.raises(IndexNotFoundError):
        search(store, "image", queries, 5, backend="faiss")

    built = VectorIndex.build(store, "image")  # auto: flat at this size
    d = index_dir(store)
    assert d == Path(store.uri) / "_faiss"
    manifest = json.loads((d / "image.json").read_text())
    assert manifest["kind"] == "flat" and manifest["n"] == 500 and manifest["table_version"] == store.version("image")
    assert manifest["model_sha256"] == SHA
    assert all((d / f).exists() for f in manifest["files"].values())
    loaded = VectorIndex.load(store, "image", device="cpu")
    assert [list(r) for r in loaded.search(queries, 5)[1]] == [list(r) for r in built.search(queries, 5)[1]]
    assert store.info()["tables"]["image"]["vector_index"]["kind"] == "flat"

    exact = search(store, "image", queries, 5, backend="exact")
    auto = search(store, "image", queries, 5)
    lance = search(store, "image", queries, 5, backend="lancedb")
    assert auto.backend == "faiss:flat" and lance.backend == "lancedb"
    assert [list(r) for r in auto.ids] == [list(r) for r in exact.ids] == [list(r) for r in lance.ids]
    np.testing.assert_allclose(lance.scores, exact.scores, rtol=1e-4)
    assert auto.hits(0)[0][0] == exact.ids[0, 0]

    # a rebuild replaces the files of the old build; Searcher picks the new one up
    searcher = Searcher(store, device="cpu")
    assert searcher.search("image", queries, 5).backend == "faiss:flat"
    VectorIndex.build(store, "image", "ivf_flat")
    names = sorted(p.name for p in d.iterdir())
    assert len([n for n in names if n.endswith(".faiss")]) == 1
    assert searcher.search("image", queries, 5).backend == "faiss:ivf_flat"

    # another model's index is not used
    other = make_store(tmp_path, dim, "other.lancedb")
    fill(other, vecs)
    VectorIndex.build(other, "image")
    manifest_path = index_dir(other) / "image.json"
    m = json.loads(manifest_path.read_text())
    m["model_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(IndexNotFoundError, match="another model"):
        VectorIndex.load(other, "image")


def test_ivf_pq_refine_vectors_persist(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    dim = 32
    centres = unit(rng.standard_normal((20, dim)))
    store = make_store(tmp_path, dim)
    vecs = clustered(3000, dim, rng, centres)
    ids = fill(store, vecs)
    built = VectorIndex.build(store, "image", "ivf_pq", pq_m=4)
    assert "vectors" in built.manifest["files"]
    loaded = VectorIndex.load(store, "image", device="cpu")
    assert isinstance(loaded.refine_vectors, np.memmap)
    queries = clustered(30, dim, rng, centres)
    _, got = loaded.search(queries, 10)
    assert recall(got, brute(vecs, ids, queries, 10)) >= 0.9


def test_remote_uri_index_dir_is_a_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ACSEARCH_CACHE", str(tmp_path / "cache"))
    fake = Store(None, "s3://bucket/db", "default")
    d = index_dir(fake)
    assert d.parent == tmp_path / "cache" / "faiss" and len(d.name) == 16


def test_empty_table_search(tmp_path: Path) -> None:
    store = make_store(tmp_path, 8)
    res = search(store, "audio", np.ones((2, 8), np.float32), 3)
    assert res.ids.shape == (2, 3) and all(x is None for x in res.ids.ravel())
    with pytest.raises(Exception, match="no audio table"):
        VectorIndex.build(store, "audio")


# ------------------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason=f"no FAISS GPU: {gpu_unavailable_reason()}")
def test_gpu_exact_search_matches_cpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    dim = 1024
    store = make_store(tmp_path, dim)
    fill(store, unit(rng.standard_normal((2000, dim))))
    queries = unit(rng.standard_normal((8, dim)))
    cpu = VectorIndex.build(store, "image", "flat", device="cpu", save=False)
    gpu = VectorIndex.build(store, "image", "flat", device="cuda", save=False)
    assert gpu.device == "cuda"
    cs, ci = cpu.search(queries, 10)
    gs, gi = gpu.search(queries, 10)
    assert [list(r) for r in ci] == [list(r) for r in gi]
    np.testing.assert_allclose(cs, gs, rtol=1e-4, atol=1e-5)


def test_cuda_without_gpu_is_a_clear_error() -> None:
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="GPU"):
        vx.resolve_device("cuda")
    assert vx.resolve_device("auto") == "cpu"


FULL_DISK_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from audioclip_search.store import Store, VectorIndex
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
store = Store.open(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # the disk is 'full' past 200 kB a file
try:
    VectorIndex.build(store, "image", "flat", device="cpu")
except OSError as exc:
    print("failed:", exc)
    sys.exit(3)
"""


def test_full_disk_during_the_faiss_write_leaves_the_old_index_and_no_temp_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    dim = 256
    store = make_store(tmp_path, dim)
    fill(store, unit(rng.standard_normal((100, dim))))
    old = VectorIndex.build(store, "image", "flat", device="cpu")  # 100 KB index: fits
    fill(store, unit(rng.standard_normal((400, dim))), prefix="/w/")  # 500 x 1 KB: does not fit
    before = sorted(p.name for p in index_dir(store).iterdir())
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(store.uri)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert sorted(p.name for p in index_dir(store).iterdir()) == before  # no temp, no partial file
    again = VectorIndex.load(store, "image", device="cpu")
    assert again.manifest["built_at"] == old.manifest["built_at"] and again.size == 100
