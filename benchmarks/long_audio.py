"""Peak memory and time of `acsearch index` on long files: streaming decode keeps RSS bounded by a block.

    python benchmarks/long_audio.py [--hours 1 3] [--arch audioclip-tiny] [--keep DIR]

Makes real long files with soundfile (a sweep plus noise, so nothing compresses to nothing):
  * an N-hour 96 kHz stereo WAV (N=1: 1.4 GB; the 2 GiB size limit caps a 96 kHz stereo WAV at ~93 min,
    so longer durations are written as 48 kHz stereo FLAC);
  * an N-hour 96 kHz six-channel FLAC of digital silence (a few MB on disk, hours of samples).
Each is indexed by a fresh `acsearch index` process under `/usr/bin/time -v` (peak RSS, seconds),
next to the same command on one 5 s clip, whose peak is the model-and-runtime floor. The table
gives the excess over that floor (target: under 1.5 GB for any file within the limits). The tiny
model configuration keeps the run short; RSS above the floor does not depend on the model size
beyond its activations per batch. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def write_long(path: Path, seconds: float, rate: int, channels: int, silent: bool, fmt: str) -> Path:
    """Write ``seconds`` of audio block by block (never the whole signal in memory)."""
    rng = np.random.default_rng(0)
    block = rate * 10
    subtype = "PCM_16"
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format=fmt, subtype=subtype) as f:
        written = 0
        total = int(seconds * rate)
        while written < total:
            n = min(block, total - written)
            if silent:
                data = np.zeros((n, channels), np.float32)
            else:
                t = (written + np.arange(n)) / rate
                tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(2 * np.pi * t / 60)) * t)
                data = (tone[:, None] + 0.01 * rng.standard_normal((n, channels))).astype(np.float32)
            f.write(data)
            written += n
    return path


def measure(path: Path, db: Path, checkpoint: Path, arch: str) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "audioclip_search.cli", "index", str(path), "--db", str(db),
           "--model", str(checkpoint), "--arch", arch, "--workers", "0", "--no-vector-index"]  # fmt: skip
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)
    if res.returncode != 0 or match is None:
        raise RuntimeError(f"index failed ({res.returncode}): {res.stderr[-1500:]}")
    return {"file": path.name, "bytes": path.stat().st_size, "seconds": seconds,
            "peak_rss_mb": int(match.group(1)) / 1024, "exit": res.returncode}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--arch", default="audioclip-tiny")
    parser.add_argument("--keep", type=Path, default=None, help="write the files here instead of a temp folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "long_audio.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from audioclip_search.model import AudioCLIP

    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = folder / "model.pt"
        torch.manual_seed(0)
        torch.save({"arch": args.arch, "state_dict": AudioCLIP(args.arch).state_dict()}, checkpoint)
        floor_file = write_long(folder / "floor-5s.wav", 5.0, 44100, 1, False, "WAV")
        floor = measure(floor_file, folder / "floor.lancedb", checkpoint, args.arch)
        rows.append({**floor, "kind": "5 s clip (floor)"})
        for hours in args.hours:
            seconds = hours * 3600
            if seconds <= 90 * 60:
                loud = write_long(folder / f"{hours:g}h-96k-stereo.wav", seconds, 96000, 2, False, "WAV")
            else:
                loud = write_long(folder / f"{hours:g}h-48k-stereo.flac", seconds, 48000, 2, False, "FLAC")
            silent = write_long(folder / f"{hours:g}h-96k-6ch-silence.flac", seconds, 96000, 6, True, "FLAC")
            for path in (loud, silent):
                result = measure(path, folder / f"{path.stem}.lancedb", checkpoint, args.arch)
                rows.append({**result, "kind": f"{hours:g} h"})
                path.unlink()
    floor_mb = rows[0]["peak_rss_mb"]
    table = Table(title=f"acsearch index, one long file per process ({args.arch}, --workers 0)")
    for col in ("file", "size", "seconds", "peak RSS", "above floor"):
        table.add_column(col, justify="right")
    for r in rows:
        r["above_floor_mb"] = r["peak_rss_mb"] - floor_mb
        table.add_row(r["file"], f"{r['bytes'] / 2**20:.0f} MB", f"{r['seconds']:.0f}", f"{r['peak_rss_mb']:.0f} MB",
                      f"{r['above_floor_mb']:.0f} MB")  # fmt: skip
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
