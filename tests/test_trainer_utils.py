"""Helpers shared by the trainer tests (no tests here): small, fast, offline training configurations."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from tests.conftest import SHARED_DATA

TUX = SHARED_DATA / "tuxpaint-triples"
ESC50_MINI = SHARED_DATA / "esc50-mini"

#: Tiny model, random init (no downloads), quarter-second clips, no workers, everything logged.
FAST = [
    "model.arch=audioclip-tiny", "model.init=none", "data.num_workers=0", "data.cache_audio=true",
    "data.clip_samples=11025", "log.every_steps=1", "log.display=none", "threads=2",
]


def tux_manifest(folder: Path, n: int, broken: int = 0) -> Path:
    """A training manifest of the first ``n`` tuxpaint triples (+ ``broken`` undecodable sounds)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(TUX / "triples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    path = folder / "train.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio", "image", "category", "caption"])
        for r in rows:
            w.writerow([r["id"], TUX / r["audio"], TUX / r["image"], r["category"], r["caption"]])
        for i in range(broken):
            bad = folder / f"broken{i}.ogg"
            bad.write_bytes(b"OggS" + bytes(200))
            w.writerow([f"broken{i}", bad, TUX / rows[0]["image"], "broken", "A broken sound."])
    return path


def two_fold_esc50(tmp_path: Path) -> Path:
    """esc50-mini's metadata with the clips spread over folds 1 and 2 (the audio folder linked)."""
    root = tmp_path / "esc50"
    (root / "meta").mkdir(parents=True)
    try:
        (root / "audio").symlink_to(ESC50_MINI / "audio", target_is_directory=True)
    except OSError:
        shutil.copytree(ESC50_MINI / "audio", root / "audio")
    with open(ESC50_MINI / "meta" / "esc50.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({**r, "fold": str(i % 2 + 1)})
    return root


def train_losses(folder: Path) -> dict[int, float]:
    """step -> logged training loss, from metrics.jsonl."""
    out = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["kind"] == "train":
            out[record["step"]] = record["loss"]
    return out
