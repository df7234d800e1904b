"""Does bf16 rank like fp32? Retrieval agreement of the two precisions on real data.

    python benchmarks/bf16_agreement.py [--device cpu] [--max-clips N]

Embeds esc50-mini, us8k-mini and tuxpaint-triples (sounds, pictures, captions, label prompts)
with the `Encoder` in fp32 and in bf16 and reports, per dataset:
  * the top-10 overlap |top10(fp32) & top10(bf16)| / 10, averaged over the queries, for
    text->audio (label prompts, and the captions of tuxpaint-triples), audio->audio (every clip
    against the others) and audio->image (tuxpaint-triples sounds against its pictures);
  * zero-shot label agreement: the share of clips whose best label prompt is the same in both.
A cosine between the two precisions' vectors says little about search; these measures are what a
user sees. The weights are the reference fixture's deterministic full-size ones (the released
checkpoint is not available offline), so the numbers describe the arithmetic, not trained
retrieval quality. Every sound is the first 5 s of the file at 44.1 kHz (padded as the official
evaluation does). The result decides `--precision auto` on CPUs with native bf16 (see
audioclip_search/devices.py). Prints a table and writes JSON (default
benchmarks/results/bf16_agreement.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
REFERENCE = ROOT.parent / "shared" / "reference"
RATE = 44100
SECONDS = 5
K = 10


def _load_clip(path: Path) -> torch.Tensor:
    """Mono, 44.1 kHz, exactly 5 s, in [-1, 1]: (1, 220500)."""
    import soundfile as sf
    import soxr

    from audioclip_search.audio import fit_length

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE, quality="VHQ").astype(np.float32)
    return fit_length(torch.from_numpy(mono).reshape(1, -1), RATE * SECONDS)


def datasets(max_clips: int | None) -> dict[str, dict]:
    """name -> {clips: [paths], labels: [label per clip], images: [paths], captions: [str]}."""
    out: dict[str, dict] = {}
    with open(DATA / "esc50-mini" / "meta" / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out["esc50-mini"] = {"clips": [DATA / "esc50-mini" / "audio" / r["filename"] for r in rows],
                         "labels": [r["category"].replace("_", " ") for r in rows]}
    with open(DATA / "us8k-mini" / "metadata" / "UrbanSound8K.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out["us8k-mini"] = {"clips": [DATA / "us8k-mini" / "audio" / f"fold{r['fold']}" / r["slice_file_name"]
                                  for r in rows],
                        "labels": [r["class"].replace("_", " ") for r in rows]}
    with open(DATA / "tuxpaint-triples" / "triples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    root = DATA / "tuxpaint-triples"
    out["tuxpaint-triples"] = {"clips": [root / r["audio"] for r in rows], "labels": [r["category"] for r in rows],
                               "images": [root / r["image"] for r in rows], "captions": [r["caption"] for r in rows]}
    if max_clips:
        for d in out.values():
            for key in ("clips", "labels", "images", "captions"):
                if key in d:
                    d[key] = d[key][:max_clips]
    return out


def embed(encoder, data: dict, clips: list[torch.Tensor]) -> dict[str, np.ndarray]:  # noqa: ANN001
    from audioclip_search.image import load_image

    label_set = sorted(set(data["labels"]))
    out = {"audio": encoder.encode_audio(clips), "label_text": encoder.encode_texts(label_set)}
    if "images" in data:
        out["image"] = encoder.encode_images([load_image(p) for p in data["images"]])
        out["caption_text"] = encoder.encode_texts(data["captions"])
    return out


def top_k_overlap(queries_a: np.ndarray, items_a: np.ndarray, queries_b: np.ndarray, items_b: np.ndarray,
                  exclude_self: bool = False) -> float:
    """Mean |top-k(a) & top-k(b)| / k over the queries (k = min(10, items - self))."""
    sim_a, sim_b = queries_a @ items_a.T, queries_b @ items_b.T
    if exclude_self:
        np.fill_diagonal(sim_a, -np.inf)
        np.fill_diagonal(sim_b, -np.inf)
    k = min(K, items_a.shape[0] - int(exclude_self))
    top_a = np.argsort(-sim_a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-sim_b, axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b, strict=True)]))


def compare(fp32: dict[str, np.ndarray], bf16: dict[str, np.ndarray]) -> dict[str, float]:
    result = {
        "text->audio": top_k_overlap(fp32["label_text"], fp32["audio"], bf16["label_text"], bf16["audio"]),
        "audio->audio": top_k_overlap(fp32["audio"], fp32["audio"], bf16["audio"], bf16["audio"], exclude_self=True),
        "zero-shot label agreement": float(np.mean(
            np.argmax(fp32["audio"] @ fp32["label_text"].T, 1) == np.argmax(bf16["audio"] @ bf16["label_text"].T, 1)
        )),
    }
    if "image" in fp32:
        result["text->audio"] = top_k_overlap(
            np.concatenate([fp32["label_text"], fp32["caption_text"]]), fp32["audio"],
            np.concatenate([bf16["label_text"], bf16["caption_text"]]), bf16["audio"])
        result["audio->image"] = top_k_overlap(fp32["audio"], fp32["image"], bf16["audio"], bf16["image"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-clips", type=int, default=None, help="first N items of each dataset (quick runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bf16_agreement.json")
    args = parser.parse_args()

    from audioclip_search.devices import cpu_has_native_bf16
    from audioclip_search.encoder import Encoder
    from audioclip_search.reference_check import reference_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = reference_model(REFERENCE)
    encoders = {p: Encoder(model, device=args.device, precision=p) for p in ("fp32", "bf16")}
    rows: dict[str, dict] = {}
    seconds = {"fp32": 0.0, "bf16": 0.0}
    for name, data in datasets(args.max_clips).items():
        clips = [_load_clip(p) for p in data["clips"]]
        emb = {}
        for precision, encoder in encoders.items():
            start = time.perf_counter()
            emb[precision] = embed(encoder, data, clips)
            seconds[precision] += time.perf_counter() - start
        rows[name] = {"items": len(clips), **compare(emb["fp32"], emb["bf16"])}

    metrics = ("text->audio", "audio->audio", "audio->image", "zero-shot label agreement")
    table = Table(title=f"bf16 against fp32: top-{K} overlap and zero-shot agreement ({args.device})")
    for col in ("dataset", "items", *metrics):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for name, r in rows.items():
        table.add_row(name, str(r["items"]), *(f"{r[m]:.3f}" if m in r else "-" for m in metrics))
    overlaps = [r[m] for r in rows.values() for m in metrics[:3] if m in r]
    worst = min(overlaps)
    console = Console()
    console.print(table)
    console.print(f"worst top-{K} overlap {worst:.3f} (bf16 may be chosen automatically only at >= 0.95); "
                  f"embedding time fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s; "
                  f"native bf16 on this CPU: {cpu_has_native_bf16()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "native_bf16": cpu_has_native_bf16(), "k": K,
                                    "results": rows, "worst_overlap": worst, "seconds": seconds}, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
