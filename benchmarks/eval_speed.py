"""Evaluator embedding speed and numerical identity: this tree against an earlier revision.

    python benchmarks/eval_speed.py [--old-rev ca3a346] [--arch audioclip-tiny] [--clips 0] [--repeats 2]

The earlier revision is exported with ``git archive`` into a temporary folder; each side runs in
its own subprocess (``PYTHONPATH`` set to its tree) on the same clips: the real ESC-50-mini and
UrbanSound8K-mini sets (../shared/data), embedded with each dataset's evaluation preprocessing by
``evaluation.embeddings.embed_audio_items`` (no cache), on CPU, with a seeded random model of
``--arch``. Both sides import the indexer's reader before the clock starts (the new side needs
it; its one-off import cost, mostly LanceDB through the store package, is reported apart).
Prints a table (clips/s per side, ratio new/old, the largest difference between the two sides'
embeddings) and writes JSON to benchmarks/results/eval_speed.json. The sides alternate
``--repeats`` times and the best time of each counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = (("esc50", DATA / "esc50-mini"), ("us8k", DATA / "us8k-mini"))


def child(arch: str, clips: int, out: Path) -> None:
    """Run in a subprocess with PYTHONPATH set to one tree: embed each dataset, save vectors and times."""
    start = time.perf_counter()
    import numpy as np
    import torch

    from audioclip_search.datasets import open_dataset
    from audioclip_search.encoder import Encoder
    from audioclip_search.evaluation.embeddings import embed_audio_items
    from audioclip_search.indexer import pipeline, reader  # noqa: F401 - the new side imports them on first use
    from audioclip_search.model import AudioCLIP

    imported = time.perf_counter() - start
    torch.manual_seed(0)
    encoder = Encoder(AudioCLIP(arch).eval(), device="cpu")
    found: dict[str, object] = {"import_s": imported}
    arrays: dict[str, np.ndarray] = {}
    for name, root in DATASETS:
        dataset = open_dataset(name, root)
        items = dataset.items()[: clips or None]
        begin = time.perf_counter()
        emb = embed_audio_items(encoder, dataset, items, cache=None)
        found[name] = {"clips": len(items), "seconds": time.perf_counter() - begin, "failed": len(emb.failures),
                       "load_s": emb.seconds_load, "encode_s": emb.seconds_encode}
        arrays[name] = emb.vectors
        arrays[f"{name}_indices"] = np.asarray(emb.indices)
    np.savez(out, **arrays)
    out.with_suffix(".json").write_text(json.dumps(found))


def export(rev: str, folder: Path) -> Path:
    """The package as it was at ``rev``, unpacked under ``folder``."""
    archive = folder / "old.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), rev, "audioclip_search"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "old", filter="data")
    return folder / "old"


def run_side(tree: Path, arch: str, clips: int, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, __file__, "--child", str(out), "--arch", arch, "--clips", str(clips)],
                   env=env, check=True, cwd=tree)
    return json.loads(out.with_suffix(".json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-rev", default="ca3a346")
    parser.add_argument("--arch", default="audioclip-tiny")
    parser.add_argument("--clips", type=int, default=0, help="clips per dataset (0: all)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.arch, args.clips, args.child)
        return 0

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        trees = {"old": export(args.old_rev, folder), "new": ROOT}
        best: dict[str, dict] = {}
        for r in range(args.repeats):
            for side, tree in trees.items():
                found = run_side(tree, args.arch, args.clips, folder / f"{side}{r}.npz")
                for name, _ in DATASETS:
                    if name not in best.get(side, {}) or found[name]["seconds"] < best[side][name]["seconds"]:
                        best.setdefault(side, {})[name] = found[name]
                best[side]["import_s"] = min(best[side].get("import_s", float("inf")), found["import_s"])
        old, new = np.load(folder / "old0.npz"), np.load(folder / "new0.npz")
        rows = []
        for name, _ in DATASETS:
            same_rows = np.array_equal(old[f"{name}_indices"], new[f"{name}_indices"])
            diff = float(np.abs(old[name] - new[name]).max()) if same_rows and old[name].size else float("nan")
            o, n = best["old"][name], best["new"][name]
            rows.append({"dataset": name, "clips": n["clips"], "old_clips_per_s": o["clips"] / o["seconds"],
                         "new_clips_per_s": n["clips"] / n["seconds"],
                         "ratio_new_over_old": o["seconds"] / n["seconds"],
                         "max_abs_diff": diff, "same_rows": same_rows, "allclose": same_rows and bool(
                             np.allclose(old[name], new[name], atol=1e-6, rtol=1e-5)),
                         "old": o, "new": n})
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    table = Table(title=f"evaluator embedding, {args.arch} on CPU: {args.old_rev} vs this tree")
    for col in ("dataset", "clips", "old clips/s", "new clips/s", "speed new/old", "max |diff|", "allclose"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(row["dataset"], str(row["clips"]), f"{row['old_clips_per_s']:.2f}",
                      f"{row['new_clips_per_s']:.2f}", f"{row['ratio_new_over_old']:.2f}",
                      f"{row['max_abs_diff']:.2e}", str(row["allclose"]))
    console = Console()
    console.print(table)
    console.print(f"import: old {best['old']['import_s']:.2f} s, new {best['new']['import_s']:.2f} s; "
                  f"load average before {' '.join(load_before)}, after {' '.join(load_after)}")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "eval_speed.json").write_text(json.dumps({
        "old_rev": args.old_rev, "arch": args.arch, "repeats": args.repeats, "rows": rows,
        "import_s": {side: best[side]["import_s"] for side in best},
        "loadavg_before": load_before, "loadavg_after": load_after}, indent=2))
    return 0 if all(row["allclose"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
