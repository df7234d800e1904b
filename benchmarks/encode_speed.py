"""Encoding throughput of AudioCLIP: clips/s, images/s, texts/s and peak memory.

    python benchmarks/encode_speed.py [--device cpu|cuda|auto] [--precision fp32 bf16 ...] [--threads N]

Measures the product's inference path (`Encoder`: cached filterbank, folded BatchNorm,
channels-last, micro-batches) and, for comparison, the plain module (`AudioCLIP.encode_*`, the
same arithmetic as the official code) on 5 s clips at batch 1 and 8, 224 px images at batch 1 and
16, and texts at batch 64. Each figure is the median of timed runs after a warm-up. For every
precision other than fp32 it also runs the reference fixture and reports the core-tier agreement,
so a faster precision is never reported without its accuracy cost.
Prints a table and writes JSON (default benchmarks/results/encode_speed.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
OFFICIAL_CPU = {  # the official implementation on the 2-core CI CPU, fp32 (shared/reference/README.md)
    "audio_b1": 1.85, "audio_b8": 1.91, "image_b1": 6.5, "image_b16": 7.3, "text_b64": 19.9, "peak_rss_gb": 2.28,
}


def _median_rate(fn, items: int, repeats: int, sync) -> float:  # noqa: ANN001
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return items / statistics.median(times)


def _encoder_rates(encoder, clips, images, texts, repeats: int, sync) -> dict:  # noqa: ANN001
    return {
        "audio_b1": _median_rate(lambda: encoder.encode_audio(clips[:1]), 1, repeats, sync),
        "audio_b8": _median_rate(lambda: encoder.encode_audio(clips), 8, max(2, repeats // 2), sync),
        "image_b1": _median_rate(lambda: encoder.encode_images(images[:1]), 1, repeats, sync),
        "image_b16": _median_rate(lambda: encoder.encode_images(images), 16, repeats, sync),
        "text_b64": _median_rate(lambda: encoder.encode_texts(texts), 64, repeats, sync),
    }


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def fixture_agreement(model, device: torch.device, precision: str) -> dict:  # noqa: ANN001
    """Run the reference fixture in `precision`; returns check.py's verdict per tier."""
    from audioclip_search.reference_check import produce_fixture_arrays, run_check

    arrays = produce_fixture_arrays(model, REFERENCE, device=device, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "produced.npz"
        np.savez(path, **arrays)
        status, report = run_check(path, REFERENCE)
        core_status, core_report = run_check(path, REFERENCE, core_only=True)
    worst = [line for line in report.splitlines() if " FAIL" in line or " WARN" in line]
    return {"both_tiers_pass": status == 0, "core_tier_pass": core_status == 0, "failing_rows": worst}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", nargs="+", default=None, help="default: fp32 and bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-plain", action="store_true", help="skip the un-optimised module path")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encode_speed.json")
    args = parser.parse_args()

    from audioclip_search.devices import autocast, resolve_device
    from audioclip_search.encoder import Encoder
    from audioclip_search.model import AudioCLIP
    from audioclip_search.reference_check import reference_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = args.precision or (["fp32", "bf16"] if device.type == "cpu" else ["fp32", "bf16", "fp16"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    have_fixture = (REFERENCE / "weights.py").is_file()
    model = reference_model(REFERENCE) if have_fixture else AudioCLIP().eval()
    model = model.to(device)

    clips = torch.randn(8, 1, 220500, generator=torch.Generator().manual_seed(0)).clamp(-1, 1) * 0.3
    images = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    texts = [f"the sound of a {w} in the distance, recorded outdoors" for w in range(64)]
    from audioclip_search.text import tokenize

    tokens = tokenize(texts)
    rows = []
    for precision in precisions:
        result = {"path": "Encoder", "precision": precision,
                  **_encoder_rates(Encoder(model, device=device, precision=precision), clips, images, texts,
                                   args.repeats, sync)}
        if precision != "fp32" and have_fixture:
            result["fixture"] = fixture_agreement(model, device, precision)
        rows.append(result)
    if not args.skip_plain:
        result = {"path": "AudioCLIP module", "precision": "fp32"}

        def plain(fn, x):  # noqa: ANN001, ANN202
            def run():  # noqa: ANN202
                with torch.inference_mode(), autocast(device, "fp32"):
                    fn(x.to(device))
            return run

        result["audio_b1"] = _median_rate(plain(model.encode_audio, clips[:1] * 32768), 1, args.repeats, sync)
        result["audio_b8"] = _median_rate(plain(model.encode_audio, clips * 32768), 8, 2, sync)
        result["image_b1"] = _median_rate(plain(model.encode_image, images[:1]), 1, args.repeats, sync)
        result["image_b16"] = _median_rate(plain(model.encode_image, images), 16, args.repeats, sync)
        result["text_b64"] = _median_rate(plain(model.encode_text, tokens), 64, args.repeats, sync)
        rows.append(result)

    peak = _peak_rss_gb()
    table = Table(title=f"AudioCLIP encoding throughput on {device} ({torch.get_num_threads()} threads)")
    for col in ("path", "precision", "clips/s b1", "clips/s b8", "img/s b1", "img/s b16", "texts/s b64", "fixture"):
        table.add_column(col, justify="right" if "/" in col else "left")
    for r in rows:
        fx = r.get("fixture")
        verdict = "-" if fx is None else ("both tiers PASS" if fx["both_tiers_pass"] else
                                         "core PASS" if fx["core_tier_pass"] else "core FAIL")
        table.add_row(r["path"], r["precision"], *(f"{r[k]:.2f}" for k in
                      ("audio_b1", "audio_b8", "image_b1", "image_b16", "text_b64")), verdict)
    if device.type == "cpu":
        table.add_row("official (README)", "fp32", *(f"{OFFICIAL_CPU[k]:.2f}" for k in
                      ("audio_b1", "audio_b8", "image_b1", "image_b16", "text_b64")), "-")
    console = Console()
    console.print(table)
    fp32 = next(r for r in rows if r["path"] == "Encoder" and r["precision"] == "fp32")
    speedup = fp32["audio_b8"] / OFFICIAL_CPU["audio_b8"]
    console.print(f"peak RSS {peak:.2f} GB; fp32 audio batch-8 speed-up over the official CPU figure: {speedup:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else
        platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": sys.version.split()[0], "results": rows,
        "peak_rss_gb": peak, "official_cpu_reference": OFFICIAL_CPU,
        "audio_b8_speedup_vs_official_cpu": speedup if device.type == "cpu" else None,
    }, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
