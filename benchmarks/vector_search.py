"""Vector search benchmark: FAISS (exact, IVF-Flat, IVF-PQ, HNSW) vs LanceDB's own ANN vs numpy.

Usage (from the repository root)::

    .venv/bin/python benchmarks/vector_search.py --sizes 10000 100000 1000000 --queries 200 --k 10 \\
        --out benchmarks/results/vector_search.json

For each size n the script fills a real store table (``Store.add_rows`` into LanceDB under
``--workdir``, default ``benchmarks/results/work``; deleted afterwards unless ``--keep``), then
builds and times each method through the product code path (``VectorIndex.build`` /
``VectorIndex.search`` / ``Store.lancedb_search``):

- ``numpy``: ``matrix @ q`` + ``argpartition`` over the flat index's own storage (no extra copy);
- ``faiss_flat``: exact ``IndexFlatIP`` (its results are the ground truth);
- ``faiss_ivf_flat`` / ``faiss_ivf_pq``: the approximate indexes of the ``auto`` policy, with
  ``nprobe`` (and IVF-PQ's ``refine_factor``) auto-tuned at build time (target recall@10 0.95 on
  200 table rows held out of the index while tuning);
  a small ``nprobe`` sweep is recorded in the JSON;
- ``faiss_hnsw``: ``IndexHNSWFlat`` M=32 (only for n <= ``--hnsw-max``: slow to build at dim 1024);
- ``lancedb_ivf_pq`` (and ``lancedb_ivf_hnsw_sq`` for n <= ``--hnsw-max``): LanceDB's own index via
  ``table.create_index`` with ``num_partitions = sqrt(n)`` (LanceDB's advice), ``num_sub_vectors =
  dim / 16``, k-means with the same budget as FAISS (10 iterations, 32 rows per partition; LanceDB's
  defaults of 50 and 256 took 7 minutes at n = 10^5 on the 2-core box); a grid of ``nprobes``
  (8..256) x ``refine_factor`` (none, 10, 30, 100) (x ``ef``) is scored on 50 queries and the fastest
  setting reaching recall@10 >= 0.95 (else the most accurate one) is then timed on all queries.

Latency: one query at a time (batch size 1), after 20 warm-up queries (other queries than the
timed ones, so the timed ones find nothing cached), on a held index / table handle
(``VectorIndex.search``, LanceDB ``table.search``: the per-call table-version check of
``search()`` adds ~1-3 ms to both and is left out); p50/p95/mean over ``--queries`` queries.
Recall@10 is against the exact top-10. ``build_s`` covers reading the
vectors from LanceDB, training, adding and tuning. ``index_mb`` is the RAM the index holds
(analytic: vectors/codes + ids + centroids; LanceDB: its index files' size), ``disk_mb`` extra
files (IVF-PQ's float16 refine vectors), ``rss_mb`` the process RSS after the build.

Synthetic data (dim 1024, float32, fixed seed ``--seed``), generated in chunks of 50,000:
``--centres`` (2000) centres drawn uniformly on the unit sphere; every point is
``normalise(c_a + beta * c_b + (noise / sqrt(dim)) * N(0, I))`` with ``a`` and ``b`` random centres,
``beta ~ U(0, --mix)`` (1.0) and ``--noise`` 1.0, i.e. overlapping Gaussian clusters bridged by
mixtures (like multi-label sounds): nearest neighbours have cosine ~0.5 and a clustered index needs
a real nprobe to reach 0.95 (pure Gaussian clusters are solved at nprobe=1). Queries are drawn the
same way from a separate random stream, so they are not in the base set.

The machine is shared: the JSON records the load average before/after each method; latencies under
load (load > cores) are inflated.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import lancedb  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from audioclip_search.search import SHOWN_COLUMNS, SearchEngine  # noqa: E402
from audioclip_search.store import Store, VectorIndex, set_threads  # noqa: E402
from audioclip_search.store.schema import fixed_size_list  # noqa: E402
from audioclip_search.store.vector_index import estimate_index_bytes  # noqa: E402

CHUNK = 50_000
METHODS = ("numpy", "ivf_flat", "ivf_pq", "hnsw", "e2e", "lancedb", "lancedb_hnsw")
MODALITY = "audio"
console = Console(width=180)


# --------------------------------------------------------------------------------- data
def make_centres(k: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((k, dim), dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    return c


def make_points(n: int, centres: np.ndarray, noise: float, mix: float, rng: np.random.Generator) -> np.ndarray:
    """``normalise(c_a + beta * c_b + noise / sqrt(dim) * N(0, I))`` in float32."""
    dim = centres.shape[1]
    a = rng.integers(0, len(centres), n)
    b = rng.integers(0, len(centres), n)
    beta = rng.uniform(0.0, mix, n).astype(np.float32)[:, None]
    x = centres[a] + beta * centres[b]
    x += (noise / math.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def fill_store(store: Store, n: int, centres: np.ndarray, args: argparse.Namespace) -> float:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        x = make_points(m, centres, args.noise, args.mix, rng)
        rows = pa.table(
            {
                "path": [f"/bench/{i:09d}.wav" for i in range(start, start + m)],
                "embedding": fixed_size_list(x),
                "window_index": pa.array(np.zeros(m, np.int32)),
                "content_sha256": [f"{i:064x}" for i in range(start, start + m)],  # one file per row
                "size": pa.array(np.full(m, 1000, np.int64)),
                "mtime": pa.array(np.zeros(m)),
            }
        )
        store.add_rows(MODALITY, rows)
        del x, rows
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------- timing
def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def time_queries(fn: Any, queries: np.ndarray, warmup: int = 20,
                 warm: np.ndarray | None = None) -> tuple[dict[str, float], list[list[str]]]:
    """Latency of ``fn`` per query after ``warmup`` calls, on ``warm`` (other queries: nothing the
    timed queries read is cached by the warm-up) or else on the first timed queries."""
    for q in (queries if warm is None else warm)[:warmup]:
        fn(q)
    lat = []
    out = []
    for q in queries:
        t = time.perf_counter()
        r = fn(q)
        lat.append(time.perf_counter() - t)
        out.append(r)
    ms = np.array(lat) * 1000
    stats = {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
    }
    return stats, out


def recall(found: list[list[Any]], truth: list[list[str]], k: int) -> float:
    hits = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def clean_ids(row: np.ndarray) -> list[str]:
    return [x for x in row.tolist() if x is not None]


def lance_query(snap: Any, q: np.ndarray, k: int, nprobes: int, refine: int | None, ef: int | None) -> list[str]:
    """LanceDB's own ANN on one pinned :class:`TableSnapshot` (what ``backend="lancedb"`` runs)."""
    _, ids, _ = snap.vector_search(q[None], k, nprobes=nprobes, refine_factor=refine, ef=ef)
    return clean_ids(ids[0])


# --------------------------------------------------------------------------------- methods
def bench_size(n: int, args: argparse.Namespace, centres: np.ndarray, emit: Any) -> None:
    dim = args.dim
    k = args.k
    work = Path(args.workdir) / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["TMPDIR"] = str(work)  # IVF-PQ refine files of unsaved indexes go here
    store = Store.open(work / "db")
    store.bind_model("synthetic", "0" * 64, dim)
    console.print(f"[bold]n = {n:,}[/]: writing the table ...")
    fill_s = fill_store(store, n, centres, args)
    console.print(f"  filled in {fill_s:.1f} s; rss {rss_mb():.0f} MB")
    queries = make_points(args.queries, centres, args.noise, args.mix, np.random.default_rng(args.seed + 1))
    warm = make_points(20, centres, args.noise, args.mix, np.random.default_rng(args.seed + 2))
    base = {"n": n, "dim": dim, "k": k, "queries": args.queries}

    def record(method: str, **kw: Any) -> None:
        row = {**base, "method": method, **kw, "load_avg": os.getloadavg()[0], "rss_mb": round(rss_mb())}
        emit(row)

    # exact FAISS + numpy on the same storage; ground truth
    gc.collect()
    t0 = time.perf_counter()
    flat = VectorIndex.build(store, MODALITY, "flat", save=False, device="cpu")
    build_s = time.perf_counter() - t0
    _, truth_ids = flat.search(queries, k)
    truth = [clean_ids(r) for r in truth_ids]
    stats, res = time_queries(lambda q: flat.search(q[None], k)[1][0], queries)
    record("faiss_flat", params="IndexFlatIP", build_s=build_s, index_mb=n * dim * 4 / 2**20,
           recall_at_10=recall([clean_ids(r) for r in res], truth, k), **stats)

    xb = faiss.rev_swig_ptr(flat.index.get_xb(), n * dim).reshape(n, dim)

    def np_search(q: np.ndarray) -> list[str]:
        s = xb @ q
        p = np.argpartition(-s, k)[:k]
        p = p[np.argsort(-s[p])]
        return clean_ids(flat.ids_of(p))

    stats, res = time_queries(np_search, queries) if "numpy" in args.methods else ({}, [])
    if "numpy" in args.methods:
        record("numpy", params="matrix @ q + argpartition", build_s=0.0, index_mb=n * dim * 4 / 2**20,
               recall_at_10=recall(res, truth, k), **stats)
    xb = flat = None  # free ~2 x n x dim x 4 bytes
    gc.collect()

    # FAISS approximate kinds of the product policy
    kinds = [m for m in ("ivf_flat", "ivf_pq", "hnsw") if m in args.methods and (m != "hnsw" or n <= args.hnsw_max)]
    for kind in kinds:
        if n < 2000:
            break
        gc.collect()
        t0 = time.perf_counter()
        vi = VectorIndex.build(store, MODALITY, kind, save=False, device="cpu")  # type: ignore[arg-type]
        build_s = time.perf_counter() - t0
        p = vi.params
        knob = "nprobe" if kind != "hnsw" else "ef"
        tuned = int(p["nprobe"] if kind != "hnsw" else p["ef_search"])
        sweep = []
        for value in sorted({max(1, tuned // 2), tuned, tuned * 2}):
            kw = {knob: value}
            st, rs = time_queries(lambda q, kw=kw, vi=vi: vi.search(q[None], k, **kw)[1][0], queries[:100],
                                  warmup=10)
            sweep.append({knob: value, "recall_at_10": recall([clean_ids(r) for r in rs], truth[:100], k), **st})
        stats, res = time_queries(lambda q, vi=vi: vi.search(q[None], k)[1][0], queries)
        desc = ", ".join(f"{a}={b}" for a, b in p.items() if a not in ("metric",))
        est = estimate_index_bytes(kind, n, dim, p)
        idx_mb, disk_mb = est["ram"] / 2**20, est["disk_extra"] / 2**20
        record(f"faiss_{kind}", params=desc, build_s=build_s, index_mb=idx_mb, disk_mb=disk_mb,
               tuned_recall=(vi.manifest.get("tuning") or {}).get("recall_at_10"),
               recall_at_10=recall([clean_ids(r) for r in res], truth, k), sweep=sweep, **stats)
        vi = None
        gc.collect()

    if "e2e" in args.methods:
        bench_end_to_end(store, queries, warm, truth, record)

    # LanceDB's own ANN indexes
    lance_kinds = ["IVF_PQ"] + (["IVF_HNSW_SQ"] if n <= args.hnsw_max and "lancedb_hnsw" in args.methods else [])
    if "lancedb" not in args.methods:
        lance_kinds = []
    for itype in lance_kinds:
        if n < 2000 or args.skip_lancedb:
            break
        parts = max(1, int(round(math.sqrt(n))))
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"max_iterations": args.lancedb_iterations, "sample_rate": args.lancedb_sample_rate}
        if itype == "IVF_PQ":
            kwargs["num_sub_vectors"] = dim // 16
        store.create_lancedb_index(MODALITY, itype, num_partitions=parts, **kwargs)
        build_s = time.perf_counter() - t0
        tbl = store.snapshot(MODALITY)
        size_b = sum(int(ix.size_bytes or 0) for ix in tbl.list_indices() if "embedding" in ix.columns)
        grid: list[dict[str, Any]] = []
        nprobes = [p for p in (8, 16, 32, 64, 128, 256) if p <= parts] or [parts]
        refines = [None, 10, 30, 100] if itype == "IVF_PQ" else [None]
        efs = [None] if itype == "IVF_PQ" else [64, 160, 400]
        sub = queries[:50]
        for npb in nprobes:
            for rf in refines:
                for ef in efs:
                    def fn(q: np.ndarray, npb: int = npb, rf: int | None = rf, ef: int | None = ef,
                           tbl: Any = tbl) -> list[str]:
                        return lance_query(tbl, q, k, npb, rf, ef)
                    st, rs = time_queries(fn, sub, warmup=5, warm=warm)
                    grid.append({"nprobes": npb, "refine_factor": rf, "ef": ef,
                                 "recall_at_10": recall(rs, truth[:50], k), **st})
        ok = [g for g in grid if g["recall_at_10"] >= 0.95]
        best = min(ok, key=lambda g: g["p50_ms"]) if ok else max(grid, key=lambda g: (g["recall_at_10"], -g["p50_ms"]))
        npb, rf, ef = best["nprobes"], best["refine_factor"], best["ef"]

        def fn_best(q: np.ndarray, npb: int = npb, rf: int | None = rf, ef: int | None = ef,
                    tbl: Any = tbl) -> list[str]:
            return lance_query(tbl, q, k, npb, rf, ef)

        stats, res = time_queries(fn_best, queries, warm=warm)
        desc = f"partitions={parts}, nprobes={npb}, refine_factor={rf}" + (f", ef={ef}" if ef else "")
        if itype == "IVF_PQ":
            desc += f", sub_vectors={dim // 16}"
        record(f"lancedb_{itype.lower()}", params=desc, build_s=build_s, index_mb=size_b / 2**20,
               recall_at_10=recall(res, truth, k), sweep=grid, **stats)
    store = None  # type: ignore[assignment]
    gc.collect()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def bench_end_to_end(store: Store, queries: np.ndarray, warm: np.ndarray, truth: list[list[str]],
                     record: Any) -> None:
    """The product path: the saved ``auto`` index (what ``refresh_vector_index`` builds) queried
    through ``SearchEngine.search_vector(q, target="audio", k)`` (snapshot, FAISS, row fetch), per
    file (the default) and per window; LanceDB calls per warm query counted on the way."""
    k = len(truth[0]) if truth else 10
    gc.collect()
    t0 = time.perf_counter()
    vi = VectorIndex.build(store, MODALITY, "auto", device="cpu")  # saved, like the indexer does
    build_s = time.perf_counter() - t0
    # The shown columns' pages in the OS cache, as on a server that has been answering for a while
    # (else whichever variant runs first pays the cold reads of the rows both fetch).
    snap = store.snapshot(MODALITY)
    for _ in snap.scan([c for c in SHOWN_COLUMNS if c in snap.columns]):
        pass
    stats, res = time_queries(lambda q: vi.search(q[None], k)[1][0], queries, warm=warm)
    record(f"faiss_{vi.kind}_held", params="VectorIndex.search on the loaded auto index (FAISS only)",
           build_s=build_s, index_mb=estimate_index_bytes(vi.kind, vi.size, vi.dim, vi.params)["ram"] / 2**20,
           recall_at_10=recall([clean_ids(r) for r in res], truth, k), **stats)
    for per_window in (False, True):
        # Each variant on a store handle of its own: no rows cached by the other variant's queries.
        engine = SearchEngine(Store.open(store.uri), embedder=None, device="cpu")  # type: ignore[arg-type]

        def fn(q: np.ndarray, per_window: bool = per_window, engine: SearchEngine = engine) -> list[str]:
            return [h.id for h in engine.search_vector(q, MODALITY, k, per_window=per_window)]

        stats, res = time_queries(fn, queries, warm=warm)
        calls = count_lancedb_calls(lambda: fn(queries[0]))
        knobs = ", ".join(f"{a}={b}" for a, b in vi.params.items() if a != "metric")
        desc = f"SearchEngine.search_vector, index auto={vi.kind} ({knobs})"
        record("e2e_per_window" if per_window else "e2e_per_file", params=desc, build_s=build_s,
               index_mb=estimate_index_bytes(vi.kind, vi.size, vi.dim, vi.params)["ram"] / 2**20,
               lancedb_calls=calls, recall_at_10=recall(res, truth, k), **stats)
    engine = vi = None
    gc.collect()


def count_lancedb_calls(fn: Any) -> int:
    """LanceDB table/connection method calls made by ``fn()``."""
    import lancedb.db
    import lancedb.table

    count = 0
    saved: list[tuple[type, str, Any]] = []

    def wrap(cls: type, name: str) -> None:
        raw = cls.__dict__.get(name)
        if raw is None:
            return
        saved.append((cls, name, raw))
        if isinstance(raw, property):
            def get(self: Any, raw: property = raw) -> Any:
                nonlocal count
                count += 1
                return raw.fget(self)  # type: ignore[misc]
            setattr(cls, name, property(get))
        elif callable(raw):
            def call(*a: Any, raw: Any = raw, **kw: Any) -> Any:
                nonlocal count
                count += 1
                return raw(*a, **kw)
            setattr(cls, name, call)

    for name in ("search", "take_row_ids", "take_offsets", "count_rows", "checkout", "checkout_latest",
                 "list_indices", "to_arrow", "version", "schema"):
        wrap(lancedb.table.LanceTable, name)
    for name in ("open_table", "list_tables", "table_names"):
        wrap(lancedb.db.LanceDBConnection, name)
    try:
        fn()
    finally:
        for cls, name, raw in saved:
            setattr(cls, name, raw)
    return count


# --------------------------------------------------------------------------------- output
def print_table(rows: list[dict[str, Any]]) -> None:
    t = Table(title="Vector search, single-query latency (k=10, dim 1024)")
    for col in ("n", "method", "params", "build s", "index MB", "p50 ms", "p95 ms", "recall@10", "load"):
        t.add_column(col, justify="left" if col in ("method", "params") else "right")
    for r in rows:
        t.add_row(
            f"{r['n']:,}", r["method"], str(r.get("params", ""))[:70], f"{r.get('build_s', 0):.1f}",
            f"{r.get('index_mb', 0):.0f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
            f"{r['recall_at_10']:.3f}", f"{r.get('load_avg', 0):.1f}",
        )
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--centres", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--mix", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="FAISS threads (default: all cores)")
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="largest n for the HNSW methods")
    ap.add_argument("--skip-lancedb", action="store_true")
    ap.add_argument("--methods", type=lambda s: set(s.split(",")), default=set(METHODS),
                    help=f"comma list of {', '.join(METHODS)} (exact FAISS always runs: ground truth)")
    ap.add_argument("--lancedb-iterations", type=int, default=10, help="k-means iterations (FAISS: 10)")
    ap.add_argument("--lancedb-sample-rate", type=int, default=32, help="training rows per partition (FAISS: 32)")
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "work"))
    ap.add_argument("--keep", action="store_true", help="keep the generated databases")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vector_search.json"))
    args = ap.parse_args(argv)

    threads = set_threads(args.threads)
    centres = make_centres(args.centres, args.dim, args.seed + 12345)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "faiss_threads": threads, "ram_gb": round(psutil.virtual_memory().total / 2**30, 1)},
        "versions": {"faiss": faiss.__version__, "lancedb": lancedb.__version__, "numpy": np.__version__},
        "generator": {"centres": args.centres, "noise": args.noise, "mix": args.mix, "seed": args.seed,
                      "dim": args.dim},
        "args": vars(args),
    }

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        console.print(
            f"  {row['method']:<22} p50 {row['p50_ms']:8.2f} ms  p95 {row['p95_ms']:8.2f} ms  "
            f"recall@10 {row['recall_at_10']:.3f}  build {row.get('build_s', 0):7.1f} s  ({row.get('params', '')})"
        )
        out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=str))

    for n in args.sizes:
        bench_size(n, args, centres, emit)
    meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2, default=str))
    print_table(rows)
    console.print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
