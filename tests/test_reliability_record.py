"""The record stays true to the files: failing files lose their rows, sidecar captions follow their
file, duration is what was decoded, and a missing FAISS index heals on the next run or query."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audioclip_search.index import Index
from audioclip_search.indexer.pipeline import IndexOptions
from audioclip_search.store import Store, index_manifest

from .conftest import SHARED_DATA

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
CLIPS = sorted((SHARED_DATA / "esc50-mini" / "audio").glob("*.wav"))


def _captions(index: Index) -> dict[str, str | None]:
    rows = index.store.rows_by_ids("audio", index.store.ids("audio"), columns=["path", "caption"])
    return {Path(r["path"]).name: r["caption"] for r in rows}


def test_a_changed_file_that_now_fails_loses_its_rows(tmp_path, tiny_encoder):
    folder = tmp_path / "media"
    folder.mkdir()
    for clip in CLIPS[:2]:
        shutil.copy(clip, folder / clip.name)
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    assert index.add(folder, IndexOptions(workers=0)).ok
    broken = folder / CLIPS[0].name
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 5000)  # changed, and no longer audio
    report = index.add(folder, IndexOptions(workers=0))
    assert [Path(p).name for p, _ in report.failed] == [broken.name]
    assert "earlier rows were removed" in report.failed[0][1]
    assert report.removed["audio"] == 1
    assert str(broken.resolve()) not in index.store.file_states("audio")
    hits = index.search(text="dog", target="audio", k=5)
    assert [Path(h.path).name for h in hits] == [CLIPS[1].name]


def test_caption_sidecar_edits_and_deletions_update_the_stored_caption(tmp_path, tiny_encoder):
    folder = tmp_path / "media"
    folder.mkdir()
    a, b = (shutil.copy(c, folder / c.name) for c in CLIPS[:2])
    sidecar = Path(a).with_suffix(".txt")
    sidecar.write_text("rain on a tin roof\n")
    manifest = tmp_path / "captions.csv"
    with manifest.open("w", newline="") as fh:
        csv.writer(fh).writerows([["path", "caption", "labels"], [str(b), "a dog barks", "dog"]])
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    assert index.add(folder, IndexOptions(workers=0, captions=manifest)).ok
    assert _captions(index) == {Path(a).name: "rain on a tin roof", Path(b).name: "a dog barks"}

    sidecar.write_text("hail on a car roof")
    report = index.add(folder, IndexOptions(workers=0))  # no manifest this time
    assert sum(report.indexed.values()) == 0 and report.recaptioned["audio"] == 1  # nothing re-encoded
    assert _captions(index) == {Path(a).name: "hail on a car roof", Path(b).name: "a dog barks"}
    rows = index.store.rows_by_ids("audio", index.store.ids("audio"), columns=["path", "labels"])
    assert {Path(r["path"]).name: r["labels"] for r in rows}[Path(b).name] == ["dog"]  # manifest labels kept

    sidecar.unlink()
    report = index.add(folder, IndexOptions(workers=0))
    assert report.recaptioned["audio"] == 1
    assert _captions(index) == {Path(a).name: None, Path(b).name: "a dog barks"}
    assert index.add(folder, IndexOptions(workers=0)).recaptioned["audio"] == 0  # settled


def test_duration_is_what_was_decoded_not_the_header(tmp_path, tiny_encoder):
    from audioclip_search.audio import MODEL_SAMPLE_RATE, load_audio

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to make an MP3")
    full, cut = tmp_path / "full.mp3", tmp_path / "media" / "cut.mp3"
    cut.parent.mkdir()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(CLIPS[0]), "-c:a", "libmp3lame", "-b:a", "128k",
                    str(full)], check=True)
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 4])  # the Xing header still says 5 s
    decoded = load_audio(cut, sample_rate=MODEL_SAMPLE_RATE, mono=True)[0].shape[-1] / MODEL_SAMPLE_RATE
    assert decoded < 2.0
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    assert index.add(cut.parent, IndexOptions(workers=0)).ok
    (row,) = index.store.rows_by_ids("audio", index.store.ids("audio"))
    assert row["duration"] == pytest.approx(decoded, abs=1e-6)


def test_vector_index_left_behind_is_built_by_the_next_run_and_by_query(tmp_path, tiny_encoder, tiny_checkpoint):
    folder = tmp_path / "media"
    folder.mkdir()
    for clip in CLIPS[:2]:
        shutil.copy(clip, folder / clip.name)
    for db in (tmp_path / "db1", tmp_path / "db2"):
        index = Index.open(db, encoder=tiny_encoder)
        assert index.add(folder, IndexOptions(workers=0, build_vector_index=False)).ok
        assert index_manifest(index.store, "audio") is None
    # the next index run, with nothing to encode, still builds it
    report = Index.open(tmp_path / "db1", encoder=tiny_encoder).add(folder, IndexOptions(workers=0))
    assert sum(report.indexed.values()) == 0
    store = Store.open(tmp_path / "db1", read_only=True)
    assert index_manifest(store, "audio")["table_version"] == store.version("audio")
    # and so does a query
    run = subprocess.run([sys.executable, "-m", "audioclip_search.cli", "query", "--text", "rain", "--db",
                          str(tmp_path / "db2"), "--json"], capture_output=True, text=True, env=ENV)
    assert run.returncode == 0, run.stderr
    store = Store.open(tmp_path / "db2", read_only=True)
    assert index_manifest(store, "audio")["table_version"] == store.version("audio")
    run = subprocess.run([sys.executable, "-m", "audioclip_search.cli", "info", "--db", str(tmp_path / "db2")],
                         capture_output=True, text=True, env=ENV)
    assert run.returncode == 0 and " none " not in run.stdout, run.stdout
