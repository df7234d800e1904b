"""Reader stage: files -> decoded payloads, in order, with each failure as a one-line reason.

Audio is decoded straight into model inputs by a clip geometry (:mod:`.windows`: the indexer's 5 s
windows, or an evaluation protocol's one prepared clip a file): a short
file is one :class:`DecodedFile`; a long one (over ``LONG_AUDIO_SECONDS``) is decoded in blocks
and arrives as several pieces, the last with ``complete=True``, so memory stays bounded by a
block, whatever the file's length. The stored duration is what was decoded, not what the header
claimed.

Decoding worker processes (``workers > 0``) run FFmpeg's and libsndfile's C code away from the
main process: a worker that dies on a hostile file is replaced, the file is reported as failed
("the decoder crashed") and the run goes on. Long files are streamed in the main process, since
their pieces must arrive in order and unpickled.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import torch

from ..audio import MODEL_SAMPLE_RATE, AudioLimits, probe_audio, stream_audio
from ..crashpoints import crash_point
from ..errors import InputError
from ..fsio import is_object_path
from ..image import image_transform, load_image
from .discover import MAX_TEXT_BYTES, SourceFile
from .windows import ClipGeometry, WindowSpec

#: Audio longer than this (by its header, or of unknown length) is streamed in pieces.
LONG_AUDIO_SECONDS = 120.0
#: Seconds of audio decoded per block, and so at most per piece.
BLOCK_SECONDS = 60.0
CRASHED = "the decoder crashed on this file (its worker process died)"


@dataclass
class DecodedFile:
    source: SourceFile
    sha256: str = ""
    error: str | None = None
    windows: list[torch.Tensor] = field(default_factory=list)  # audio: (1, 220500) each, at 44.1 kHz
    spans: list[tuple[float, float]] = field(default_factory=list)  # audio: each window's (start, end) s
    pixels: torch.Tensor | None = None  # image: (3, 224, 224)
    text: str | None = None  # text document
    meta: dict[str, Any] = field(default_factory=dict)
    same_content: bool = False  # touched but not changed: nothing to decode or embed
    complete: bool = True  # False for every piece of a streamed file but its last
    piece: int = 0


def file_sha256(path, chunk: int = 1 << 20) -> str:  # noqa: ANN001
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return exc.reason
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _audio_pieces(item: DecodedFile, limits: AudioLimits, window: ClipGeometry) -> Iterator[DecodedFile]:
    """Decode ``item``'s audio block by block into windows; one piece per block, the last complete."""
    source = item.source
    stream = stream_audio(source.path, sample_rate=MODEL_SAMPLE_RATE, mono=True, limits=limits,
                          block_seconds=BLOCK_SECONDS)  # fmt: skip
    cutter = window.cutter()
    piece = 0
    for block in stream:
        windows, spans = cutter.push(block)
        if windows:
            yield DecodedFile(source, item.sha256, windows=windows, spans=spans, complete=False, piece=piece)
            piece += 1
    windows, spans = cutter.finish()
    meta = {"duration": stream.duration, "sample_rate": stream.info.sample_rate, "channels": stream.info.channels}
    yield DecodedFile(source, item.sha256, windows=windows, spans=spans, meta=meta, complete=True, piece=piece)


def decode_pieces(
    source: SourceFile, limits: AudioLimits, image_size: int = 224, window: ClipGeometry | None = None
) -> Iterator[DecodedFile]:
    """Decode one file into one or more pieces; never raises for bad input (the reason goes in ``.error``).

    A failure part-way through a long file ends its pieces with one ``complete`` piece carrying
    the error: the caller drops what it kept of the earlier pieces.
    """
    if is_object_path(source.path):  # an object in S3/GCS/Azure: decoded from a local copy
        from ..fsio.decode import decode_object_pieces

        yield from decode_object_pieces(source, lambda local: decode_pieces(local, limits, image_size, window))
        return
    item = DecodedFile(source)
    piece = 0
    try:
        crash_point(f"reader.decode.{source.path.name}")
        item.sha256 = file_sha256(source.path)
        if source.known_sha256 is not None and source.known_sha256 == item.sha256:
            item.same_content = True
            yield item
            return
        if source.modality == "audio":
            for part in _audio_pieces(item, limits, window or WindowSpec()):
                piece = part.piece
                yield part
            return
        if source.modality == "image":
            image = load_image(source.path)
            item.meta = {"width": image.size[0], "height": image.size[1]}
            item.pixels = image_transform(image_size)(image)
        else:
            if source.size > MAX_TEXT_BYTES:
                raise InputError(source.path, f"text file larger than {MAX_TEXT_BYTES} bytes")
            raw = source.path.read_bytes()
            if b"\x00" in raw:
                raise InputError(source.path, "not a text file (binary content)")
            text = " ".join(raw.decode("utf-8", errors="replace").split())
            if not text:
                raise InputError(source.path, "empty text file")
            item.text = text
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
        yield DecodedFile(source, item.sha256, error=_reason(exc), complete=True, piece=piece)
        return
    yield item


def decode_file(
    source: SourceFile, limits: AudioLimits, image_size: int = 224, window: ClipGeometry | None = None
) -> DecodedFile:
    """Decode one file whole (all windows in one item); for callers that want a file at a time."""
    pieces = list(decode_pieces(source, limits, image_size, window))
    last = pieces[-1]
    if last.error is not None or len(pieces) == 1:
        return last
    last.windows = [w for p in pieces for w in p.windows]
    last.spans = [s for p in pieces for s in p.spans]
    last.piece = 0
    return last


def is_long_audio(source: SourceFile, limits: AudioLimits) -> bool:
    """Whether ``source`` must be streamed in the main process (long, or of unknown length)."""
    if source.modality != "audio" or is_object_path(source.path):
        return False
    try:
        info = probe_audio(source.path, limits)
    except InputError:
        return False  # the worker reports the reason
    return math.isnan(info.duration) or info.duration > LONG_AUDIO_SECONDS  # NaN: length unknown


def _worker_init() -> None:
    torch.set_num_threads(1)  # the main process's model owns the cores


def _decode_in_worker(source: SourceFile, limits: AudioLimits, image_size: int, window: ClipGeometry) -> DecodedFile:
    return decode_file(source, limits, image_size, window)


class _WorkerPool:
    """Decoding processes that are replaced when one dies; the file that killed one is reported, not retried."""

    def __init__(self, workers: int, limits: AudioLimits, image_size: int, window: ClipGeometry):
        self.workers = workers
        self.args = (limits, image_size, window)
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # LanceDB's async runtime does not survive fork(); forkserver starts workers from a clean process
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_worker_init)  # fmt: skip

    def submit(self, source: SourceFile) -> Future:
        return self._pool.submit(_decode_in_worker, source, *self.args)

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()

    def alone(self, source: SourceFile) -> DecodedFile:
        """Decode ``source`` with nothing else in flight: if the pool breaks now, this file broke it."""
        try:
            return self.submit(source).result()
        except BrokenProcessPool:
            self.restart()
            return DecodedFile(source, error=CRASHED)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def read_files(
    sources: list[SourceFile],
    workers: int = 2,
    limits: AudioLimits | None = None,
    image_size: int = 224,
    window: ClipGeometry | None = None,
    isolate: bool = False,
) -> Iterator[DecodedFile]:
    """Decoded pieces in input order (a file's pieces consecutive); ``workers=0`` decodes in this process.

    ``window``: how audio becomes model inputs, the indexer's :class:`~.windows.WindowSpec` (the
    default) or an evaluation protocol's :class:`~.windows.WholeClip` (one prepared input a file).
    ``isolate``: decode even a lone file in a worker (for files suspected of killing their decoder).
    """
    limits = limits or AudioLimits()
    window = window or WindowSpec()
    if workers <= 0 or (len(sources) < 2 and not isolate):
        for source in sources:
            yield from decode_pieces(source, limits, image_size, window)
        return
    pool = _WorkerPool(min(workers, len(sources)), limits, image_size, window)
    in_flight: deque[tuple[SourceFile, Future | None]] = deque()
    upcoming = iter(sources)
    try:
        while True:
            while len(in_flight) < pool.workers * 4:
                source = next(upcoming, None)
                if source is None:
                    break
                in_flight.append((source, None if is_long_audio(source, limits) else pool.submit(source)))
            if not in_flight:
                return
            source, future = in_flight.popleft()
            if future is None:
                yield from decode_pieces(source, limits, image_size, window)
                continue
            try:
                item = future.result()
            except BrokenProcessPool:
                # A worker died (a decoder crash): every queued future is lost. Find the culprit by
                # decoding this file alone, then resubmit the rest to a fresh pool.
                pool.restart()
                item = pool.alone(source)
                in_flight = deque((s, None if f is None else pool.submit(s)) for s, f in in_flight)
            yield item
    finally:
        pool.close()
