"""Decode throughput: today's in-process decoders (PyAV, soundfile, soxr) against an earlier revision.

    python benchmarks/decode_speed.py [--files 40] [--old-rev 8d8fc9e] [--repeats 3]

The baseline is the product's own ``audio.py`` as it was at ``--old-rev`` (ffprobe + ffmpeg
subprocesses per compressed file, torchaudio-free for 44.1 kHz input), loaded from git into a
temporary module, so both run side by side in one process on the same files. Files are real 5 s
ESC-50 clips (../shared/data/esc50-mini) as WAV, and the same clips encoded to MP3, M4A and Opus with
PyAV. Each path decodes every file to mono at its native rate (the baseline's resampler, torchaudio,
is no longer installed; resampling is measured by the resampler tests). Prints a table (files/s,
ratio new/old) and writes JSON. Needs ``ffmpeg``/``ffprobe`` on PATH for the baseline's compressed rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "esc50-mini" / "audio"
sys.path.insert(0, str(ROOT))


def load_old_module(rev: str, folder: Path):  # noqa: ANN201 - a module object
    """The product's audio.py at ``rev``, importable on its own (its one relative import rewritten)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:audioclip_search/audio.py"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    source = source.replace("from .errors import", "from audioclip_search.errors import")
    path = folder / "old_audio.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_audio", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_audio"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def throughput(decode, files: list[Path], repeats: int) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for f in files:
            wave, rate = decode(f)
            assert rate > 0 and wave.shape[1] > 0
        best = min(best, time.perf_counter() - start)
    return len(files) / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--old-rev", default="8d8fc9e", help="git revision whose audio.py is the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_speed.json")
    args = parser.parse_args()

    from audioclip_search.audio import load_audio
    from tests.audio_files import encode

    console = Console()
    have_ffmpeg = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
    sources = sorted(DATA.glob("*.wav"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        old = load_old_module(args.old_rev, tmp_path)
        by_format: dict[str, list[Path]] = {".wav": [], ".mp3": [], ".m4a": [], ".opus": []}
        for i in range(args.files):
            src = sources[i % len(sources)]
            frames, rate = sf.read(src, dtype="float32", always_2d=True)
            for suffix, files in by_format.items():
                dst = tmp_path / f"{i:04d}{suffix}"
                if suffix == ".wav":
                    shutil.copy(src, dst)
                else:
                    encode(dst, frames, rate)
                files.append(dst)
        for suffix, files in by_format.items():
            new = throughput(lambda f: load_audio(f, sample_rate=None), files, args.repeats)
            needs_ffmpeg = suffix != ".wav"
            base = None
            if not needs_ffmpeg or have_ffmpeg:
                base = throughput(lambda f: old.load_audio(f, sample_rate=None), files, args.repeats)
            results.append({"format": suffix.lstrip("."), "files": len(files), "new_files_per_s": new,
                            "old_files_per_s": base, "ratio": None if base is None else new / base})  # fmt: skip
    table = Table(title=f"decode to mono, {args.files} real 5 s clips per format (old = {args.old_rev})")
    for col in ("format", "old files/s", "new files/s", "new / old"):
        table.add_column(col, justify="right")
    for r in results:
        old_rate = "n/a (no ffmpeg)" if r["old_files_per_s"] is None else f"{r['old_files_per_s']:.1f}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        table.add_row(r["format"], old_rate, f"{r['new_files_per_s']:.1f}", ratio)
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"old_rev": args.old_rev, "results": results}, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
