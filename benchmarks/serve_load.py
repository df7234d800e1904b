"""Load test of `acsearch serve`: text-search requests/s and latency under concurrent clients.

    python benchmarks/serve_load.py [--model PATH_OR_NAME] [--db DB] [--concurrency 1 4 16]
                                    [--requests 200] [--seconds 30] [--device cpu]

Starts the server in a subprocess on 127.0.0.1 (a free port; `python -m audioclip_search.server`,
the same code as `acsearch serve`), waits for /api/health, then for each concurrency level runs
that many client threads (httpx, keep-alive, one client per thread) issuing GET /api/search text
queries (distinct texts, cycled) until `--requests` are done or `--seconds` pass. Reports requests/s,
p50/p95/p99 latency and errors per level, and the server's text batching (texts per model call).
Then "find similar" by id (GET /api/similar/audio/{id}, no model call: snapshot, FAISS, row fetch)
at each `--similar-concurrency` level, over random stored ids.

`--baseline DIR` runs the same levels against a second server started from the source tree DIR
(another revision, e.g. ``git worktree add /tmp/base main`` or ``git archive main | tar -x -C
/tmp/base``) on the same index: both servers are up, and each level runs on the baseline then on
this tree, so load drifting over the run hits both alike. The table then shows both and the ratio.
Each level also reports the server's CPU time per request (Linux: from /proc), which depends much
less than requests/s on what else the machine runs.

`--rows N` adds N synthetic audio rows (``benchmarks/vector_search.py``'s clustered unit vectors of
the model's dim, one file each, bound to the same model) to the index and builds its FAISS index
(`auto`, as the indexer does), so the server searches a table of realistic size (`--rows 100000`).

By default the model is a tiny AudioCLIP (same code, narrow and shallow, random weights) saved as a
checkpoint, and the index is built from ../shared/data (esc50-mini clips + tuxpaint-triples sounds
and pictures with captions) in `--workdir`; `--model` / `--db` choose real ones. Loopback only.
Prints a table and writes JSON (default benchmarks/results/serve_load.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
QUERIES = [
    "a dog barking", "rain on a roof", "a frog croaking", "birds singing at dawn", "a car engine starting",
    "church bells", "a crying baby", "footsteps on gravel", "thunder and lightning", "a cat meowing",
    "a siren passing by", "glass breaking", "a clock ticking", "waves on a beach", "a helicopter",
    "keyboard typing", "a rooster crowing", "wind blowing", "a door knock", "a train horn",
    "people laughing", "a cow mooing", "a sneeze", "water pouring", "crackling fire", "a pig grunting",
    "an airplane overhead", "a vacuum cleaner", "insects buzzing", "a hen clucking", "a fire truck",
    "a drum beat", "a violin melody", "a duck quacking", "a crow cawing", "snoring", "a chainsaw",
    "a washing machine", "coughing", "a sheep bleating",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_checkpoint(workdir: Path) -> Path:
    import torch

    from audioclip_search.model import AudioCLIP

    path = workdir / "audioclip-tiny.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = AudioCLIP("audioclip-tiny").eval()
        torch.save({"arch": "audioclip-tiny", "state_dict": model.state_dict()}, path)
    return path


def build_index(db: Path, model: str, workdir: Path, files: int, device: str) -> dict:
    """esc50-mini clips + tuxpaint sounds and pictures (captioned) into `db` with `model`."""
    from audioclip_search.index import Index
    from audioclip_search.indexer.pipeline import IndexOptions

    tux = DATA / "tuxpaint-triples"
    rows = list(csv.DictReader((tux / "triples.csv").open()))[: files]
    captions = workdir / "captions.csv"
    paths = sorted((DATA / "esc50-mini" / "audio").glob("*.wav"))[: files]
    with captions.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption", "labels"])
        for row in rows:
            for column in ("audio", "image"):
                path = (tux / row[column]).resolve()
                paths.append(path)
                writer.writerow([str(path), row["caption"], row["category"]])
    index = Index.open(db, model, device=device)
    start = time.perf_counter()
    report = index.add(paths, IndexOptions(captions=captions, workers=0))
    return {"files": len(paths), "rows": report.rows, "failed": len(report.failed),
            "seconds": round(time.perf_counter() - start, 1)}


def add_synthetic_rows(db: str, rows: int, seed: int = 0) -> dict:
    """``rows`` synthetic audio rows (one file each) + the table's ``auto`` FAISS index."""
    import numpy as np
    import pyarrow as pa

    from audioclip_search.store import Store, VectorIndex
    from audioclip_search.store.schema import fixed_size_list

    store = Store.open(db)
    info = store.model_info() or {}
    dim = int(info["dim"])
    from vector_search import make_centres, make_points  # the same clustered generator as that benchmark

    rng = np.random.default_rng(seed)
    centres = make_centres(2000, dim, seed + 12345)
    start = time.perf_counter()
    for a in range(0, rows, 50_000):
        m = min(50_000, rows - a)
        x = make_points(m, centres, 1.0, 1.0, rng)
        store.add_rows("audio", pa.table({
            "path": [f"/synthetic/{i:09d}.wav" for i in range(a, a + m)],
            "embedding": fixed_size_list(x), "content_sha256": [f"{i:064x}" for i in range(a, a + m)],
            "start": pa.array(np.zeros(m)), "end": pa.array(np.full(m, 5.0)), "duration": pa.array(np.full(m, 5.0)),
            "model": [info["model"]] * m, "model_sha256": [info["model_sha256"]] * m}))
    store.optimize("audio")
    vi = VectorIndex.build(store, "audio", "auto", device="cpu")
    return {"rows": rows, "index": vi.kind, "seconds": round(time.perf_counter() - start, 1)}


def stored_ids(db: str, n: int, seed: int = 0) -> list[str]:
    import numpy as np

    from audioclip_search.store import Store

    ids = Store.open(db, read_only=True).ids("audio")
    return [str(x) for x in np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False)]


def start_server(db: str, model: str | None, device: str, port: int, log: Path,
                 source: Path | None = None) -> subprocess.Popen:
    """``acsearch serve`` (as users run it) from this tree, or from the source tree ``source``."""
    cmd = [sys.executable, "-m", "audioclip_search.server", "--db", db, "--port", str(port), "--host", "127.0.0.1",
           "--device", device, "--log-level", "warning"]
    if model:
        cmd += ["--model", model]
    tree = source or ROOT
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=tree, env=env)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (all its threads), or ``None`` off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /api/health within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_level(base: str, concurrency: int, requests: int, seconds: float, k: int, target: str,
              similar_ids: list[str] | None = None) -> dict:
    """`concurrency` threads share a budget of `requests` (stopping early after `seconds`): text
    queries, or "find similar" by the ids in ``similar_ids``."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def worker(slot: int) -> None:
        nonlocal issued
        with httpx.Client(base_url=base, timeout=60) as client:
            while True:
                with lock:
                    if issued >= requests or time.perf_counter() > deadline:
                        return
                    n = issued
                    issued += 1
                query = QUERIES[(n * 7 + slot) % len(QUERIES)]
                t0 = time.perf_counter()
                try:
                    if similar_ids:
                        item = similar_ids[(n * 7 + slot) % len(similar_ids)]
                        r = client.get(f"/api/similar/audio/{item}", params={"k": k, "target": target})
                    else:
                        r = client.get("/api/search", params={"q": query, "k": k, "target": target})
                    ok = r.status_code == 200 and r.json()["count"] > 0
                    why = "" if ok else f"{r.status_code} {r.text[:100]}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(why)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + len(errors),
        "ok": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2) if wall else 0.0,
        "p50_ms": round(percentile(ms, 0.50), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "p99_ms": round(percentile(ms, 0.99), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint name or path (default: a tiny AudioCLIP)")
    ap.add_argument("--db", default=None, help="an existing index (default: build one in --workdir)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=30.0, help="time cap per concurrency level")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--target", default="all")
    ap.add_argument("--rows", type=int, default=0, help="synthetic audio rows to add (e.g. 100000)")
    ap.add_argument("--similar-concurrency", type=int, nargs="*", default=[4],
                    help="concurrency levels of the find-similar-by-id run")
    ap.add_argument("--files", type=int, default=24, help="esc50 clips and tuxpaint triples to index (each)")
    ap.add_argument("--workdir", default=str(ROOT / "benchmarks" / "results" / "serve_load_work"))
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_load.json"))
    ap.add_argument("--baseline", default=None,
                    help="source tree of another revision to serve side by side (e.g. a worktree of main)")
    args = ap.parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)
    console = Console(width=None if sys.stdout.isatty() else 150)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    model = args.model or str(tiny_checkpoint(workdir))
    corpus = None
    if args.db:
        db = args.db
    else:
        name = "tiny" if args.model is None else Path(str(args.model)).stem
        db = str(workdir / (f"db-{name}-{args.files}" + (f"-r{args.rows}" if args.rows else "")))
        if not Path(db).exists():
            console.print(f"building the index {db} ...")
            corpus = build_index(Path(db), model, workdir, args.files, args.device)
            if args.rows:
                console.print(f"adding {args.rows:,} synthetic audio rows ...")
                corpus["synthetic"] = add_synthetic_rows(db, args.rows)
    similar_ids = stored_ids(db, 2000) if args.similar_concurrency else []
    trees = {"this": None}
    if args.baseline:
        trees = {"baseline": Path(args.baseline).resolve(), "this": None}
    servers: dict[str, dict] = {}
    levels: list[dict] = []
    try:
        for name, tree in trees.items():  # one after the other: each startup time is its own
            port = _free_port()
            log = workdir / f"server-{name}.log"
            proc = start_server(db, model, args.device, port, log, tree)
            srv = servers[name] = {"base": f"http://127.0.0.1:{port}", "proc": proc, "log": log}
            srv["startup"] = wait_healthy(srv["base"], srv["proc"], args.startup_timeout, srv["log"])
        for srv in servers.values():
            srv["info"] = httpx.get(f"{srv['base']}/api/info", timeout=30).json()
            run_level(srv["base"], 1, args.warmup, 60, args.k, args.target)
            if similar_ids:
                run_level(srv["base"], 1, args.warmup, 60, args.k, args.target, similar_ids)
        plan = [("text", c) for c in args.concurrency] + [("similar by id", c) for c in args.similar_concurrency]
        for kind, c in plan:
            for name, srv in servers.items():  # baseline first, then this tree, at every level
                level = measure(srv, kind, c, args, similar_ids)
                level["server"] = name
                levels.append(level)
                console.print(f"{name}: {kind}, concurrency {c}: {level['requests_per_s']} req/s, "
                              f"p50 {level['p50_ms']} ms, server CPU {level['server_cpu_ms']} ms/request")
    finally:
        for srv in servers.values():
            proc = srv["proc"]
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    print_table(console, levels, args, compare="baseline" in servers)
    info = servers["this"]["info"]
    rows = info["tables"]
    meta = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "model": info["model"]["display_name"], "model_sha256": info["model"]["sha256"][:16],
        "device": info["model"]["device"], "precision": info["model"]["precision"],
        "rows": {m: t["rows"] for m, t in rows.items()}, "corpus_build": corpus,
        "server_startup_s": {n: round(srv["startup"], 2) for n, srv in servers.items()},
        "baseline": str(trees.get("baseline")) if args.baseline else None,
        "k": args.k, "target": args.target,
        "requests_per_level": args.requests, "seconds_cap": args.seconds,
        "cpu_count": os.cpu_count(), "load_avg_1m_start": load_start, "load_avg_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(), "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    console.print(f"rows: {meta['rows']}  server start: {meta['server_startup_s']} s  "
                  f"1-min load average: {load_start} at the start, {meta['load_avg_1m']} at the end "
                  f"on {meta['cpu_count']} CPUs")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": levels}, indent=2))
    console.print(f"wrote {out}")
    return 0 if all(lv["errors"] == 0 for lv in levels) else 1


def measure(srv: dict, kind: str, concurrency: int, args: argparse.Namespace, similar_ids: list[str]) -> dict:
    """One level against one server, with the server's text batching and CPU time per request."""
    base, pid = srv["base"], srv["proc"].pid
    s0 = httpx.get(f"{base}/api/info", timeout=30).json()["stats"]
    cpu0 = cpu_seconds(pid)
    level = run_level(base, concurrency, args.requests, args.seconds, args.k, args.target,
                      similar_ids if kind != "text" else None)
    cpu1 = cpu_seconds(pid)
    s1 = httpx.get(f"{base}/api/info", timeout=30).json()["stats"]
    batches = s1["text_batches"] - s0["text_batches"]
    level["texts_per_model_call"] = round((s1["texts_embedded"] - s0["texts_embedded"]) / batches, 2) \
        if batches and kind == "text" else None
    level["server_cpu_ms"] = round((cpu1 - cpu0) * 1000 / level["requests"], 2) \
        if cpu0 is not None and cpu1 is not None and level["requests"] else None
    level["query"] = kind
    return level


def print_table(console: Console, levels: list[dict], args: argparse.Namespace, compare: bool) -> None:
    title = f"acsearch serve: text search and find-similar (k={args.k}, target={args.target})"
    if compare:
        title += f"; baseline = {args.baseline}"
    table = Table(title=title)
    cols = ["query", "conc.", "server", "req/s", "p50 ms", "p95 ms", "p99 ms", "CPU ms/req", "errors", "texts/call"]
    if compare:
        cols.append("req/s vs baseline")
    for col in cols:
        table.add_column(col, justify="right")
    by_key = {(lv["query"], lv["concurrency"], lv["server"]): lv for lv in levels}
    for lv in levels:
        row = [lv["query"], str(lv["concurrency"]), lv["server"], f"{lv['requests_per_s']:.1f}",
               f"{lv['p50_ms']:.1f}", f"{lv['p95_ms']:.1f}", f"{lv['p99_ms']:.1f}",
               "-" if lv["server_cpu_ms"] is None else f"{lv['server_cpu_ms']:.2f}", str(lv["errors"]),
               str(lv["texts_per_model_call"] or "-")]
        if compare:
            ref = by_key.get((lv["query"], lv["concurrency"], "baseline"))
            ratio = lv["requests_per_s"] / ref["requests_per_s"] if ref and ref["requests_per_s"] else None
            lv["vs_baseline"] = round(ratio, 2) if ratio and lv["server"] != "baseline" else None
            row.append(f"{ratio:.2f}x" if ratio and lv["server"] != "baseline" else "")
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
