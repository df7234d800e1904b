"""The model is its content, not its path string; the architecture is recorded with the binding."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from audioclip_search.store import Store

from .conftest import SHARED_DATA

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
CLIPS = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))


def _acsearch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audioclip_search.cli", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd)


def _add_clip(folder: Path, i: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CLIPS[i], folder / CLIPS[i].name)


def test_same_checkpoint_by_another_path_or_a_copy_is_the_same_model(tmp_path, tiny_checkpoint):
    media, db = tmp_path / "media", tmp_path / "db"
    _add_clip(media, 0)
    run = _acsearch("index", str(media), "--db", str(db), "--model", str(tiny_checkpoint), "--workers", "0")
    assert run.returncode == 0, run.stderr
    _add_clip(media, 1)  # something new to encode, so rows are written with the second name
    run = _acsearch("index", str(media), "--db", str(db), "--model", tiny_checkpoint.name, "--workers", "0",
                    cwd=tiny_checkpoint.parent)
    assert run.returncode == 0, run.stderr
    copy = tmp_path / "renamed-copy.pt"
    shutil.copy(tiny_checkpoint, copy)
    _add_clip(media, 2)
    run = _acsearch("index", str(media), "--db", str(db), "--model", str(copy), "--workers", "0")
    assert run.returncode == 0, run.stderr
    store = Store.open(db, read_only=True)
    assert store.count("audio") == 3
    rows = store.rows_by_ids("audio", store.ids("audio"), columns=["model"])
    assert {r["model"] for r in rows} == {str(tiny_checkpoint)}  # the label stays the first name


def test_architecture_is_recorded_and_used_by_query_classify_info(tmp_path, tiny_model):
    import torch

    bare = tmp_path / "bare.pt"  # a state dict alone: nothing in the file says "tiny"
    torch.save(tiny_model.state_dict(), bare)
    media, db = tmp_path / "media", tmp_path / "db"
    _add_clip(media, 0)
    run = _acsearch("index", str(media), "--db", str(db), "--model", str(bare), "--arch", "audioclip-tiny",
                    "--workers", "0")
    assert run.returncode == 0, run.stderr
    assert Store.open(db, read_only=True).model_info()["arch"] == "audioclip-tiny"
    run = _acsearch("query", "--text", "dog", "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[0])["path"] == str((media / CLIPS[0].name).resolve())
    run = _acsearch("classify", str(CLIPS[0]), "--labels", "dog,rain", "--db", str(db), "--json")
    assert run.returncode == 0, run.stderr
    assert sorted(p["label"] for p in json.loads(run.stdout)) == ["dog", "rain"]
    run = _acsearch("info", "--db", str(db))
    assert run.returncode == 0 and "arch audioclip-tiny" in run.stdout, run.stdout
