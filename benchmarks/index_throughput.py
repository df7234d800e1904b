"""End-to-end `acsearch index` throughput against the model-only encode throughput.

    python benchmarks/index_throughput.py [--clips 48] [--arch audioclip-rn50] [--workers N]

Copies real 5 s ESC-50 clips (../shared/data/esc50-mini, repeated under new names when more are
asked for) into a temporary folder, then measures
  * model only: `Encoder.encode_audio` on the already-decoded windows, in the indexer's batches;
  * pipeline: `Index.add` on the folder (discover, decode in workers, hash, encode, LanceDB
    commits, FAISS build), into a fresh database.
Overhead = 1 - pipeline files/s / model-only files/s (target <= 15 %). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "esc50-mini" / "audio"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--arch", default="audioclip-rn50")
    parser.add_argument("--workers", type=int, default=None, help="default: the indexer's auto choice")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "index_throughput.json")
    args = parser.parse_args()

    from audioclip_search.audio import load_audio
    from audioclip_search.encoder import Encoder
    from audioclip_search.index import Index
    from audioclip_search.indexer.pipeline import IndexOptions
    from audioclip_search.indexer.windows import WindowSpec, split_windows
    from audioclip_search.model import AudioCLIP

    torch.manual_seed(0)
    encoder = Encoder(AudioCLIP(args.arch).eval(), device=args.device, precision=args.precision,
                      model_name=f"random-{args.arch}", model_sha256="0" * 64)
    sources = sorted(DATA.glob("*.wav"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for i in range(args.clips):
            shutil.copy(sources[i % len(sources)], folder / f"{i:05d}-{sources[i % len(sources)].name}")
        files = sorted(folder.glob("*.wav"))
        windows = [w for f in files for w in split_windows(load_audio(f)[0], WindowSpec())[0]]
        batch = encoder.micro_batch["audio"] * 4
        encoder.encode_audio(windows[:batch])  # warm-up
        start = time.perf_counter()
        for i in range(0, len(windows), batch):
            encoder.encode_audio(windows[i : i + batch])
        model_s = time.perf_counter() - start

        index = Index.open(Path(tmp) / "db", encoder=encoder)
        start = time.perf_counter()
        report = index.add(folder, IndexOptions(workers=args.workers))
        pipeline_s = time.perf_counter() - start
        assert report.ok and report.indexed["audio"] == len(files), report.failed

    model_rate = len(files) / model_s
    pipe_rate = len(files) / pipeline_s
    overhead = 1 - pipe_rate / model_rate
    table = Table(title=f"index throughput: {len(files)} x 5 s clips, {args.arch}, {encoder.device}, "
                        f"{torch.get_num_threads()} threads")
    for col in ("path", "seconds", "files/s"):
        table.add_column(col, justify="right" if col != "path" else "left")
    table.add_row("model only (Encoder.encode_audio)", f"{model_s:.1f}", f"{model_rate:.2f}")
    table.add_row("acsearch index pipeline", f"{pipeline_s:.1f}", f"{pipe_rate:.2f}")
    for stage, secs in report.stage_seconds.items():
        table.add_row(f"  stage: {stage}", f"{secs:.2f}", "")
    console = Console()
    console.print(table)
    console.print(f"pipeline overhead: {overhead * 100:.1f} % (target <= 15 %)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "clips": len(files), "arch": args.arch, "device": str(encoder.device), "precision": encoder.precision,
        "threads": torch.get_num_threads(), "workers": args.workers, "model_only_seconds": model_s,
        "pipeline_seconds": pipeline_s, "model_only_files_per_s": model_rate, "pipeline_files_per_s": pipe_rate,
        "overhead": overhead, "stage_seconds": report.stage_seconds,
    }, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
