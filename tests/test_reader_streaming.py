"""The reader stage: long audio streamed in pieces equal to whole-file windows, a damaged long file
leaving nothing behind, a decoder crash in a worker reported as one failed file, and every format
indexed with no ffmpeg program installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioclip_search.audio import AudioLimits, load_audio
from audioclip_search.index import Index
from audioclip_search.indexer import reader
from audioclip_search.indexer.discover import SourceFile
from audioclip_search.indexer.pipeline import IndexOptions
from audioclip_search.indexer.windows import WindowSpec, split_windows
from tests.audio_files import encode

ROOT = Path(__file__).resolve().parents[1]


def _signal(rate: int, seconds: float, channels: int) -> np.ndarray:
    rng = np.random.default_rng(rate + channels)
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (300 + 40 * np.sin(2 * np.pi * t / 7)) * t)
    return (tone[:, None] + 0.05 * rng.standard_normal((len(t), channels))).astype(np.float32)


def _source(path: Path) -> SourceFile:
    st = path.stat()
    return SourceFile(path=path, modality="audio", size=st.st_size, mtime=st.st_mtime)


def test_streamed_pieces_equal_whole_file_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "BLOCK_SECONDS", 11.0)
    path = tmp_path / "long.flac"
    sf.write(path, _signal(48000, 61.3, 2), 48000, subtype="PCM_24")
    pieces = list(reader.decode_pieces(_source(path), AudioLimits()))
    assert len(pieces) > 4 and [p.complete for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(p.error is None for p in pieces)
    whole, _ = load_audio(path)
    ref_windows, ref_spans = split_windows(whole, WindowSpec())
    windows = [w for p in pieces for w in p.windows]
    assert [s for p in pieces for s in p.spans] == ref_spans
    assert len(windows) == len(ref_windows)
    for got, want in zip(windows, ref_windows, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert pieces[-1].meta == {"duration": pytest.approx(61.3), "sample_rate": 48000, "channels": 2}


def test_damaged_long_file_leaves_no_rows(tmp_path, tiny_encoder, monkeypatch):
    """Pieces were already encoded when the damage shows: the file is reported and none of it stored."""
    monkeypatch.setattr(reader, "BLOCK_SECONDS", 10.0)
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "good.flac"
    sf.write(good, _signal(44100, 40.0, 1), 44100, subtype="PCM_16")
    data = good.read_bytes()
    (folder / "cut.flac").write_bytes(data[: int(len(data) * 0.8)])  # the header still says 40 s
    index = Index.open(tmp_path / "db", encoder=tiny_encoder)
    report = index.add([folder], IndexOptions(workers=0))
    assert [Path(p).name for p, _ in report.failed] == ["cut.flac"]
    assert "truncated" in report.failed[0][1]
    paths = {row["path"] for row in index.store.rows_by_ids("audio", index.store.ids("audio"))}
    assert paths == {str(good.resolve())}
    assert report.indexed["audio"] == 1 and report.rows["audio"] == len(split_windows(load_audio(good)[0],
                                                                                       WindowSpec())[0])


CRASH_CHILD = r"""
import json, sys
from pathlib import Path
from audioclip_search.audio import AudioLimits
from audioclip_search.indexer.discover import SourceFile
from audioclip_search.indexer.reader import read_files
sources = []
for p in sys.argv[1:]:
    st = Path(p).stat()
    sources.append(SourceFile(path=Path(p), modality="audio", size=st.st_size, mtime=st.st_mtime))
out = [(d.source.path.name, d.error, len(d.windows)) for d in read_files(sources, workers=2, limits=AudioLimits())]
print(json.dumps(out))
"""


def test_a_decoder_crash_in_a_worker_fails_that_file_only(tmp_path):
    """The worker decoding `boom.wav` is SIGKILLed at the named crash point, as a segfault in FFmpeg
    would end it: that file is reported, the pool is replaced, every other file is decoded."""
    names = ["a.wav", "b.wav", "boom.wav", "c.wav", "d.wav", "e.wav"]
    for i, name in enumerate(names):
        sf.write(tmp_path / name, _signal(44100, 3.0 + i, 1), 44100, subtype="PCM_16")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACSEARCH_CRASH_AT": "reader.decode.boom.wav"}
    res = subprocess.run([sys.executable, "-c", CRASH_CHILD, *[str(tmp_path / n) for n in names]],
                         capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "crash point reader.decode.boom.wav" in res.stderr  # it really died there
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r[0] for r in results] == names  # input order kept
    for name, error, windows in results:
        if name == "boom.wav":
            assert error == reader.CRASHED and windows == 0
        else:
            assert error is None and windows >= 1, (name, error)


def test_every_format_is_indexed_without_an_ffmpeg_program(tmp_path, tiny_checkpoint):
    """What scripts/run-main.sh does, on WAV, FLAC, OGG, MP3, M4A and Opus, with PATH holding no ffmpeg."""
    folder = tmp_path / "sounds"
    folder.mkdir()
    clip = _signal(44100, 5.0, 2)
    sf.write(folder / "clip.wav", clip, 44100, subtype="PCM_16")
    for suffix in (".flac", ".ogg", ".mp3", ".m4a", ".opus"):
        encode(folder / f"clip{suffix}", clip, 44100)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": str(bin_dir)}
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "audioclip_search.cli", "index", str(folder), "--db", str(db),
           "--model", str(tiny_checkpoint), "--json"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["indexed"]["audio"] == 6 and not summary["failed"]
    index = Index.open(db, str(tiny_checkpoint))
    rows = index.store.rows_by_ids("audio", index.store.ids("audio"))
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(Path(row["path"]).name, []).append(row)
    assert sorted(by_name) == sorted(f"clip{s}" for s in (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"))
    for name, got in by_name.items():
        assert len(got) == 1, name  # 5.0 s: one window each, the M4A included (AAC padding cut)
        assert got[0]["duration"] == pytest.approx(5.0, abs=0.01), name  # what was decoded


def test_whole_clip_geometry_gives_the_dataset_protocol_clip(shared_data, monkeypatch):
    """The evaluator's geometry: one input a file, equal to the dataset's own load + pad/crop, also
    when the file arrives in several blocks (resampled per block) and after the pickling that takes
    the geometry to decoding worker processes."""
    import pickle

    from audioclip_search.datasets import open_dataset
    from audioclip_search.indexer.windows import WholeClip

    dataset = open_dataset("us8k", shared_data / "us8k-mini")  # 22.05 kHz clips: resampled, scaled, fitted
    prep = dataset.preprocessing
    paths = [it.path for it in dataset.items()[:3]]
    monkeypatch.setattr(reader, "BLOCK_SECONDS", 1.0)
    geometry = pickle.loads(pickle.dumps(WholeClip(prep.apply)))
    got = list(reader.read_files([_source(p) for p in paths], workers=0, window=geometry))
    assert [(d.source.path, d.error, d.complete, len(d.windows)) for d in got] == [(p, None, True, 1) for p in paths]
    for d, path in zip(got, paths, strict=True):
        assert d.windows[0].shape == (1, 176400) and torch.equal(d.windows[0], prep.load(path))
        assert d.spans[0][0] == 0.0 and d.spans[0][1] == pytest.approx(d.meta["duration"], abs=1e-3)
