"""Audio decoding: every part of the product (indexer, evaluator, trainer, web server) reads sound here.

Returned audio
    ``load_audio`` returns float32 ``(channels, samples)`` in [-1, 1] and the sample rate of that
    tensor. Integer PCM is scaled by libsndfile's and ffmpeg's own convention (int16 / 32768,
    int24 / 2**23, ...), which is also what librosa (the official AudioCLIP loaders) returns, so
    ``to_model_scale`` of a 16-bit file gives back its exact int16 values.

Backends
    * libsndfile (``soundfile``) for WAV, FLAC, OGG (Vorbis, and Opus where libsndfile can),
      AIFF, and for files whose extension is not an audio one (libsndfile reads the content, not
      the name). Always read as ``dtype='float32', always_2d=True``.
    * ffmpeg (``ffprobe`` for metadata, ``ffmpeg`` decoding straight to 32-bit float PCM) for
      MP3, M4A/AAC, Opus and WMA, and as the fallback when libsndfile cannot read a file whose
      extension says audio (a ``.wav`` holding MP3, an ``.ogg`` libsndfile rejects, ...).
      Decoding to float keeps every integer source exact (16 and 24 bit fit a float32 mantissa)
      and lossy decoders' output unquantised; pydub is not used because it converts through an
      in-memory WAV (several copies of the PCM, a 4 GiB ceiling) and 16-bit for MP3/AAC.
      ffmpeg only gets local files (``file:`` URL, file protocol only) and a whitelist of audio
      demuxers, so a playlist renamed ``.mp3`` cannot make it open other files.

Channel policy
    ``mono=True`` (the default) averages the channels: what the official ESC-50 loader (librosa's
    ``to_mono``) does and therefore what the model saw in training. ``mono=False`` keeps the
    channels as stored (no remixing, no reordering).

Sample values
    Float files may hold samples beyond [-1, 1]; they are clipped to [-1, 1] and decoding goes on
    (a loud file is still a usable file). The sinc resampler can overshoot near full scale, so
    the result is clipped again after resampling. NaN or infinite samples are an error.

Resampling
    ``torchaudio.functional.resample`` with a Kaiser-windowed sinc (64 zero crossings, rolloff
    0.9475, beta 14.7697): the parameters of resampy's ``kaiser_best``, librosa's resampler when
    the official AudioCLIP models were trained. ``sample_rate=None`` keeps the native rate. Odd
    rate pairs (44056 -> 44100 Hz) use the same filter evaluated at its non-zero taps only, since
    torchaudio's dense kernel for them takes gigabytes.

Errors
    Every failure is an ``AudioLoadError(path, reason)`` with a one-line reason ("empty file",
    "truncated or corrupt audio data", "longer than the 600 s limit (1234.5 s)", ...); no
    soundfile, ffmpeg or OS exception escapes. Truncation is detected from the container where it
    says how much audio there should be (WAV/AIFF data-chunk sizes, FLAC/WAV frame counts, MP4
    index, decoder errors); a frame-aligned cut of a stream format (MP3, ADTS AAC) is
    indistinguishable from a shorter file and decodes as one.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import AudioLoadError

__all__ = [
    "AUDIO_EXTENSIONS",
    "INT16_SCALE",
    "MODEL_SAMPLE_RATE",
    "RESAMPLE_OPTIONS",
    "AudioInfo",
    "AudioLimits",
    "fit_length",
    "load_audio",
    "probe_audio",
    "resample",
    "to_model_scale",
    "window_starts",
]

AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".mp3",
    ".m4a",
    ".aac",
    ".aiff",
    ".aif",
    ".opus",
    ".wma",
)
MODEL_SAMPLE_RATE = 44100
INT16_SCALE = 32768.0

# resampy's "kaiser_best" (librosa's default resampler when AudioCLIP was trained), as torchaudio
# documents it: 64 zero crossings, rolloff 0.9475, Kaiser window with beta 14.769656459379492.
RESAMPLE_OPTIONS: dict[str, Any] = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}

_SNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"})

# Demuxers ffmpeg may use: audio containers only (no playlists, concat lists, images or devices).
_FFMPEG_DEMUXERS = ",".join(
    (
        "mp3",
        "mov,mp4,m4a,3gp,3g2,mj2",
        "aac",
        "ogg",
        "asf",
        "wav",
        "w64",
        "flac",
        "aiff",
        "caf",
        "matroska,webm",
        "au",
        "wv",
        "ape",
        "ac3",
        "eac3",
        "amr",
        "mpc",
        "mpc8",
        "tta",
        "voc",
        "loas",
        "dts",
        "mp2",
    )
)
_FFMPEG_INPUT_OPTIONS = ("-protocol_whitelist", "file", "-format_whitelist", _FFMPEG_DEMUXERS)
_FFPROBE_TIMEOUT_S = 120.0

# One-line reasons shared by both backends (tests and callers may match on them).
REASON_EMPTY = "empty file"
REASON_NOT_AUDIO = "not an audio file or unsupported format"
REASON_CORRUPT = "truncated or corrupt audio data"
REASON_NO_SAMPLES = "no audio samples"
REASON_NO_STREAM = "no audio stream"
REASON_NON_FINITE = "audio contains NaN or infinite sample values"

_GIB = 1024**3


@dataclass(frozen=True)
class AudioLimits:
    """Refuse inputs before spending memory on them: file size in bytes and duration in seconds.

    ``None`` switches a limit off. The defaults (2 GiB, 3 hours) keep a decoded file within a few
    GiB of RAM; the web server and indexer pass tighter ones.
    """

    max_bytes: int | None = 2 * 1024**3
    max_seconds: float | None = 3 * 3600.0


@dataclass(frozen=True)
class AudioInfo:
    """What a file says about itself, read without decoding it.

    ``frames`` and ``duration`` are exact for libsndfile formats; for ffmpeg formats they come
    from the container (``frames`` is ``round(duration * sample_rate)``) and are ``-1`` / NaN when
    the container does not say. ``format`` is descriptive ("WAV/PCM_16", "mp3/mp3"), not an enum.
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str


class _Failure(Exception):
    """A backend's verdict. ``final`` stops the fallback chain (the file is bad whoever reads it)."""

    RANKS = {REASON_NOT_AUDIO: 1, REASON_NO_SAMPLES: 2, REASON_NO_STREAM: 2, REASON_CORRUPT: 3}

    def __init__(self, reason: str, final: bool = False, rank: int | None = None):
        super().__init__(reason)
        self.reason = _one_line(reason)
        self.final = final
        self.rank = self.RANKS.get(reason, 0) if rank is None else rank


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_seconds(value: float) -> str:
    return f"{value:g}"


def _format_bytes(value: int) -> str:
    for unit, size in (("GiB", _GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{value} bytes"


def _check_duration(frames: int, sample_rate: int, limits: AudioLimits, at_least: bool = False) -> None:
    if limits.max_seconds is None or frames < 0 or sample_rate <= 0:
        return
    seconds = frames / sample_rate
    if seconds > limits.max_seconds:
        actual = f"at least {seconds:.1f} s" if at_least else f"{seconds:.1f} s"
        raise _Failure(f"longer than the {_format_seconds(limits.max_seconds)} s limit ({actual})", final=True)


# ---------------------------------------------------------------------------------------------
# File checks shared by every backend
# ---------------------------------------------------------------------------------------------


def _inspect_file(path: Path, limits: AudioLimits) -> None:
    """Existence, type, permission, size limits and container truncation, before any decoder runs."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _Failure("no such file", final=True) from None
    except PermissionError:
        raise _Failure("permission denied", final=True) from None
    except OSError as exc:
        raise _Failure(f"cannot read file ({exc.strerror or exc})", final=True) from None
    if stat.S_ISDIR(st.st_mode):
        raise _Failure("is a directory", final=True)
    if not stat.S_ISREG(st.st_mode):
        raise _Failure("not a regular file", final=True)
    if st.st_size == 0:
        raise _Failure(REASON_EMPTY, final=True)
    if limits.max_bytes is not None and st.st_size > limits.max_bytes:
        raise _Failure(
            f"larger than the {_format_bytes(limits.max_bytes)} limit ({_format_bytes(st.st_size)})",
            final=True,
        )
    try:
        with open(path, "rb") as fh:
            _check_chunked_container(fh, st.st_size)
    except _Failure:
        raise
    except PermissionError:
        raise _Failure("permission denied", final=True) from None
    except IsADirectoryError:
        raise _Failure("is a directory", final=True) from None
    except OSError as exc:
        raise _Failure(f"cannot read file ({exc.strerror or exc})", final=True) from None


def _check_chunked_container(fh: Any, size: int) -> None:
    """Catch truncated WAV / AIFF files, which libsndfile silently reads short.

    The audio chunk ("data" in RIFF, "SSND" in AIFF) declares its byte size; a file that ends
    before that is truncated (a cut download, a recorder that crashed). Placeholder sizes written
    by streaming encoders (0, 0xFFFFFFFF, RF64) are accepted as "unknown".
    """
    head = fh.read(12)
    if len(head) < 12:
        return
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        endian, audio_chunk = ("<" if head[:4] == b"RIFF" else ">"), b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        endian, audio_chunk = ">", b"SSND"
    else:
        return
    (container_size,) = struct.unpack(endian + "I", head[4:8])
    offset = 12
    while offset + 8 <= size:
        fh.seek(offset)
        chunk = fh.read(8)
        if len(chunk) < 8:
            break
        chunk_id = chunk[:4]
        (chunk_size,) = struct.unpack(endian + "I", chunk[4:8])
        if chunk_id == audio_chunk:
            available = size - (offset + 8)
            if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                raise _Failure(REASON_CORRUPT, final=True)
            return
        offset += 8 + chunk_size + (chunk_size & 1)
    # No audio chunk before the end of the file: truncated if the header promised more bytes.
    if container_size not in (0, 0xFFFFFFFF) and container_size + 8 > size:
        raise _Failure(REASON_CORRUPT, final=True)


# ---------------------------------------------------------------------------------------------
# libsndfile backend
# ---------------------------------------------------------------------------------------------


def _sndfile_failure(exc: BaseException) -> _Failure:
    """Map a libsndfile open error to a reason; not final, so ffmpeg gets a chance for audio files."""
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "error_string", None) or exc).lower()
    if code == 4 or "unsupported encoding" in message or "unknown format" in message:
        return _Failure("unsupported codec or sample encoding", rank=4)
    if code == 3 or "malformed" in message or message.startswith("error in"):
        return _Failure(REASON_CORRUPT)
    return _Failure(REASON_NOT_AUDIO)


def _sndfile_format(sf_obj: Any) -> str:
    return f"{sf_obj.format}/{sf_obj.subtype}"


def _sndfile_open(path: Path) -> Any:
    import soundfile

    try:
        return soundfile.SoundFile(str(path))
    except Exception as exc:  # LibsndfileError, TypeError/RuntimeError from odd headers
        raise _sndfile_failure(exc) from None


def _sndfile_probe(path: Path, limits: AudioLimits) -> AudioInfo:
    with _sndfile_open(path) as f:
        _check_sndfile_header(f)
        _check_sndfile_frames(f)
        _check_duration(f.frames, f.samplerate, limits)
        return AudioInfo(
            str(path), int(f.samplerate), int(f.channels), int(f.frames), f.frames / f.samplerate, _sndfile_format(f)
        )


_EXACT_LENGTH_SUBTYPES = frozenset(
    {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"}
)


def _check_sndfile_header(f: Any) -> None:
    if f.samplerate <= 0 or f.channels <= 0:
        raise _Failure(REASON_CORRUPT, final=True)


def _has_exact_length(f: Any) -> bool:
    # PCM WAV/AIFF and FLAC state their length; for MPEG or ADPCM inside WAV, and for OGG when
    # the last page is damaged, libsndfile's frame count is an estimate or a failure.
    return f.format == "FLAC" or f.subtype in _EXACT_LENGTH_SUBTYPES


def _check_sndfile_frames(f: Any) -> None:
    if f.frames <= 0:
        # Final for formats that state their length; otherwise (libsndfile reports 0 frames for
        # some damaged OGG files) ffmpeg gets a look.
        raise _Failure(REASON_NO_SAMPLES, final=_has_exact_length(f))


def _sndfile_decode(path: Path, limits: AudioLimits) -> tuple[np.ndarray, int]:
    with _sndfile_open(path) as f:
        _check_sndfile_header(f)
        _check_sndfile_frames(f)
        _check_duration(f.frames, f.samplerate, limits)
        try:
            data = f.read(dtype="float32", always_2d=True)
        except MemoryError:
            raise _Failure(
                f"not enough memory to decode {f.frames / f.samplerate:.1f} s of audio", final=True
            ) from None
        except Exception:  # "flac decoder lost sync" and similar: the data is damaged
            raise _Failure(REASON_CORRUPT, final=True) from None
        if data.shape[0] < f.frames and _has_exact_length(f):
            # The header's length is exact, so reading fewer frames means a cut file.
            raise _Failure(REASON_CORRUPT, final=True)
        return data, int(f.samplerate)


# ---------------------------------------------------------------------------------------------
# ffmpeg backend
# ---------------------------------------------------------------------------------------------


def _ffmpeg_tool(name: str, path: Path) -> str:
    tool = shutil.which(name)
    if tool is None:
        raise _Failure(
            f"cannot decode {path.suffix or 'this'} files: {name} is not installed (install ffmpeg)",
            rank=0,
        )
    return tool


def _ffmpeg_url(path: Path) -> str:
    # "file:" stops ffmpeg reading "a:b.mp3" as a protocol or "-x.mp3" as an option.
    return "file:" + str(path.absolute())


def _ffmpeg_failure(stderr: str, url: str = "") -> _Failure:
    """Turn ffmpeg/ffprobe's error output into one reason (without repeating the path)."""
    if url:
        stderr = stderr.replace(url + ": ", "").replace(url, "the file")
    low = stderr.lower()
    if "decoder (codec" in low and "not found" in low:
        codec = low.split("decoder (codec", 1)[1].split(")", 1)[0].strip()
        return _Failure(f"unsupported codec {codec}" if codec != "none" else "unsupported codec", rank=4)
    if "permission denied" in low:
        return _Failure("permission denied", final=True)
    if "matches no streams" in low or "does not contain any stream" in low:
        return _Failure(REASON_NO_STREAM)
    if "moov atom not found" in low or "end of file" in low:
        return _Failure(REASON_CORRUPT)
    if "invalid data found" in low or "invalid argument" in low or "not on whitelist" in low:
        return _Failure(REASON_NOT_AUDIO)
    lines = [line for line in stderr.splitlines() if line.strip()]
    return _Failure(f"ffmpeg could not decode it: {lines[-1]}" if lines else REASON_NOT_AUDIO, rank=1)


def _parse_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _ffmpeg_probe(path: Path, limits: AudioLimits) -> AudioInfo:
    ffprobe = _ffmpeg_tool("ffprobe", path)
    cmd = [
        ffprobe, "-v", "error", *_FFMPEG_INPUT_OPTIONS,
        "-select_streams", "a",
        "-show_entries",
        "stream=index,codec_name,codec_tag,sample_rate,channels,duration:format=format_name,duration",
        "-of", "json", _ffmpeg_url(path),
    ]  # fmt: skip
    try:
        res = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=_FFPROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise _Failure("timed out reading the audio metadata", final=True) from None
    except OSError as exc:
        raise _Failure(f"cannot run ffprobe ({exc.strerror or exc})", rank=0) from None
    stderr = res.stderr.decode("utf-8", "replace")
    if res.returncode != 0:
        raise _ffmpeg_failure(stderr, _ffmpeg_url(path))
    try:
        meta = json.loads(res.stdout.decode("utf-8", "replace") or "{}")
    except ValueError:
        raise _Failure(REASON_NOT_AUDIO) from None
    streams = meta.get("streams") or []
    if not streams:
        raise _Failure(REASON_NO_STREAM if meta.get("format") else REASON_NOT_AUDIO)
    stream, fmt = streams[0], meta.get("format") or {}
    codec = stream.get("codec_name")
    if not codec or codec == "none":
        tag = stream.get("codec_tag")
        raise _Failure(f"unsupported codec (format tag {tag})" if tag else "unsupported codec", rank=4)
    try:
        sample_rate = int(stream.get("sample_rate") or 0)
        channels = int(stream.get("channels") or 0)
    except (TypeError, ValueError):
        sample_rate = channels = 0
    if sample_rate <= 0 or channels <= 0:
        raise _Failure(REASON_CORRUPT)
    duration = _parse_float(stream.get("duration"))
    if duration is None:
        duration = _parse_float(fmt.get("duration"))
    frames = -1 if duration is None else int(round(duration * sample_rate))
    if frames == 0:
        raise _Failure(REASON_NO_SAMPLES)
    _check_duration(frames, sample_rate, limits)
    return AudioInfo(str(path), sample_rate, channels, frames,
                     math.nan if duration is None else duration,
                     f"{fmt.get('format_name', '?')}/{codec}")  # fmt: skip


# Messages with which ffmpeg reports damaged data while still exiting 0.
_FFMPEG_DAMAGE = ("error while decoding", "invalid data found", "corrupt", "truncat", "exhausted", "lost sync")


def _ffmpeg_decode(path: Path, limits: AudioLimits) -> tuple[np.ndarray, int]:
    info = _ffmpeg_probe(path, limits)
    ffmpeg = _ffmpeg_tool("ffmpeg", path)
    # -ac/-ar pin the output layout to what was probed (a stream that changes rate or channel
    # count midway is converted, never misread); they are no-ops otherwise.
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *_FFMPEG_INPUT_OPTIONS,
        "-i", _ffmpeg_url(path), "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", str(info.channels), "-ar", str(info.sample_rate),
    ]  # fmt: skip
    if limits.max_seconds is not None:
        # Stop shortly past the limit even when the container under-reports its duration.
        cmd += ["-t", f"{limits.max_seconds + 1.0:.6f}"]
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]
    with tempfile.TemporaryFile() as err_file:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_file)
        except OSError as exc:
            raise _Failure(f"cannot run ffmpeg ({exc.strerror or exc})", rank=0) from None
        try:
            buf = bytearray()
            chunk = bytearray(1 << 20)
            view = memoryview(chunk)
            assert proc.stdout is not None
            while n := proc.stdout.readinto(chunk):
                buf += view[:n]
            returncode = proc.wait()
        except MemoryError:
            raise _Failure("not enough memory to decode this file", final=True) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        err_file.seek(0)
        stderr = err_file.read(1 << 20).decode("utf-8", "replace")
    if returncode != 0:
        raise _ffmpeg_failure(stderr, _ffmpeg_url(path))
    if any(marker in stderr.lower() for marker in _FFMPEG_DAMAGE):
        raise _Failure(REASON_CORRUPT)
    frame_bytes = 4 * info.channels
    usable = len(buf) - len(buf) % frame_bytes
    if usable == 0:
        raise _Failure(REASON_NO_SAMPLES)
    del buf[usable:]
    # Writable, no copy (the buffer is a bytearray); astype is a no-op on little-endian machines.
    data = np.frombuffer(buf, dtype="<f4").reshape(-1, info.channels).astype(np.float32, copy=False)
    _check_duration(data.shape[0], info.sample_rate, limits, at_least=True)
    return data, info.sample_rate


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def _backends(path: Path, probe: bool) -> list[Callable[[Path, AudioLimits], Any]]:
    """libsndfile first for its formats and unknown extensions; ffmpeg for the rest and as fallback."""
    suffix = path.suffix.lower()
    sndfile = _sndfile_probe if probe else _sndfile_decode
    ffmpeg = _ffmpeg_probe if probe else _ffmpeg_decode
    if suffix in _SNDFILE_EXTENSIONS:
        return [sndfile, ffmpeg]
    if suffix in AUDIO_EXTENSIONS:
        return [ffmpeg]
    return [sndfile]


def _run(path: str | os.PathLike[str], limits: AudioLimits, probe: bool) -> Any:
    shown = os.fspath(path)
    p = Path(shown)
    try:
        _inspect_file(p, limits)
        failures: list[_Failure] = []
        for backend in _backends(p, probe):
            try:
                return backend(p, limits)
            except _Failure as failure:
                if failure.final:
                    raise
                failures.append(failure)
        # Every backend refused: report the most specific verdict (later backends win ties).
        best = failures[0]
        for failure in failures[1:]:
            if failure.rank >= best.rank:
                best = failure
        raise best
    except _Failure as failure:
        raise AudioLoadError(shown, failure.reason) from None
    except MemoryError:
        raise AudioLoadError(shown, "not enough memory to decode this file") from None
    except Exception as exc:  # the contract: nothing but AudioLoadError leaves this module
        raise AudioLoadError(shown, _one_line(f"cannot decode ({type(exc).__name__}: {exc})")) from exc


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def probe_audio(path: str | os.PathLike[str], limits: AudioLimits = AudioLimits()) -> AudioInfo:
    """Read a file's rate, channels and length without decoding it, enforcing ``limits``.

    Cheap (libsndfile's header read, or one ffprobe run), so callers can reject over-long files
    or plan windows before paying for decoding. Raises ``AudioLoadError`` like ``load_audio`` for
    everything the headers show (missing, empty, not audio, unsupported codec, truncated WAV/AIFF,
    over a limit); damage inside the coded data only shows when ``load_audio`` decodes it.
    """
    return _run(path, limits, probe=True)


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample ``(..., time)`` float audio with the documented Kaiser-sinc settings (see module doc).

    Output length is ``ceil(time * new_freq / orig_freq)``, as torchaudio's. Common rate pairs go
    through ``torchaudio.functional.resample``; pairs whose reduced ratio is large (44056 -> 44100
    Hz, Mac 22254 Hz, ...) would make torchaudio build a gigabyte dense kernel and take minutes,
    so they use the same windowed-sinc filter evaluated only at its non-zero taps.
    """
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    width = _sinc_half_width(orig, new)
    if new * (2 * width + orig) > _DENSE_KERNEL_LIMIT:
        return _sparse_sinc_resample(waveform, orig, new)
    import torchaudio.functional as AF

    return AF.resample(waveform, orig_freq, new_freq, **RESAMPLE_OPTIONS)


# Largest dense kernel (phases x taps) handed to torchaudio: 48000 -> 44100 needs ~4.4e4,
# 22050 -> 44100 ~2.7e2; 44056 -> 44100 would need 1.2e8.
_DENSE_KERNEL_LIMIT = 4_000_000


def _sinc_half_width(orig: int, new: int) -> int:
    """torchaudio's filter half-width in input samples (reduced rates)."""
    return math.ceil(RESAMPLE_OPTIONS["lowpass_filter_width"] * orig / (min(orig, new) * RESAMPLE_OPTIONS["rolloff"]))


def _sparse_sinc_resample(waveform: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """torchaudio's Kaiser-sinc resampler (reduced rates ``orig`` -> ``new``) without its dense kernel.

    Output sample ``i * new + j`` is phase ``j``'s filter applied around input ``i * orig + j * orig
    / new``; torchaudio's kernel spans ``orig + 2 * width`` taps per phase, all but ``2 * width +
    2`` of them zero. Here phases are taken in groups whose taps overlap, each group one strided
    ``conv1d`` with a kernel about twice the filter length, so cost and memory stay proportional
    to the filter, whatever the rates.
    """
    lowpass = RESAMPLE_OPTIONS["lowpass_filter_width"]
    beta = float(RESAMPLE_OPTIONS["beta"])
    base = min(orig, new) * RESAMPLE_OPTIONS["rolloff"]
    width = _sinc_half_width(orig, new)
    n_taps = 2 * width + 2
    phases = torch.arange(new, dtype=torch.float64)
    first = torch.floor(phases * orig / new).long() - width  # first tap of each phase, from i * orig
    offsets = first[:, None] + torch.arange(n_taps)[None, :]
    t = (offsets.double() / orig - phases[:, None] / new) * base
    t = t.clamp(-lowpass, lowpass)
    window = torch.i0(beta * torch.sqrt(1 - (t / lowpass) ** 2)) / torch.i0(torch.tensor(beta, dtype=torch.float64))
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = (sinc * window * (base / orig)).to(waveform.dtype)  # (new, n_taps)

    shape = waveform.shape
    x = waveform.reshape(-1, 1, shape[-1])
    length = shape[-1]
    target = math.ceil(new * length / orig)
    steps = math.ceil(target / new)
    padded = torch.nn.functional.pad(x, (width, width + 2 * orig + 2 * n_taps + 2))
    group = max(1, (n_taps * new) // orig)  # phases whose first taps lie within ~n_taps samples
    n_groups = math.ceil(new / group)
    rows = torch.arange(n_groups * group).clamp(max=new - 1)  # the last group is padded with repeats
    group_first = first[::group]  # (n_groups,)
    cols = offsets[rows].view(n_groups, group, n_taps) - group_first[:, None, None]
    span = int(cols.max()) + 1
    dense = kernel.new_zeros(n_groups, group, span)
    dense.scatter_(2, cols, kernel[rows].view(n_groups, group, n_taps))
    out = x.new_empty(x.shape[0], new, steps)
    for g in range(n_groups):
        a, b = g * group, min(g * group + group, new)
        lo = width + int(group_first[g])
        segment = padded[..., lo : lo + (steps - 1) * orig + span]
        out[:, a:b, :] = torch.nn.functional.conv1d(segment, dense[g, : b - a, None, :], stride=orig)
    y = out.transpose(1, 2).reshape(x.shape[0], steps * new)[:, :target]
    return y.reshape(shape[:-1] + (target,))


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None = MODEL_SAMPLE_RATE,
    mono: bool = True,
    limits: AudioLimits = AudioLimits(),
) -> tuple[torch.Tensor, int]:
    """Decode a file to float32 ``(channels, samples)`` in [-1, 1] and return it with its rate.

    ``sample_rate=None`` keeps the file's rate; ``mono=True`` averages channels (see the module
    docstring for the channel, clipping and resampling policy). Any problem with the file raises
    ``AudioLoadError(path, reason)``.
    """
    if sample_rate is not None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int or None, got {sample_rate!r}")
        sample_rate = int(sample_rate)
    shown = os.fspath(path)
    data, native_rate = _run(path, limits, probe=False)  # (frames, channels) float32
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioLoadError(shown, REASON_NO_SAMPLES)
    if not np.isfinite(data).all():
        raise AudioLoadError(shown, REASON_NON_FINITE)
    if not data.flags.writeable:
        data = data.copy()
    np.clip(data, -1.0, 1.0, out=data)
    channels_first = data.mean(axis=1, dtype=np.float32)[None, :] if mono and data.shape[1] > 1 else data.T
    waveform = torch.from_numpy(np.ascontiguousarray(channels_first, dtype=np.float32))
    rate = native_rate
    if sample_rate is not None and sample_rate != native_rate:
        waveform = resample(waveform, native_rate, sample_rate).clamp_(-1.0, 1.0)
        rate = sample_rate
    return waveform, rate


def to_model_scale(waveform: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float audio -> the model's input scale (int16 range), as float32.

    The official AudioCLIP feeds librosa's float audio times 32768; this is the only place the
    product does that conversion, so training, indexing and querying cannot disagree.
    """
    return waveform.to(torch.float32) * INT16_SCALE


def fit_length(waveform: torch.Tensor, length: int) -> torch.Tensor:
    """Pad or crop ``(..., T)`` audio to exactly ``length`` samples, deterministically.

    Exactly the official evaluation transforms (``RandomPadding(train=False)`` then
    ``RandomCrop(train=False)``), so embeddings match the published model's:

    * shorter: centred, the left pad filled with the mean over channels of the first sample and
      the right pad with that of the last sample (no click from a jump to zero);
    * longer: the centre crop, unless it is much quieter than the clip (std below half the
      clip's), then the first ``length`` samples, or the last ones if those are quieter still
      than half the clip but louder than the centre. The result may be a view of the input.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    n = waveform.shape[-1]
    if n == 0:
        raise ValueError("cannot fit an empty waveform")
    if n == length:
        return waveform
    if n < length:
        left = int(round(0.5 * (length - n)))
        right = length - (left + n)
        lead = waveform.shape[:-1]
        left_value = waveform[..., 0].float().mean().to(waveform.dtype)
        right_value = waveform[..., -1].float().mean().to(waveform.dtype)
        left_pad = torch.empty(lead + (left,), dtype=waveform.dtype, device=waveform.device).fill_(left_value)
        right_pad = torch.empty(lead + (right,), dtype=waveform.dtype, device=waveform.device).fill_(right_value)
        return torch.cat((left_pad, waveform, right_pad), dim=-1)
    left = int(round(0.5 * (n - length)))
    centre = waveform[..., left : left + length]
    if length == 1:
        # The std of one sample is NaN and every comparison below is False: the centre stays.
        return centre
    orig_std = waveform.float().std() * 0.5
    centre_std = centre.float().std()
    output = centre
    if centre_std < orig_std:
        output = waveform[..., :length]
    new_std = output.float().std()
    if orig_std > new_std > centre_std:
        output = waveform[..., -length:]
    return output


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start offsets of ``window``-sample windows every ``hop`` samples covering the whole signal.

    The regular grid 0, hop, 2*hop, ... is kept while windows fit; if it does not reach the end,
    one last window ends exactly at the end. A signal no longer than ``window`` gives ``[0]``
    (to be padded by ``fit_length``).
    """
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts
