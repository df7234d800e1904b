"""The plan step at scale: the columnar out-of-core diff (indexer/plan.py) against the per-file
Python dict it replaced, on synthetic file records (no model), 10^6 and 10^7 files.

    python benchmarks/plan_scale.py [--counts 1000000 10000000] [--dict-max 1000000]

For each count a LanceDB table holds the stored states (``path, size, mtime, content_sha256``) of
the archive as the last run left it; the listing (what discovery found now) has 1 % new files,
5 % changed (size differs), 1 % of the stored files gone, the rest unchanged. Each measurement runs
in a fresh process, so its peak RSS (``ru_maxrss``) is its own. ``columnar`` is
``diff_listing(listing batches, table scan)``; ``dict`` is the previous planner (a ``{path:
state}`` dict of the table, then a lookup per listed file), run up to ``--dict-max`` files. Prints a
table and writes ``benchmarks/results/plan_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCH = 262_144


def _paths(start: int, stop: int):  # noqa: ANN202 - pa.Array
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    i = pa.array(np.arange(start, stop, dtype=np.int64))
    folder = pc.cast(pc.bit_wise_and(i, 1023), pa.string())
    return pc.binary_join_element_wise("/archive/sounds/d", folder, "/clip-", pc.cast(i, pa.string()), ".wav", "")


def _stored_batches(n: int):  # noqa: ANN202
    """The table as the last run left it: files 0 .. n-1 (sizes = 1000 + i, mtime = i)."""
    import numpy as np
    import pyarrow as pa

    for s in range(0, n, BATCH):
        e = min(n, s + BATCH)
        idx = np.arange(s, e, dtype=np.int64)
        yield pa.record_batch([_paths(s, e), pa.array(1000 + idx), pa.array(idx.astype(np.float64)),
                               pa.array(np.full(e - s, "ab" * 32))],
                              names=["path", "size", "mtime", "content_sha256"])  # fmt: skip


def _listing_batches(n: int):  # noqa: ANN202
    """Now: files n//100 .. n + n//100 - 1 (1 % gone at the start, 1 % new at the end), every 20th changed."""
    import numpy as np
    import pyarrow as pa

    first, last = n // 100, n + n // 100
    for s in range(first, last, BATCH):
        e = min(last, s + BATCH)
        idx = np.arange(s, e, dtype=np.int64)
        size = 1000 + idx + (idx % 20 == 0)
        yield pa.record_batch([_paths(s, e), pa.array(size), pa.array(idx.astype(np.float64)),
                               pa.array(idx - first)], names=["path", "size", "mtime", "pos"])  # fmt: skip


def make_table(folder: Path, n: int) -> None:
    import lancedb
    import pyarrow as pa

    schema = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                        ("content_sha256", pa.string())])  # fmt: skip
    db = lancedb.connect(str(folder))
    db.create_table("audio", data=pa.RecordBatchReader.from_batches(schema, _stored_batches(n)), mode="overwrite")


def measure(folder: Path, n: int, method: str) -> dict:
    """Run in a child process: one plan of ``n`` files by ``method``; time and peak RSS."""
    import lancedb

    tbl = lancedb.connect(str(folder)).open_table("audio")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if method == "columnar":
        from audioclip_search.indexer.plan import diff_listing, scan_states

        stored = scan_states(tbl.to_lance())
        result = diff_listing(_listing_batches(n), stored, folder, stored_rows=tbl.count_rows())
        counts = dict(result.counts)
        result.cleanup()
    else:  # the previous planner: a dict of every stored state, a lookup per listed file
        states = {}
        for batch in tbl.to_lance().to_batches(columns=["path", "size", "mtime", "content_sha256"]):
            for p, s, m, h in zip(*(batch.column(c).to_pylist() for c in batch.schema.names), strict=True):
                states[p] = (s, m, h)
        counts = dict.fromkeys(("new", "changed", "unchanged", "gone"), 0)
        present = set()
        for batch in _listing_batches(n):
            for p, s, m in zip(*(batch.column(c).to_pylist() for c in ("path", "size", "mtime")), strict=True):
                present.add(p)
                st = states.get(p)
                if st is None:
                    counts["new"] += 1
                elif st[0] != s or abs(st[1] - m) > 1e-6:
                    counts["changed"] += 1
                else:
                    counts["unchanged"] += 1
        counts["gone"] = sum(1 for p in states if p not in present)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"files": n, "method": method, "seconds": seconds, "peak_rss_mb": peak_kb / 1024,
            "baseline_rss_mb": rss0 / 1024, "counts": counts}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--dict-max", type=int, default=1_000_000, help="largest count the dict baseline runs at")
    ap.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]), args.child[2])))
        return
    from rich.console import Console
    from rich.table import Table

    results = []
    for n in args.counts:
        with tempfile.TemporaryDirectory(prefix="plan-scale-") as tmp:
            t0 = time.perf_counter()
            make_table(Path(tmp), n)
            print(f"{n:,} stored records written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            for method in ("columnar", "dict"):
                if method == "dict" and n > args.dict_max:
                    continue
                out = subprocess.run([sys.executable, __file__, "--child", tmp, str(n), method],
                                     capture_output=True, text=True, check=True)  # fmt: skip
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(results[-1], file=sys.stderr)
    table = Table(title="plan step: discovered files vs stored states (no model)")
    for col in ("files", "method", "seconds", "files/s", "peak RSS MB", "RSS vs smallest", "new", "changed", "gone"):
        table.add_column(col, justify="right")
    smallest = {}
    for r in results:
        base = smallest.setdefault(r["method"], r["peak_rss_mb"])
        c = r["counts"]
        table.add_row(f"{r['files']:,}", r["method"], f"{r['seconds']:.1f}", f"{r['files'] / r['seconds']:,.0f}",
                      f"{r['peak_rss_mb']:.0f}", f"{r['peak_rss_mb'] / base:.2f}x", f"{c['new']:,}",
                      f"{c['changed']:,}", f"{c['gone']:,}")  # fmt: skip
    Console(width=150).print(table)
    for n in args.counts:
        pair = {r["method"]: r for r in results if r["files"] == n}
        if len(pair) == 2:
            print(
                f"{n:,} files: columnar / dict = {pair['columnar']['seconds'] / pair['dict']['seconds']:.2f}x time, "
                f"{pair['columnar']['peak_rss_mb'] / pair['dict']['peak_rss_mb']:.2f}x peak RSS"
            )
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plan_scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
