"""Indexing real files into LanceDB and searching them (small model, offline)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audioclip_search.index import Index
from audioclip_search.indexer.pipeline import IndexOptions

from .conftest import SHARED_DATA


def _captions_manifest(tmp: Path) -> Path:
    """tuxpaint-triples' own CSV rewritten as a captions manifest (path, caption, labels)."""
    root = SHARED_DATA / "tuxpaint-triples"
    out = tmp / "captions.csv"
    with (root / "triples.csv").open() as src, out.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["path", "caption", "labels"])
        for row in csv.DictReader(src):
            for column in ("audio", "image"):
                writer.writerow([str(root / row[column]), row["caption"], row["category"]])
    return out


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_encoder):
    tmp = tmp_path_factory.mktemp("indexed")
    index = Index.open(tmp / "db", encoder=tiny_encoder)
    roots = [SHARED_DATA / "esc50-mini", SHARED_DATA / "us8k-mini", SHARED_DATA / "tuxpaint-triples"]
    report = index.add(roots, IndexOptions(captions=_captions_manifest(tmp), workers=2))
    return index, report, roots


def test_everything_indexed_once(indexed):
    index, report, _ = indexed
    assert report.ok, report.failed
    assert report.indexed["audio"] == 50 + 37 + 131
    assert report.indexed["image"] == 131
    assert index.store.count("audio") == report.rows["audio"] >= report.indexed["audio"]
    tux = [h for h in index.store.rows_by_ids("image", index.store.ids("image"))
           if h["path"].endswith("animals/amphibians/frog.png")]
    assert tux and tux[0]["caption"] == "A frog." and tux[0]["labels"] == ["animals"]


def test_audio_file_queried_by_itself_comes_first(indexed):
    index, _, _ = indexed
    for clip in sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:5]:
        hits = index.search(audio=clip, target="audio", k=3)
        assert hits[0].path == str(clip.resolve())
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_image_queried_by_itself_comes_first(indexed):
    index, _, _ = indexed
    picture = SHARED_DATA / "tuxpaint-triples" / "animals" / "birds" / "blackbird.png"
    hits = index.search(image=picture, target="image", k=2)
    assert hits[0].path == str(picture.resolve())


def test_text_query_ranking_equals_bruteforce(indexed):
    index, _, _ = indexed
    ids, matrix = index.store.embeddings("audio")
    query = index.engine.embedder.text("dog bark")
    scores = matrix @ query
    order = np.argsort(-scores, kind="stable")[:10]
    hits = index.search(text="dog bark", target="audio", k=10)
    # same scores rank by rank, and each hit's own brute-force score is the one reported (identical
    # sounds in the corpus tie exactly, and ties may come in either order)
    np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=0, atol=1e-5)
    by_id = dict(zip(ids, scores, strict=True))
    np.testing.assert_allclose([by_id[h.id] for h in hits], [h.score for h in hits], rtol=0, atol=1e-5)
    assert len({h.id for h in hits}) == 10
    untied = [i for i in range(10) if all(abs(scores[order[i]] - scores[order[j]]) > 1e-5
                                          for j in range(10) if j != i)]
    assert [hits[i].id for i in untied] == [ids[order[i]] for i in untied]


def test_all_targets_merge_by_score(indexed):
    index, _, _ = indexed
    hits = index.search(text="a frog", k=20)
    assert {h.modality for h in hits} <= {"audio", "image", "text"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    filtered = index.search(text="a frog", target="image", k=5, where="labels IS NOT NULL AND width > 10")
    assert all(h.modality == "image" for h in filtered)


def test_rerun_encodes_nothing(indexed, tiny_encoder):
    index, first, roots = indexed
    again = Index.open(index.store.uri, encoder=tiny_encoder)
    report = again.add(roots, IndexOptions(workers=0))
    assert sum(report.indexed.values()) == 0
    assert report.unchanged["audio"] == first.indexed["audio"]
    assert report.stage_seconds["encode"] == 0


def _copy(src: Path, dst_dir: Path) -> Path:
    dst_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst_dir / src.name))


def test_changes_touch_and_prune(tmp_path, tiny_encoder):
    clips = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:3]
    folder = tmp_path / "sounds"
    copies = [_copy(c, folder) for c in clips]
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    assert index.add(folder, IndexOptions(workers=0)).indexed["audio"] == 3
    # touched but unchanged: nothing encoded, the new mtime recorded
    os.utime(copies[0], (time.time() + 100, time.time() + 100))
    report = index.add(folder, IndexOptions(workers=0))
    assert report.indexed["audio"] == 0 and report.unchanged["audio"] == 3
    state = index.store.file_states("audio")[str(copies[0].resolve())]
    assert state.mtime == pytest.approx(copies[0].stat().st_mtime)
    # changed content: re-encoded, still one row per window
    shutil.copy(clips[1], copies[0])
    report = index.add(folder, IndexOptions(workers=0))
    assert report.indexed["audio"] == 1
    assert index.store.count("audio") == 3
    # prune
    copies[2].unlink()
    report = index.add(folder, IndexOptions(workers=0, prune=True))
    assert report.pruned["audio"] == 1
    assert str(copies[2].resolve()) not in index.store.file_states("audio")
    assert index.store.count("audio") == 2


def test_long_audio_is_windowed_with_offsets(tmp_path, tiny_encoder):
    import soundfile as sf

    clips = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:3]
    long = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])  # 15 s
    sf.write(tmp_path / "long.wav", long, 44100)
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    index.add(tmp_path / "long.wav", IndexOptions(workers=0))
    rows = index.store.rows_by_ids("audio", index.store.ids("audio"))
    spans = sorted((r["start"], r["end"]) for r in rows)
    assert spans == [(0.0, 5.0), (2.5, 7.5), (5.0, 10.0), (7.5, 12.5), (10.0, 15.0)]
    # deterministic: the same file gives the same embedding
    again = index.engine.embedder.audio(tmp_path / "long.wav")
    assert np.allclose(again, index.engine.embedder.audio(tmp_path / "long.wav"))


def _broken_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    good = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[0].read_bytes()
    (folder / "empty.wav").write_bytes(b"")
    (folder / "truncated.wav").write_bytes(good[: len(good) // 3])
    (folder / "notes-renamed.wav").write_text("this is not audio\n" * 50)
    (folder / "zero.png").write_bytes(b"")
    (folder / "garbage.png").write_bytes(os.urandom(2000))
    # a WAV whose format tag no decoder knows
    data = b"\x00\x01" * 4000
    fmt = struct.pack("<HHIIHH", 0x1234, 1, 44100, 88200, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (folder / "unknown-codec.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    (folder / "blank.txt").write_text("   \n")
    return {name: "" for name in ("empty.wav", "truncated.wav", "notes-renamed.wav", "zero.png",
                                   "garbage.png", "unknown-codec.wav", "blank.txt")}


def test_broken_files_are_skipped_with_reasons(tmp_path, tiny_encoder):
    good_dir = tmp_path / "good"
    for clip in sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:2]:
        _copy(clip, good_dir)
    _copy(SHARED_DATA / "tuxpaint-triples" / "animals" / "amphibians" / "frog.png", good_dir)
    (good_dir / "note.txt").write_text("a field recording of rain on a tin roof")
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    assert index.add(good_dir, IndexOptions(workers=0)).ok
    before = {m: index.store.count(m) for m in ("audio", "image", "text")}
    bad_dir = tmp_path / "bad"
    expected = _broken_files(bad_dir)
    locked = bad_dir / "locked.wav"
    shutil.copy(next(good_dir.glob("*.wav")), locked)
    locked.chmod(0)
    if not os.access(locked, os.R_OK):
        expected["locked.wav"] = ""
    else:
        locked.unlink()  # running as root: permissions cannot make it unreadable
    report = index.add([good_dir, bad_dir], IndexOptions(workers=2))
    failed = {Path(p).name: reason for p, reason in report.failed}
    assert set(failed) == set(expected)
    for name, reason in failed.items():
        assert reason and "\n" not in reason, name
    assert {m: index.store.count(m) for m in before} == before  # nothing already stored was lost
    assert report.unchanged["audio"] == 2


def _acsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "audioclip_search.cli", *args]


def test_cli_index_query_info_classify(tmp_path, tiny_checkpoint):
    folder = tmp_path / "media"
    for clip in sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[:3]:
        _copy(clip, folder)
    _copy(SHARED_DATA / "tuxpaint-triples" / "animals" / "amphibians" / "frog.png", folder)
    (folder / "bad.wav").write_bytes(b"")
    db = str(tmp_path / "db")
    run = subprocess.run(_acsearch("index", str(folder), "--db", db, "--model", str(tiny_checkpoint),
                                   "--workers", "0"), capture_output=True, text=True)
    assert run.returncode == 1, run.stderr  # one file failed
    assert "bad.wav" in run.stderr and "1 file(s) failed" in run.stderr
    assert (Path(db) / "index-errors.log").read_text().startswith(str((folder / "bad.wav").resolve()))
    run = subprocess.run(_acsearch("query", "--text", "dog", "--db", db, "-k", "3", "--json"),
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import json

    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 3 and lines[0]["rank"] == 1 and {"score", "path", "modality"} <= set(lines[0])
    run = subprocess.run(_acsearch("query", "--db", db), capture_output=True, text=True)
    assert run.returncode == 2
    run = subprocess.run(_acsearch("info", "--db", db), capture_output=True, text=True)
    assert run.returncode == 0 and "audio" in run.stdout
    clip = next(folder.glob("*.wav"))
    run = subprocess.run(_acsearch("classify", str(clip), "--labels", "dog,rain,siren", "--model",
                                   str(tiny_checkpoint), "--json"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    probs = json.loads(run.stdout)
    assert sorted(p["label"] for p in probs) == ["dog", "rain", "siren"]
    assert sum(p["probability"] for p in probs) == pytest.approx(1.0, abs=1e-6)


def test_other_model_is_refused_unless_new_table_set(tmp_path, tiny_encoder):
    import torch

    from audioclip_search.encoder import Encoder
    from audioclip_search.model import AudioCLIP
    from audioclip_search.store import ModelMismatchError

    clip = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))[0]
    Index.open(tmp_path / "db", encoder=tiny_encoder).add(clip, IndexOptions(workers=0))
    torch.manual_seed(1)
    other = Encoder(AudioCLIP("audioclip-tiny").eval(), device="cpu", model_name="other", model_sha256="f" * 64)
    with pytest.raises(ModelMismatchError):
        Index.open(tmp_path / "db", encoder=other).add(clip, IndexOptions(workers=0))
    report = Index.open(tmp_path / "db", encoder=other, table_set="other").add(clip, IndexOptions(workers=0))
    assert report.indexed["audio"] == 1


def test_sigkill_mid_run_then_rerun_indexes_each_file_once(tmp_path, tiny_checkpoint):
    from audioclip_search.store import Store

    folder = tmp_path / "sounds"
    for clip in sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav")):
        _copy(clip, folder)
    db = tmp_path / "db"
    cmd = _acsearch("index", str(folder), "--db", str(db), "--model", str(tiny_checkpoint),
                    "--workers", "0", "--commit-every", "2", "--batch-size", "4", "--no-vector-index")
    # SIGKILL right after the indexer's second commit (a commit boundary, not a timer)
    env = {**os.environ, "ACSEARCH_CRASH_AT": "index.commit:2"}
    killed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "crash point index.commit (hit 2)" in killed.stderr
    killed_with = Store.open(db, create=False, read_only=True).count("audio")
    assert 0 < killed_with < 50
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    store = Store.open(db, create=False, read_only=True)
    rows = store.rows_by_ids("audio", store.ids("audio"))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 50  # 5 s clips: one window each, each file exactly once
