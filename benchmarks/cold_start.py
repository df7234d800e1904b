"""Cold-start cost of the CLI: a fresh `acsearch query` against a fresh `acsearch info`.

    python benchmarks/cold_start.py [--model CKPT] [--db DB] [--repeats 3]

Each command runs in a new process, as a user types it, on the same database; the figure is the
median wall time of `--repeats` runs after one warm-up run (so the OS page cache and Python's
byte-code cache are warm, as on a machine in use). `info` opens the database only; a text query
also loads the checkpoint and runs the text tower; an audio query runs the audio tower. The target
is a text query within 2x of `info`.

Without `--model`, the checkpoint is the full-size AudioCLIP with the reference fixture's
deterministic weights (shared/reference/weights.py), saved as a plain state dict: the same 537 MB
of tensors as the released checkpoint. Without `--db`, a database is made by indexing two ESC-50
clips with that checkpoint. Prints a table and writes JSON (default
benchmarks/results/cold_start.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"
CLIPS = ["4-102844-A-49.wav", "4-102871-A-42.wav"]


def fixture_checkpoint(folder: Path) -> Path:
    """The fixture's deterministic full-size weights saved as a checkpoint file."""
    import torch

    from audioclip_search.reference_check import reference_model

    path = folder / "audioclip-rn50-fixture.pt"
    torch.save(reference_model(REFERENCE).state_dict(), path)
    return path


def _env(model: Path, pycache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["ACSEARCH_MODEL"] = str(model)
    # An installed package has its byte code compiled; a checkout run with PYTHONDONTWRITEBYTECODE
    # would recompile every imported module on every start and measure the compiler instead.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one fresh `acsearch` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "audioclip_search.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"acsearch {' '.join(args)} failed ({proc.returncode}):\n{err[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="checkpoint file (default: fixture weights)")
    parser.add_argument("--db", default=None, help="database (default: two clips indexed into a temp one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cold_start.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="acsearch-cold-"))
    try:
        model = args.model or fixture_checkpoint(work)
        env = _env(model, work / "pycache")
        db = args.db
        clip = SHARED / "data" / "esc50-mini" / "audio" / CLIPS[0]
        if db is None:
            media = work / "media"
            media.mkdir()
            for name in CLIPS:
                shutil.copy(SHARED / "data" / "esc50-mini" / "audio" / name, media / name)
            db = str(work / "db.lancedb")
            _run(["index", str(media), "--db", db], env)
        commands = {
            "info": ["info", "--db", db],
            "query --text": ["query", "--text", "dog bark", "--db", db],
            "query --audio": ["query", "--audio", str(clip), "--db", db],
        }
        rows = {}
        for label, argv in commands.items():
            _run(argv, env)  # warm-up: page cache, byte-code cache
            runs = [_run(argv, env) for _ in range(args.repeats)]
            rows[label] = {"seconds": statistics.median(t for t, _ in runs),
                           "peak_rss_gb": max(r for _, r in runs), "runs": [t for t, _ in runs]}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = rows["info"]["seconds"]
    table = Table(title=f"cold start, median of {args.repeats} fresh processes")
    for col in ("command", "seconds", "x info", "peak RSS GB"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for label, r in rows.items():
        r["ratio_to_info"] = r["seconds"] / base
        table.add_row(f"acsearch {label}", f"{r['seconds']:.2f}", f"{r['ratio_to_info']:.2f}",
                      f"{r['peak_rss_gb']:.2f}")
    console = Console()
    console.print(table)
    ratio = rows["query --text"]["ratio_to_info"]
    console.print(f"cold text query / cold info: {ratio:.2f}x (target <= 2x) "
                  f"{'PASS' if ratio <= 2.0 else 'FAIL'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": str(args.model or "fixture weights"), "repeats": args.repeats,
                                    "results": rows, "text_query_over_info": ratio}, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
