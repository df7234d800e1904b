"""What a file may be before any decoder touches it: limits, one-line reasons, and container sniffing.

Every check here reads at most a few header bytes, so a 2 GiB file, a FIFO or a directory named
``x.wav`` is refused in microseconds with a reason a person can act on.
"""

from __future__ import annotations

import contextlib
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "REASON_CORRUPT",
    "REASON_EMPTY",
    "REASON_NON_FINITE",
    "REASON_NOT_AUDIO",
    "REASON_NO_SAMPLES",
    "REASON_NO_STREAM",
    "AudioInfo",
    "AudioLimits",
    "DecodeFailure",
    "check_duration",
    "format_bytes",
    "inspect_file",
    "one_line",
    "sniff_container",
    "wav_format_tag",
]

# One-line reasons shared by every backend (tests and callers may match on them).
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

    ``None`` switches a limit off. The defaults (2 GiB, 3 hours) bound the work per file; decoding
    streams in blocks, so memory does not grow with the duration. The web server passes tighter ones.
    """

    max_bytes: int | None = 2 * 1024**3
    max_seconds: float | None = 3 * 3600.0


@dataclass(frozen=True)
class AudioInfo:
    """What a file says about itself, read without decoding it.

    ``frames`` and ``duration`` are exact for libsndfile formats; for the others they come from
    the container (``frames`` is ``round(duration * sample_rate)``) and are ``-1`` / NaN when the
    container does not say. ``format`` is descriptive ("WAV/PCM_16", "mp3/mp3"), not an enum.
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str


class DecodeFailure(Exception):
    """A backend's verdict. ``final`` stops the fallback chain (the file is bad whoever reads it).

    ``rank`` orders verdicts of several backends: the most specific one is reported.
    """

    RANKS = {REASON_NOT_AUDIO: 1, REASON_NO_SAMPLES: 2, REASON_NO_STREAM: 2, REASON_CORRUPT: 3}

    def __init__(self, reason: str, final: bool = False, rank: int | None = None):
        super().__init__(reason)
        self.reason = one_line(reason)
        self.final = final
        self.rank = self.RANKS.get(reason, 0) if rank is None else rank


def one_line(text: str, limit: int = 200) -> str:
    """Collapse whitespace and cut to ``limit`` characters: reasons are shown one per line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_bytes(value: int) -> str:
    """``2147483648`` -> ``"2 GiB"``: sizes as people read them in error messages."""
    for unit, size in (("GiB", _GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{value} bytes"


def check_duration(frames: int, sample_rate: int, limits: AudioLimits, at_least: bool = False) -> None:
    """Refuse ``frames`` samples at ``sample_rate`` when over ``limits.max_seconds`` (unknown passes)."""
    if limits.max_seconds is None or frames < 0 or sample_rate <= 0:
        return
    seconds = frames / sample_rate
    if seconds > limits.max_seconds:
        actual = f"at least {seconds:.1f} s" if at_least else f"{seconds:.1f} s"
        raise DecodeFailure(f"longer than the {limits.max_seconds:g} s limit ({actual})", final=True)


_FILE_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


@contextlib.contextmanager
def _os_errors() -> Iterator[None]:
    """OS errors while looking at a file, as final one-line verdicts."""
    try:
        yield
    except FileNotFoundError:
        raise DecodeFailure("no such file", final=True) from None
    except PermissionError:
        raise DecodeFailure("permission denied", final=True) from None
    except IsADirectoryError:
        raise DecodeFailure("is a directory", final=True) from None
    except OSError as exc:
        raise DecodeFailure(f"cannot read file ({exc.strerror or exc})", final=True) from None


def inspect_file(path: Path, limits: AudioLimits) -> str | None:
    """Existence, type, permission, size limits and WAV/AIFF truncation; returns the sniffed container.

    Raises a final :class:`DecodeFailure` for anything no decoder could fix.
    """
    with _os_errors():
        st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        raise DecodeFailure("is a directory", final=True)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "special file")
        raise DecodeFailure(f"not a regular file: {kind}", final=True)
    if st.st_size == 0:
        raise DecodeFailure(REASON_EMPTY, final=True)
    if limits.max_bytes is not None and st.st_size > limits.max_bytes:
        raise DecodeFailure(
            f"larger than the {format_bytes(limits.max_bytes)} limit ({format_bytes(st.st_size)})", final=True
        )
    with _os_errors(), open(path, "rb") as fh:
        head = fh.read(64)
        _check_chunked_container(fh, head, st.st_size)
    return sniff_container(head)


def sniff_container(head: bytes) -> str | None:
    """The audio container the first bytes announce, or ``None``.

    Used to tell a damaged audio file ("truncated or corrupt") from something that never was one
    ("not an audio file") when a demuxer refuses both with the same error.
    """
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3":
        return "mp3"
    if head[:16] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9\x00\xaa\x00\x62\xce\x6c":
        return "asf"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"caff":
        return "caf"
    return None


def wav_format_tag(path: Path) -> int | None:
    """The codec tag in a RIFF WAV's ``fmt`` chunk (``0x0001`` PCM, ``0x0055`` MP3...), or ``None``.

    Names the codec in "unsupported codec (format tag 0x1234)" when no decoder knows it.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            while len(chunk := fh.read(8)) == 8:
                size = struct.unpack("<I", chunk[4:8])[0]
                if chunk[:4] == b"fmt ":
                    tag = fh.read(2)
                    return struct.unpack("<H", tag)[0] if len(tag) == 2 else None
                fh.seek(size + (size & 1), 1)
    except OSError:
        return None
    return None


def _check_chunked_container(fh: BinaryIO, head: bytes, size: int) -> None:
    """Catch truncated WAV / AIFF files, which libsndfile silently reads short.

    The audio chunk ("data" in RIFF, "SSND" in AIFF) declares its byte size; a file that ends
    before that is truncated (a cut download, a recorder that crashed). Placeholder sizes written
    by streaming encoders (0, 0xFFFFFFFF, RF64) are accepted as "unknown".
    """
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
                raise DecodeFailure(REASON_CORRUPT, final=True)
            return
        offset += 8 + chunk_size + (chunk_size & 1)
    # No audio chunk before the end of the file: truncated if the header promised more bytes.
    if container_size not in (0, 0xFFFFFFFF) and container_size + 8 > size:
        raise DecodeFailure(REASON_CORRUPT, final=True)
