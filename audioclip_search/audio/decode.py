"""Decoding files to float PCM, in-process: libsndfile for PCM/FLAC/OGG, PyAV (FFmpeg's libraries) for the rest.

Returned audio
    float32 in [-1, 1]. Integer PCM is scaled by libsndfile's and FFmpeg's own convention (int16 /
    32768, int24 / 2**23, ...), which is also what librosa (the official AudioCLIP loaders)
    returns, so ``to_model_scale`` of a 16-bit file gives back its exact int16 values.

Backends
    * libsndfile (``soundfile``) for WAV, FLAC, OGG (Vorbis, and Opus where libsndfile can), AIFF.
    * PyAV for MP3, M4A/AAC, Opus, WMA, and as the fallback when libsndfile cannot read a file
      (a ``.wav`` holding MP3 or G.723, an ``.ogg`` libsndfile rejects, an upload with no useful
      extension). PyAV's wheels carry FFmpeg, so no ``ffmpeg`` program is needed. It reads the
      file through a Python file object (any file name, no URL or protocol parsing) and may only
      use the audio demuxers in :data:`DEMUXERS`, so a playlist renamed ``.mp3`` cannot make it
      open other files.
    * MP4-family files state their exact length (the track duration after the edit list); AAC
      encoders pad the last frame, so decoded audio is cut to that length (a 5.0 s M4A gives 5.0 s,
      not 5.02 s). Leading priming is removed by FFmpeg from the edit list.

Streaming
    :func:`stream_audio` yields blocks (about a minute each), downmixed and resampled per block,
    so memory is bounded by the block, not the file: a three-hour 96 kHz six-channel file decodes
    in a few hundred MB. :func:`load_audio` returns the whole signal and computes exactly the same
    samples.

Channel policy
    ``mono=True`` (the default) averages the channels: what the official ESC-50 loader (librosa's
    ``to_mono``) does and therefore what the model saw in training. ``mono=False`` keeps the
    channels as stored (no remixing, no reordering).

Sample values
    Float files may hold samples beyond [-1, 1]; they are clipped to [-1, 1] and decoding goes on
    (a loud file is still a usable file). The resampler can overshoot near full scale, so the
    result is clipped again after resampling. NaN or infinite samples are an error.

Errors
    Every failure is an ``AudioLoadError(path, reason)`` with a one-line reason ("empty file",
    "truncated or corrupt audio data", "longer than the 600 s limit (1234.5 s)", ...); no
    soundfile, PyAV or OS exception escapes. Truncation is detected from the container where it
    says how much audio there should be (WAV/AIFF data-chunk sizes, FLAC/WAV frame counts, MP4
    index, decoder errors); a frame-aligned cut of a stream format (MP3, ADTS AAC) is
    indistinguishable from a shorter file and decodes as one.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import AudioLoadError
from .clip import MODEL_SAMPLE_RATE
from .limits import (
    REASON_CORRUPT,
    REASON_NO_SAMPLES,
    REASON_NO_STREAM,
    REASON_NON_FINITE,
    REASON_NOT_AUDIO,
    AudioInfo,
    AudioLimits,
    DecodeFailure,
    check_duration,
    inspect_file,
    one_line,
    wav_format_tag,
)
from .resample import StreamResampler, resample

if TYPE_CHECKING:
    import torch

__all__ = ["AUDIO_EXTENSIONS", "DEMUXERS", "AudioStream", "load_audio", "probe_audio", "stream_audio"]

AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".aiff", ".aif", ".opus", ".wma",
)  # fmt: skip
_SNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"})

#: Demuxers PyAV may use: audio containers only (no playlists, concat lists, images or devices).
DEMUXERS = ",".join((
    "mp3", "mov,mp4,m4a,3gp,3g2,mj2", "aac", "ogg", "asf", "wav", "w64", "flac", "aiff", "caf",
    "matroska,webm", "au", "wv", "ape", "ac3", "eac3", "amr", "mpc", "mpc8", "tta", "voc", "loas", "dts", "mp2",
))  # fmt: skip
_MP4_FAMILY = ("mov", "mp4", "m4a")
#: Decoded samples past an MP4 track's stated length that are taken for encoder padding and cut.
_MAX_TRAILING_PADDING = 8192
#: Native-rate frames per block when streaming.
DEFAULT_BLOCK_SECONDS = 60.0


# ---------------------------------------------------------------------------------------------
# libsndfile backend
# ---------------------------------------------------------------------------------------------

_EXACT_LENGTH_SUBTYPES = frozenset(
    {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}
)


def _encodable(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sndfile_failure(exc: BaseException) -> DecodeFailure:
    """Map a libsndfile open error to a reason; not final, so PyAV gets a chance."""
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "error_string", None) or exc).lower()
    if code == 4 or "unsupported encoding" in message or "unknown format" in message:
        return DecodeFailure("unsupported codec or sample encoding", rank=4)
    if code == 3 or "malformed" in message or message.startswith("error in"):
        return DecodeFailure(REASON_CORRUPT)
    return DecodeFailure(REASON_NOT_AUDIO)


class _SndfileSource:
    """A file libsndfile opened: header facts, then float32 ``(frames, channels)`` blocks."""

    def __init__(self, path: Path, limits: AudioLimits, container: str | None):
        import soundfile

        # A name libsndfile can take directly is opened by name (its own I/O is fastest); any other
        # (Latin-1 bytes from an old archive) goes through a Python file object.
        self._fh = None if _encodable(path) else open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            self._file = soundfile.SoundFile(str(path) if self._fh is None else self._fh)
        except Exception as exc:  # LibsndfileError, TypeError/RuntimeError from odd headers
            if self._fh is not None:
                self._fh.close()
            raise _sndfile_failure(exc) from None
        f = self._file
        try:
            if f.samplerate <= 0 or f.channels <= 0:
                raise DecodeFailure(REASON_CORRUPT, final=True)
            # PCM WAV/AIFF and FLAC state their length; for MPEG or ADPCM inside WAV, and for OGG
            # when the last page is damaged, libsndfile's frame count is an estimate or a failure.
            self._exact = f.format == "FLAC" or f.subtype in _EXACT_LENGTH_SUBTYPES
            if f.frames <= 0:
                # Final for formats that state their length; otherwise (libsndfile reports 0 frames
                # for some damaged OGG files) PyAV gets a look.
                raise DecodeFailure(REASON_NO_SAMPLES, final=self._exact)
            check_duration(f.frames, f.samplerate, limits)
        except BaseException:
            self.close()
            raise
        self.info = AudioInfo(str(path), int(f.samplerate), int(f.channels), int(f.frames),
                              f.frames / f.samplerate, f"{f.format}/{f.subtype}")  # fmt: skip

    def close(self) -> None:
        self._file.close()
        if self._fh is not None:
            self._fh.close()

    def blocks(self, block_frames: int | None) -> Iterator[np.ndarray]:
        f, total = self._file, 0
        want = f.frames if block_frames is None else block_frames
        while True:
            try:
                data = f.read(want, dtype="float32", always_2d=True)
            except MemoryError:
                seconds = f.frames / f.samplerate
                raise DecodeFailure(f"not enough memory to decode {seconds:.1f} s", final=True) from None
            except Exception:  # "flac decoder lost sync" and similar: the data is damaged
                raise DecodeFailure(REASON_CORRUPT, final=True) from None
            if data.shape[0] == 0:
                break
            total += data.shape[0]
            yield data
            if block_frames is None or total >= f.frames:
                break
        if total < f.frames and self._exact:
            # The header's length is exact, so reading fewer frames means a cut file.
            raise DecodeFailure(REASON_CORRUPT, final=True)


# ---------------------------------------------------------------------------------------------
# PyAV backend
# ---------------------------------------------------------------------------------------------


def _av_open_failure(exc: BaseException, container: str | None) -> DecodeFailure:
    import av

    if isinstance(exc, PermissionError):
        return DecodeFailure("permission denied", final=True)
    if isinstance(exc, av.error.EOFError):
        return DecodeFailure(REASON_CORRUPT)
    if isinstance(exc, av.error.InvalidDataError | av.error.PatchWelcomeError):
        # A file whose magic says it is an audio container but that cannot be parsed is damaged;
        # anything else simply is not audio.
        return DecodeFailure(REASON_CORRUPT if container is not None else REASON_NOT_AUDIO)
    reason = getattr(exc, "strerror", None) or str(exc)
    return DecodeFailure(f"cannot decode it ({reason})", rank=1)


class _AvSource:
    """A file PyAV opened: its first audio stream's facts, then float32 ``(frames, channels)`` blocks."""

    def __init__(self, path: Path, limits: AudioLimits, container: str | None):
        import av

        self._limits = limits
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        try:
            try:
                self._container = av.open(self._fh, mode="r", options={"format_whitelist": DEMUXERS},
                                          metadata_errors="ignore")  # fmt: skip
            except Exception as exc:
                raise _av_open_failure(exc, container) from None
            try:
                self.info = self._probe(path)
            except BaseException:
                self._container.close()
                raise
        except BaseException:
            self._fh.close()
            raise

    def _probe(self, path: Path) -> AudioInfo:
        c = self._container
        streams = list(c.streams.audio)
        if not streams:
            raise DecodeFailure(REASON_NO_STREAM)
        stream = self._stream = streams[0]
        ctx = stream.codec_context
        codec = getattr(getattr(ctx, "codec", None), "name", None) or getattr(ctx, "name", None)
        if ctx is None or not codec or codec == "none":
            tag = wav_format_tag(path)
            raise DecodeFailure(f"unsupported codec (format tag {tag:#06x})" if tag else "unsupported codec", rank=4)
        rate = int(ctx.sample_rate or 0)
        channels = int(getattr(ctx, "channels", 0) or 0)
        if rate <= 0 or channels <= 0:
            raise DecodeFailure(REASON_CORRUPT)
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif c.duration is not None:
            seconds = c.duration / 1_000_000
        frames = -1 if seconds is None or seconds < 0 else int(round(seconds * rate))
        if frames == 0:
            raise DecodeFailure(REASON_NO_SAMPLES)
        check_duration(frames, rate, self._limits)
        self._stated_frames = frames if any(name in c.format.name.split(",") for name in _MP4_FAMILY) else -1
        return AudioInfo(str(path), rate, channels, frames, np.nan if seconds is None else seconds,
                         f"{c.format.name.split(',')[0]}/{codec}")  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()
        self._fh.close()

    def _frames(self) -> Iterator[np.ndarray]:
        """Decoded frames as float32 ``(channels, n)``, in the first frame's layout and rate."""
        import av

        converter = None
        try:
            for frame in self._container.decode(self._stream):
                if converter is None:
                    converter = av.AudioResampler(format="fltp", layout=frame.layout, rate=frame.sample_rate)
                    if frame.sample_rate != self.info.sample_rate:
                        self.info = AudioInfo(**{**self.info.__dict__, "sample_rate": frame.sample_rate})
                for out in converter.resample(frame):
                    yield out.to_ndarray()
            if converter is not None:
                for out in converter.resample(None):
                    yield out.to_ndarray()
        except av.error.FFmpegError:
            raise DecodeFailure(REASON_CORRUPT, final=True) from None
        except MemoryError:
            raise DecodeFailure("not enough memory to decode this file", final=True) from None

    def blocks(self, block_frames: int | None) -> Iterator[np.ndarray]:
        limit = None if self._limits.max_seconds is None else self._limits.max_seconds * self.info.sample_rate
        stated = self._stated_frames
        held_back = _MAX_TRAILING_PADDING if stated > 0 else 0  # possible padding, cut at the end
        pending: list[np.ndarray] = []
        pending_frames = total = 0
        for planar in self._frames():
            pending.append(planar)
            pending_frames += planar.shape[1]
            total += planar.shape[1]
            if limit is not None and total > limit:
                check_duration(total, self.info.sample_rate, self._limits, at_least=True)
            if block_frames is not None and pending_frames >= block_frames + held_back:
                block = np.concatenate(pending, axis=1)
                keep = block.shape[1] - held_back
                pending, pending_frames = [block[:, keep:]], block.shape[1] - keep
                yield np.ascontiguousarray(block[:, :keep].T)
        if pending_frames:
            block = np.concatenate(pending, axis=1)
            if 0 < stated < total <= stated + _MAX_TRAILING_PADDING:
                block = block[:, : max(0, block.shape[1] - (total - stated))]  # the encoder's padding
            if block.shape[1]:
                yield np.ascontiguousarray(block.T)
        if total == 0:
            raise DecodeFailure(REASON_NO_SAMPLES)


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------

_Source = _SndfileSource | _AvSource


def _backends(path: Path) -> list[Callable[[Path, AudioLimits, str | None], _Source]]:
    """libsndfile first for its formats and unknown extensions; PyAV for the rest and as fallback."""
    suffix = path.suffix.lower()
    if suffix in AUDIO_EXTENSIONS and suffix not in _SNDFILE_EXTENSIONS:
        return [_AvSource]
    return [_SndfileSource, _AvSource]


def _open_source(path: Path, limits: AudioLimits) -> _Source:
    container = inspect_file(path, limits)
    failures: list[DecodeFailure] = []
    for backend in _backends(path):
        try:
            return backend(path, limits, container)
        except DecodeFailure as failure:
            if failure.final:
                raise
            failures.append(failure)
    # Every backend refused: report the most specific verdict (later backends win ties).
    best = failures[0]
    for failure in failures[1:]:
        if failure.rank >= best.rank:
            best = failure
    raise best


@contextlib.contextmanager
def _as_load_errors(shown: str) -> Iterator[None]:
    """The module's contract: nothing but ``AudioLoadError(path, reason)`` leaves it."""
    try:
        yield
    except AudioLoadError:
        raise
    except DecodeFailure as failure:
        raise AudioLoadError(shown, failure.reason) from None
    except MemoryError:
        raise AudioLoadError(shown, "not enough memory to decode this file") from None
    except Exception as exc:
        raise AudioLoadError(shown, one_line(f"cannot decode ({type(exc).__name__}: {exc})")) from exc


def _shown(path: str | os.PathLike[str]) -> str:
    return os.fsdecode(os.fspath(path))


def _check_rate(sample_rate: int | None) -> int | None:
    if sample_rate is None:
        return None
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int or None, got {sample_rate!r}")
    return int(sample_rate)


def _condition(block: np.ndarray, mono: bool) -> np.ndarray:
    """Native ``(frames, channels)`` block -> finite, clipped, optionally averaged to one channel."""
    if not np.isfinite(block).all():
        raise DecodeFailure(REASON_NON_FINITE, final=True)
    if not block.flags.writeable:
        block = block.copy()
    np.clip(block, -1.0, 1.0, out=block)
    if mono and block.shape[1] > 1:
        return block.mean(axis=1, dtype=np.float32, keepdims=True)
    return block


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def probe_audio(path: str | os.PathLike[str], limits: AudioLimits = AudioLimits()) -> AudioInfo:
    """Read a file's rate, channels and length without decoding it, enforcing ``limits``.

    Cheap (a header read), so callers can reject over-long files or plan windows before paying
    for decoding. Raises ``AudioLoadError`` like ``load_audio`` for everything the headers show
    (missing, empty, not audio, unsupported codec, truncated WAV/AIFF, over a limit); damage
    inside the coded data only shows when the file is decoded.
    """
    shown = _shown(path)
    with _as_load_errors(shown):
        source = _open_source(Path(os.fsdecode(path)), limits)
        source.close()
        return source.info


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None = MODEL_SAMPLE_RATE,
    mono: bool = True,
    limits: AudioLimits = AudioLimits(),
) -> tuple[torch.Tensor, int]:
    """Decode a whole file to float32 ``(channels, samples)`` in [-1, 1] and return it with its rate.

    ``sample_rate=None`` keeps the file's rate; ``mono=True`` averages channels (see the module
    docstring for the channel, clipping and resampling policy). Any problem with the file raises
    ``AudioLoadError(path, reason)``. For long files prefer :func:`stream_audio`.
    """
    import torch

    sample_rate = _check_rate(sample_rate)
    shown = _shown(path)
    with _as_load_errors(shown):
        source = _open_source(Path(os.fsdecode(path)), limits)
        try:
            blocks = [_condition(block, mono) for block in source.blocks(None)]
        finally:
            source.close()
        data = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0)
        del blocks
        if data.shape[0] == 0:
            raise DecodeFailure(REASON_NO_SAMPLES)
        waveform = torch.from_numpy(np.ascontiguousarray(data.T, dtype=np.float32))
        rate = source.info.sample_rate
        if sample_rate is not None and sample_rate != rate:
            waveform = resample(waveform, rate, sample_rate).clamp_(-1.0, 1.0)
            rate = sample_rate
        if waveform.shape[-1] == 0:
            raise DecodeFailure(REASON_NO_SAMPLES)
        return waveform, rate


class AudioStream:
    """A file decoded block by block: iterate for float32 ``(channels, n)`` tensors at ``sample_rate``.

    The header is read (and the file refused) when the stream is made; damage inside the coded
    data raises ``AudioLoadError`` during iteration. Concatenating the blocks gives exactly what
    :func:`load_audio` returns. After iteration, ``frames`` is the number of output samples per
    channel and ``duration`` the decoded length in seconds (what was decoded, not what the
    header claimed).
    """

    def __init__(self, path: str | os.PathLike[str], sample_rate: int | None, mono: bool, limits: AudioLimits,
                 block_seconds: float):  # fmt: skip
        self.path = _shown(path)
        self._fs_path = Path(os.fsdecode(path))
        self._mono = mono
        self._limits = limits
        self._block_seconds = float(block_seconds)
        with _as_load_errors(self.path):
            self._source: _Source | None = _open_source(self._fs_path, limits)  # kept for the first pass
        self.info = self._source.info
        self.sample_rate = sample_rate or self.info.sample_rate
        self.channels = 1 if mono else self.info.channels
        self.frames = 0
        self.native_frames = 0

    @property
    def duration(self) -> float:
        return self.native_frames / self.info.sample_rate

    def close(self) -> None:
        """Release the file held open since the header was read (iterating also releases it)."""
        source = getattr(self, "_source", None)  # absent when the header was refused
        if source is not None:
            source.close()
            self._source = None

    def __del__(self) -> None:
        self.close()

    def __iter__(self) -> Iterator[torch.Tensor]:
        import torch

        with _as_load_errors(self.path):
            source, self._source = self._source or _open_source(self._fs_path, self._limits), None
            try:
                native_rate = source.info.sample_rate
                block_frames = max(1, int(self._block_seconds * native_rate))
                resampler: StreamResampler | None = None
                self.frames = self.native_frames = 0
                for raw in source.blocks(block_frames):
                    block = _condition(raw, self._mono)
                    if resampler is None:
                        resampler = StreamResampler(source.info.sample_rate, self.sample_rate, block.shape[1])
                    self.native_frames += block.shape[0]
                    out = resampler.push(block)
                    if out.shape[0]:
                        self.frames += out.shape[0]
                        yield torch.from_numpy(np.ascontiguousarray(out.T)).clamp_(-1.0, 1.0)
                tail = resampler.flush() if resampler is not None else np.zeros((0, 1), np.float32)
                if tail.shape[0]:
                    self.frames += tail.shape[0]
                    yield torch.from_numpy(np.ascontiguousarray(tail.T)).clamp_(-1.0, 1.0)
                if self.frames == 0:
                    raise DecodeFailure(REASON_NO_SAMPLES)
            finally:
                source.close()


def stream_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None = MODEL_SAMPLE_RATE,
    mono: bool = True,
    limits: AudioLimits = AudioLimits(),
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> AudioStream:
    """Open ``path`` for block-wise decoding (bounded memory for any length); see :class:`AudioStream`."""
    return AudioStream(path, _check_rate(sample_rate), mono, limits, block_seconds)

