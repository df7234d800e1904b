"""Reader stage: decode files in DataLoader worker processes, so the model never waits on I/O.

Each item is one file: its content hash plus the decoded payload (a 44.1 kHz mono waveform, a
preprocessed image tensor, or a text), or the one-line reason it could not be read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import MODEL_SAMPLE_RATE, AudioLimits, load_audio
from ..errors import InputError
from ..image import image_transform, load_image
from .discover import MAX_TEXT_BYTES, SourceFile


@dataclass
class DecodedFile:
    source: SourceFile
    sha256: str = ""
    error: str | None = None
    waveform: torch.Tensor | None = None  # audio: (1, T) in [-1, 1] at 44.1 kHz
    pixels: torch.Tensor | None = None  # image: (3, 224, 224)
    text: str | None = None  # text document
    meta: dict[str, Any] = field(default_factory=dict)
    same_content: bool = False  # touched but not changed: nothing to decode or embed


def file_sha256(path, chunk: int = 1 << 20) -> str:  # noqa: ANN001
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def decode_file(source: SourceFile, limits: AudioLimits, image_size: int = 224) -> DecodedFile:
    """Decode one file; never raises for bad input (the reason goes in `.error`)."""
    item = DecodedFile(source)
    try:
        item.sha256 = file_sha256(source.path)
        if source.known_sha256 is not None and source.known_sha256 == item.sha256:
            item.same_content = True
            return item
        if source.modality == "audio":
            waveform, rate = load_audio(source.path, sample_rate=MODEL_SAMPLE_RATE, mono=True, limits=limits)
            item.waveform = waveform
            from ..audio import probe_audio

            info = probe_audio(source.path, limits)
            item.meta = {"duration": info.duration, "sample_rate": info.sample_rate, "channels": info.channels}
        elif source.modality == "image":
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
    except InputError as exc:
        item.error = exc.reason
    except OSError as exc:
        item.error = exc.strerror or str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
        item.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return item


class _Files(Dataset):
    def __init__(self, sources: list[SourceFile], limits: AudioLimits, image_size: int):
        self.sources = sources
        self.limits = limits
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> DecodedFile:
        return decode_file(self.sources[index], self.limits, self.image_size)


def _as_is(item: DecodedFile) -> DecodedFile:
    return item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the main process's model owns the cores


def read_files(
    sources: list[SourceFile], workers: int = 2, limits: AudioLimits | None = None, image_size: int = 224
) -> Iterator[DecodedFile]:
    """Decoded files in input order; `workers=0` decodes in this process."""
    dataset = _Files(sources, limits or AudioLimits(), image_size)
    if workers <= 0 or len(sources) < 2:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=min(workers, len(sources)),
        collate_fn=_as_is,
        worker_init_fn=_worker_init,
        prefetch_factor=4,
        # LanceDB's async runtime does not survive fork(); forkserver starts workers from a clean process
        multiprocessing_context="forkserver",
    )
    yield from loader
