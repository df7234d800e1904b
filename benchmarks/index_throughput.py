"""End-to-end `acsearch index` throughput against the model-only encode throughput, per engine.

    python benchmarks/index_throughput.py [--clips 48] [--arch audioclip-rn50] [--workers N]
                                          [--engine local|ray|both] [--encoders N]

Copies real 5 s ESC-50 clips (../shared/data/esc50-mini, repeated under new names when more are
asked for) into a temporary folder, then measures
  * model only: `Encoder.encode_audio` on the already-decoded windows, in the indexer's batches;
  * pipeline: `Index.add` on the folder (discover, decode in workers, hash, encode, LanceDB
    commits, FAISS build), into a fresh database, with each engine asked for (both by default,
    one after the other on the same clips): `local` (in-process) and `ray` (decode tasks + an
    encoder actor pool on a local Ray started here; its start-up time is reported apart).
Overhead = 1 - pipeline files/s / model-only files/s (target <= 15 % for local); the Ray engine's
cost over local is ray seconds / local seconds. `--arch audioclip-full` for the full-size model
(random weights: the speed is the same). Prints a table, writes JSON.
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
    parser.add_argument("--engine", choices=("local", "ray", "both"), default="both")
    parser.add_argument("--encoders", type=int, default=1, help="--engine ray: encoder actors")
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

        engines = ("local", "ray") if args.engine == "both" else (args.engine,)
        runs: dict[str, dict] = {}
        ray_start_s = None
        for engine in engines:
            if engine == "ray":
                import ray

                start = time.perf_counter()
                ray.init(include_dashboard=False, log_to_driver=False)
                ray_start_s = time.perf_counter() - start
            index = Index.open(Path(tmp) / f"db-{engine}", encoder=encoder)
            start = time.perf_counter()
            report = index.add(folder, IndexOptions(workers=args.workers, engine=engine, encoders=args.encoders))
            seconds = time.perf_counter() - start
            assert report.ok and report.indexed["audio"] == len(files), report.failed
            runs[engine] = {"seconds": seconds, "files_per_s": len(files) / seconds,
                            "windows_per_s": report.rows["audio"] / seconds, "rows": report.rows["audio"],
                            "overhead": 1 - (len(files) / seconds) / (len(files) / model_s),
                            "stage_seconds": report.stage_seconds}  # fmt: skip
        if ray_start_s is not None:
            ray.shutdown()

    model_rate = len(files) / model_s
    table = Table(title=f"index throughput: {len(files)} x 5 s clips, {args.arch}, {encoder.device}, "
                        f"{torch.get_num_threads()} threads")
    for col in ("path", "seconds", "files/s", "windows/s", "overhead vs model"):
        table.add_column(col, justify="right" if col != "path" else "left")
    table.add_row("model only (Encoder.encode_audio)", f"{model_s:.1f}", f"{model_rate:.2f}",
                  f"{len(windows) / model_s:.2f}", "")
    for engine, run in runs.items():
        table.add_row(f"acsearch index --engine {engine}", f"{run['seconds']:.1f}", f"{run['files_per_s']:.2f}",
                      f"{run['windows_per_s']:.2f}", f"{run['overhead'] * 100:.1f} %")
        for stage, secs in run["stage_seconds"].items():
            if secs > 0.005:
                table.add_row(f"  stage: {stage}", f"{secs:.2f}", "", "", "")
    console = Console()
    console.print(table)
    result = {
        "clips": len(files), "arch": args.arch, "device": str(encoder.device), "precision": encoder.precision,
        "threads": torch.get_num_threads(), "workers": args.workers, "encoders": args.encoders,
        "model_only_seconds": model_s, "model_only_files_per_s": model_rate, "engines": runs,
        "ray_start_seconds": ray_start_s, "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    if "local" in runs:
        console.print(f"local pipeline overhead: {runs['local']['overhead'] * 100:.1f} % (target <= 15 %)")
    if {"local", "ray"} <= runs.keys():
        result["ray_over_local"] = runs["ray"]["seconds"] / runs["local"]["seconds"]
        console.print(f"ray engine: {result['ray_over_local']:.2f}x the local engine's time "
                      f"(+ {ray_start_s:.1f} s to start Ray, not counted)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
