"""Test helper: write real compressed audio files with PyAV's encoders (FFmpeg's libraries in the wheel).

Tests that need MP3, M4A, Opus, Vorbis, WMA or ADTS AAC files make them here, so they run where no
``ffmpeg`` program is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# file suffix -> (container format, encoder, encoder sample rate or None to keep)
CODECS: dict[str, tuple[str, str, int | None]] = {
    ".mp3": ("mp3", "libmp3lame", None),
    ".m4a": ("ipod", "aac", None),
    ".aac": ("adts", "aac", None),
    ".opus": ("ogg", "libopus", 48000),
    ".wma": ("asf", "wmav2", None),
}
#: Written with libsndfile instead (PyAV's wheel has no Vorbis encoder).
SNDFILE_FORMATS = {".ogg": ("OGG", "VORBIS"), ".flac": ("FLAC", "PCM_16")}


def encode(path: Path, frames: np.ndarray, rate: int, bitrate: int = 128_000) -> Path:
    """Write ``frames`` ((n, channels) float in [-1, 1] at ``rate``) to ``path``, codec by suffix."""
    import av

    if path.suffix.lower() in SNDFILE_FORMATS:
        import soundfile

        container, subtype = SNDFILE_FORMATS[path.suffix.lower()]
        soundfile.write(path, np.asarray(frames, dtype=np.float32), rate, format=container, subtype=subtype)
        return path
    fmt, codec, codec_rate = CODECS[path.suffix.lower()]
    data = np.ascontiguousarray(np.asarray(frames, dtype=np.float32).T)  # (channels, n) planar
    channels = data.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    with av.open(str(path), mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=codec_rate or rate, layout=layout)
        if codec not in ("flac",):
            stream.bit_rate = bitrate
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=stream.rate)
        step = 4096
        for start in range(0, data.shape[1], step):
            chunk = data[:, start : start + step]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for converted in resampler.resample(frame):
                out.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return path
