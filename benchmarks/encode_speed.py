"""Encoding throughput of AudioCLIP: clips/s, images/s, texts/s and peak memory, against a baseline.

    python benchmarks/encode_speed.py [--official PATH] [--device cpu|cuda|auto] [--precision fp32 bf16 ...]
                                      [--threads N]

Measures the product's inference path (`Encoder`: cached filterbank, folded BatchNorm,
channels-last, micro-batches) on real 5 s clips (esc50-mini) at batch 1 and 8, 224 px images at
batch 1 and 16, and texts at batch 64, and, in the same run, a baseline:
  * with `--official PATH` (a checkout of AndreyGuzhov/AudioCLIP, commit 45327aa): the authors' own
    model code, imported from the checkout as it is (see benchmarks/official_audioclip.py);
  * without it: our module path (`AudioCLIP.encode_*`), which does the official arithmetic.
Both run the reference fixture's deterministic full-size weights. Each figure is the median of
timed runs after a warm-up, the paths taking turns call by call so that load changes hit all
alike; the table gives each path's speed-up over the baseline. For every
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
CLIP_DIR = ROOT.parent / "shared" / "data" / "esc50-mini" / "audio"
WORKLOADS = ("audio_b1", "audio_b8", "image_b1", "image_b16", "text_b64")


def _interleaved_rates(paths: dict[str, dict], workloads: tuple[str, ...], repeats: int, sync) -> dict:  # noqa: ANN001
    """items/s per path and workload: median of `repeats` timed calls after one warm-up.

    The paths take turns call by call, so a change in machine load (a shared CI box) hits all of
    them alike and the ratios stay fair. A job is (callable, items per call)."""
    times: dict[str, dict[str, list[float]]] = {name: {k: [] for k in workloads} for name in paths}
    for k in workloads:
        for jobs in paths.values():
            jobs[k][0]()  # warm-up
        sync()
        for _ in range(max(2, repeats // 2) if k == "audio_b8" else repeats):
            for name, jobs in paths.items():
                start = time.perf_counter()
                jobs[k][0]()
                sync()
                times[name][k].append(time.perf_counter() - start)
    return {name: {k: paths[name][k][1] / statistics.median(times[name][k]) for k in workloads}
            for name in paths}


def _encoder_jobs(encoder, clips, images, texts) -> dict:  # noqa: ANN001
    return {
        "audio_b1": (lambda: encoder.encode_audio(clips[:1]), 1),
        "audio_b8": (lambda: encoder.encode_audio(clips), 8),
        "image_b1": (lambda: encoder.encode_images(images[:1]), 1),
        "image_b16": (lambda: encoder.encode_images(images), 16),
        "text_b64": (lambda: encoder.encode_texts(texts), 64),
    }


def _module_jobs(encode_audio, encode_image, encode_text, clips, images, tokens, device) -> dict:  # noqa: ANN001
    """The plain modules, called as the official code is: fp32, inference mode, one call per batch."""

    def plain(fn, x):  # noqa: ANN001, ANN202
        def run():  # noqa: ANN202
            with torch.inference_mode():
                fn(x.to(device))
        return run

    audio = clips * 32768.0  # the int16 scale the audio head expects
    return {
        "audio_b1": (plain(encode_audio, audio[:1]), 1),
        "audio_b8": (plain(encode_audio, audio), 8),
        "image_b1": (plain(encode_image, images[:1]), 1),
        "image_b16": (plain(encode_image, images), 16),
        "text_b64": (plain(encode_text, tokens), 64),
    }


def real_clips(count: int = 8) -> torch.Tensor:
    """The first `count` esc50-mini clips (5 s, 44.1 kHz) in [-1, 1], (count, 1, 220500)."""
    import soundfile as sf

    names = sorted(p.name for p in CLIP_DIR.glob("*.wav"))[:count]
    if len(names) < count:
        raise SystemExit(f"need {count} clips in {CLIP_DIR}, found {len(names)}")
    return torch.stack([torch.from_numpy(sf.read(CLIP_DIR / n, dtype="float32")[0]).reshape(1, -1) for n in names])


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


def official_baseline(checkout: Path):  # noqa: ANN201
    """The authors' AudioCLIP with the fixture's weights, and its three encoders."""
    sys.path.insert(0, str(REFERENCE))
    try:
        import weights  # the fixture's deterministic generator
    finally:
        sys.path.remove(str(REFERENCE))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from official_audioclip import official_model

    model = official_model(checkout, weights.deterministic_state_dict(weights.load_manifest()))
    clip_cls = type(model).__mro__[1]  # model.clip.CLIP: encode_text on token ids, not label lists
    return model, model.encode_audio, model.encode_image, lambda tokens: clip_cls.encode_text(model, tokens)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=None,
                        help="checkout of AndreyGuzhov/AudioCLIP to use as the baseline (default: our module path)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", nargs="+", default=None, help="default: fp32 and bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--audio-only", action="store_true", help="measure the audio workloads only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encode_speed.json")
    args = parser.parse_args()

    from audioclip_search.encoder import Encoder
    from audioclip_search.reference_check import reference_model
    from audioclip_search.text import tokenize

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    precisions = args.precision or (["fp32", "bf16"] if device.type == "cpu" else ["fp32", "bf16", "fp16"])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if not (REFERENCE / "weights.py").is_file():
        raise SystemExit(f"the reference fixture is needed for the weights: {REFERENCE}")
    model = reference_model(REFERENCE).to(device)

    clips = real_clips(8)
    images = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    texts = [f"the sound of a {w} in the distance, recorded outdoors" for w in range(64)]
    tokens = tokenize(texts)
    workloads = ("audio_b1", "audio_b8") if args.audio_only else WORKLOADS

    if args.official:
        official, enc_a, enc_i, enc_t = official_baseline(args.official)
        official = official.to(device)
        baseline_name = f"official ({args.official})"
        baseline_fns = (enc_a, enc_i, enc_t)
    else:
        baseline_name = "AudioCLIP module (official arithmetic)"
        baseline_fns = (model.encode_audio, model.encode_image, model.encode_text)
    paths = {baseline_name: _module_jobs(*baseline_fns, clips, images, tokens, device)}
    encoders = {p: Encoder(model, device=device, precision=p) for p in precisions}
    for precision, encoder in encoders.items():
        paths[f"Encoder {precision}"] = _encoder_jobs(encoder, clips, images, texts)
    rates = _interleaved_rates(paths, workloads, args.repeats, sync)
    rows = [{"path": baseline_name, "precision": "fp32", "baseline": True, **rates[baseline_name]}]
    for precision in precisions:
        result = {"path": "Encoder", "precision": precision, **rates[f"Encoder {precision}"]}
        if precision != "fp32":
            result["fixture"] = fixture_agreement(model, device, precision)
        rows.append(result)
    base = rows[0]
    for r in rows:
        r["speedup"] = {k: r[k] / base[k] for k in workloads}

    peak = _peak_rss_gb()
    table = Table(title=f"AudioCLIP encoding throughput on {device} ({torch.get_num_threads()} threads); "
                        f"baseline: {baseline_name}")
    columns = {"audio_b1": "clips/s b1", "audio_b8": "clips/s b8", "image_b1": "img/s b1",
               "image_b16": "img/s b16", "text_b64": "texts/s b64"}
    for col in ("path", "precision", *(columns[k] for k in workloads), "x baseline b8", "fixture"):
        table.add_column(col, justify="left" if col in ("path", "precision", "fixture") else "right")
    for r in rows:
        fx = r.get("fixture")
        verdict = "-" if fx is None else ("both tiers PASS" if fx["both_tiers_pass"] else
                                         "core PASS" if fx["core_tier_pass"] else "core FAIL")
        table.add_row(r["path"], r["precision"], *(f"{r[k]:.2f}" for k in workloads),
                      f"{r['speedup']['audio_b8']:.2f}", verdict)
    console = Console()
    console.print(table)
    fp32 = next(r for r in rows if r["path"] == "Encoder" and r["precision"] == "fp32")
    speedup = fp32["speedup"]["audio_b8"]
    console.print(f"peak RSS {peak:.2f} GB; Encoder fp32 audio batch-8 speed-up over the baseline "
                  f"({baseline_name}), measured in this run: {speedup:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else
        platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": sys.version.split()[0], "baseline": baseline_name,
        "results": rows, "peak_rss_gb": peak, "audio_b8_speedup_vs_baseline": speedup,
    }, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
