"""In-process decoding with PyAV: every compressed format without an ffmpeg program, exact MP4
lengths, streamed decoding equal to whole-file decoding, and no input that crashes the process."""

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

from audioclip_search.audio import MODEL_SAMPLE_RATE, AudioLimits, load_audio, probe_audio, stream_audio
from audioclip_search.errors import AudioLoadError
from tests.audio_files import CODECS, SNDFILE_FORMATS, encode

FORMATS = sorted(set(CODECS) | set(SNDFILE_FORMATS) | {".wav"})


def _rich(rate: int, seconds: float, channels: int = 2) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    cols = [0.3 * np.sin(2 * np.pi * (440 + 220 * c) * t) + 0.1 * np.sin(2 * np.pi * 2500 * t) for c in range(channels)]
    return np.stack(cols, axis=1)


def _make(folder: Path, suffix: str, seconds: float = 2.0, rate: int = 44100, channels: int = 2) -> Path:
    path = folder / f"clip{suffix}"
    if suffix == ".wav":
        sf.write(path, _rich(rate, seconds, channels), rate, subtype="PCM_16")
        return path
    return encode(path, _rich(rate, seconds, channels), rate)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {suffix: _make(folder, suffix) for suffix in FORMATS}


def test_every_format_decodes_without_an_ffmpeg_program(made, monkeypatch, tmp_path):
    """No subprocess, no ffmpeg on PATH: PyAV's own FFmpeg libraries do the work."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no ffmpeg, ffprobe or sox

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError(f"decoding started a subprocess: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    for suffix, path in made.items():
        info = probe_audio(path)
        wave, rate = load_audio(path, sample_rate=None, mono=False)
        assert wave.shape[0] == 2 and rate == info.sample_rate, suffix
        assert wave.shape[1] / rate == pytest.approx(2.0, abs=0.05), suffix
        model_wave, model_rate = load_audio(path)
        assert model_rate == MODEL_SAMPLE_RATE and model_wave.shape[0] == 1


def test_m4a_is_cut_to_the_length_its_container_states(tmp_path):
    """AAC pads its last frame: a 5.0 s M4A decodes to exactly 5.0 s, so it is one window like its WAV."""
    path = _make(tmp_path, ".m4a", seconds=5.0)
    info = probe_audio(path)
    assert info.frames == 220500
    wave, rate = load_audio(path, sample_rate=None)
    assert (rate, wave.shape[1]) == (44100, 220500)
    stream = stream_audio(path, block_seconds=1.0)
    assert sum(block.shape[1] for block in stream) == 220500
    assert stream.duration == pytest.approx(5.0)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize(("rate", "mono"), [(44100, True), (48000, False), (22050, True)])
def test_streamed_blocks_equal_whole_file(tmp_path, suffix, rate, mono):
    if suffix == ".opus" and rate == 22050:
        rate = 24000
    path = _make(tmp_path, suffix, seconds=3.3, rate=rate)
    whole, whole_rate = load_audio(path, mono=mono)
    stream = stream_audio(path, mono=mono, block_seconds=0.37)
    blocks = list(stream)
    assert len(blocks) > 3
    joined = torch.cat(blocks, dim=1)
    assert whole_rate == stream.sample_rate == MODEL_SAMPLE_RATE
    assert joined.shape == whole.shape
    torch.testing.assert_close(joined, whole, rtol=0, atol=1e-6)
    assert stream.frames == whole.shape[1]
    assert stream.channels == whole.shape[0]


def test_stream_refuses_bad_files_up_front_and_damage_while_iterating(tmp_path, made):
    with pytest.raises(AudioLoadError, match="no such file"):
        stream_audio(tmp_path / "missing.mp3")
    data = made[".aac"].read_bytes()
    cut = tmp_path / "cut.aac"
    cut.write_bytes(data[: len(data) // 2 + 7])
    stream = stream_audio(cut)  # the header is intact
    with pytest.raises(AudioLoadError, match="truncated or corrupt") as info:
        list(stream)
    assert info.value.path == str(cut)


def test_duration_limit_while_streaming(tmp_path):
    path = _make(tmp_path, ".aac", seconds=3.0)  # ADTS states no length: only decoding tells
    with pytest.raises(AudioLoadError, match="longer than the 1 s limit"):
        list(stream_audio(path, limits=AudioLimits(max_seconds=1.0), block_seconds=0.25))


def test_non_utf8_file_name(tmp_path, made):
    """Latin-1 archive names reach the decoders as bytes; the error path is printable."""
    name = os.fsencode(tmp_path) + b"/caf\xe9.mp3"
    with open(name, "wb") as fh:
        fh.write(made[".mp3"].read_bytes())
    wave, rate = load_audio(name)
    assert rate == MODEL_SAMPLE_RATE and wave.shape[1] == pytest.approx(88200, abs=50)
    with open(os.fsencode(tmp_path) + b"/bad\xe9.wav", "wb") as fh:
        fh.write(b"not audio at all" * 10)
    with pytest.raises(AudioLoadError) as info:
        load_audio(os.fsencode(tmp_path) + b"/bad\xe9.wav")
    str(info.value).encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# fuzzing: damaged files never crash the process
# --------------------------------------------------------------------------------------------

FUZZ_CHILD = r"""
import json, sys
from audioclip_search.audio import load_audio
from audioclip_search.errors import AudioLoadError
results = {}
for path in sys.argv[1:]:
    try:
        wave, _ = load_audio(path)
        results[path] = "ok" if wave.ndim == 2 and wave.shape[1] > 0 and bool(wave.abs().max() <= 1) else "bad output"
    except AudioLoadError as exc:
        results[path] = "refused: " + exc.reason
print(json.dumps(results))
"""


def test_fuzzed_files_are_decoded_or_refused_never_crash(tmp_path, shared_data):
    """300 truncated and bit-flipped MP3, M4A, Opus, OGG and FLAC files made from real clips.

    They are decoded in a child process, so a crash inside FFmpeg or libsndfile fails this test
    (with its signal) instead of killing the test run.
    """
    clips = sorted((shared_data / "esc50-mini" / "audio").glob("*.wav"))[:2]
    rng = np.random.default_rng(2026)
    paths: list[str] = []
    for i, clip in enumerate(clips):
        frames, rate = sf.read(clip, dtype="float32", always_2d=True)
        for suffix in (".mp3", ".m4a", ".opus", ".ogg", ".flac"):
            good = encode(tmp_path / f"src{i}{suffix}", frames[: rate * 2], rate).read_bytes()
            for k in range(30):
                data = bytearray(good)
                if k < 10:  # truncated anywhere, header included
                    data = data[: int(rng.integers(1, len(data)))]
                else:  # 1 to 64 flipped bits, some in the header region
                    for _ in range(int(rng.integers(1, 65))):
                        span = min(len(data), 512) if k % 3 == 0 else len(data)
                        pos = int(rng.integers(0, span))
                        data[pos] ^= 1 << int(rng.integers(0, 8))
                path = tmp_path / f"fuzz{i}-{k}{suffix}"
                path.write_bytes(bytes(data))
                paths.append(str(path))
    assert len(paths) == 300
    res = subprocess.run([sys.executable, "-c", FUZZ_CHILD, *paths], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})  # fmt: skip
    assert res.returncode == 0, f"decoder process died (return code {res.returncode}): {res.stderr[-2000:]}"
    results = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(results) == set(paths)
    verdicts = list(results.values())
    assert all(v == "ok" or (v.startswith("refused: ") and "\n" not in v) for v in verdicts), verdicts
    assert 0 < sum(v == "ok" for v in verdicts) < len(verdicts)  # both outcomes really happen
