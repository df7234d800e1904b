"""Agreement with the official embeddings of the 50 real esc50-mini clips, on this machine.

    python benchmarks/real_clips_agreement.py --official PATH [--threads 2] [--out FILE]

`shared/reference/esc50_mini_official.npz` was made by the authors' code on one machine. A quarter
of the clips hold digital silence, whose filterbank outputs are float32 rounding noise, so how far
anyone's embeddings land from that file depends on the CPU's float32 kernels as well as on the
code. This script separates the two by running, in one process on the same clips and weights:

  * the authors' own model code from a checkout of AndreyGuzhov/AudioCLIP (commit 45327aa),
    imported untouched (benchmarks/official_audioclip.py);
  * our module path (`AudioCLIP.encode_audio`) and our `Encoder`;

and comparing each with the fixture file (clips within its cosine tolerance, silent and not) and
ours with the official code run here (max |difference|: 0 means bit for bit). Prints a table and
writes JSON (default benchmarks/results/real_clips_agreement.json).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from encode_speed import CLIP_DIR, REFERENCE, ROOT, official_baseline
from rich.console import Console
from rich.table import Table

SILENT_RUN = 4410  # int16 zeros in a row (0.1 s) that make a clip "silent" here
COS_TOL = 1e-5  # the fixture's (check_real_clips.py)


def _clips(names: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """int16-scale float32 waveforms (N, 1, T) and which clips hold digital silence."""
    import soundfile as sf

    waves, silent = [], []
    for name in names:
        pcm, _ = sf.read(CLIP_DIR / name, dtype="int16")
        zero = np.concatenate(([0], (pcm == 0).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(zero))
        silent.append(len(edges) > 0 and int((edges[1::2] - edges[::2]).max()) >= SILENT_RUN)
        waves.append(torch.from_numpy(pcm.astype(np.float32)).reshape(1, 1, -1))
    return torch.cat(waves), np.array(silent)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _batched(encode, waves: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    """The fixture's recipe: batches of 8 in file order, inference mode."""
    with torch.inference_mode():
        return torch.cat([encode(waves[i : i + 8]) for i in range(0, len(waves), 8)]).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="checkout of AndreyGuzhov/AudioCLIP")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_clips_agreement.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from audioclip_search.encoder import Encoder
    from audioclip_search.reference_check import reference_model

    fixture = np.load(REFERENCE / "esc50_mini_official.npz")
    names = [str(n) for n in fixture["names"]]
    waves, silent = _clips(names)
    official = official_baseline(args.official)[0]
    ours = reference_model(REFERENCE)
    outputs = {
        "official code, run here": _batched(official.encode_audio, waves),
        "ours: module path": _batched(ours.encode_audio, waves),
        "ours: Encoder": Encoder(ours, device="cpu", precision="fp32").encode_audio(waves / 32768.0, normalize=False),
    }
    here = outputs["official code, run here"]
    rows = []
    for name, emb in outputs.items():
        cos = _cosines(emb, fixture["audio_embedding"])
        within = cos >= 1 - COS_TOL
        rows.append({
            "path": name,
            "within_tolerance": int(within.sum()),
            "silent_within": int(within[silent].sum()),
            "silent": int(silent.sum()),
            "not_silent_within": int(within[~silent].sum()),
            "not_silent": int((~silent).sum()),
            "worst_cos_vs_fixture": float(cos.min()),
            "min_cos_vs_official_here": float(_cosines(emb, here).min()),
            "max_abs_diff_vs_official_here": float(np.abs(emb - here).max()),
        })  # fmt: skip

    table = Table(title=f"50 real clips vs the official fixture (tolerance cos >= 1-{COS_TOL:g}), "
                        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    for column in ("path", "within tol.", "silent", "not silent", "worst cos vs fixture", "min cos vs official here",
                   "max |diff| vs official here"):  # fmt: skip
        table.add_column(column)
    for r in rows:
        table.add_row(r["path"], f"{r['within_tolerance']}/50", f"{r['silent_within']}/{r['silent']}",
                      f"{r['not_silent_within']}/{r['not_silent']}", f"{r['worst_cos_vs_fixture']:.7f}",
                      f"{r['min_cos_vs_official_here']:.9f}", f"{r['max_abs_diff_vs_official_here']:.3g}")  # fmt: skip
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "processor": platform.processor(),
                    "torch": torch.__version__, "threads": args.threads},
        "rows": rows,
    }, indent=2))  # fmt: skip
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
