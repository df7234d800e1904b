"""The two Ray stages: decoding (stateless CPU tasks) and encoding (an actor pool, one model each).

Both run the in-process engine's own code: :func:`~..reader.decode_pieces` turns a file into
pieces (windows, pixels, text) exactly as the local reader does, and
:func:`~..pipeline.encode_pieces` embeds them exactly as the local runner does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ...audio import AudioLimits
from ...crashpoints import crash_point
from ...store.schema import MODALITIES
from ..discover import SourceFile
from ..windows import WindowSpec
from .records import pieces_table, read_pieces, source_of, with_inputs


def decode_batch(batch: pa.Table, *, limits: AudioLimits, image_size: int, window: WindowSpec) -> Iterator[pa.Table]:
    """File records -> decoded pieces, one table per piece (a long file's pieces stream out one
    block of audio at a time, so a task's memory stays bounded whatever the file's length)."""
    from ..reader import decode_pieces

    for record in batch.to_pylist():
        crash_point("ray.decode")
        for piece in decode_pieces(source_of(record), limits, image_size, window):
            yield pieces_table([record["pos"]], [piece])


class EncodeStage:
    """One encoder actor: the driver's model (shipped once through the object store), on this
    actor's GPU when it was given one, else on the CPU with ``threads`` threads."""

    def __init__(self, model_ref: list, info: dict[str, Any], precision: str, micro_batch: dict[str, int] | None,
                 threads: int | None):  # fmt: skip
        import ray
        import torch

        from ...encoder import Encoder

        if threads:
            torch.set_num_threads(threads)
        model = ray.get(model_ref[0])  # wrapped in a list so Ray does not resolve it before the actor starts
        self.encoder = Encoder(model, device="auto", precision=precision, micro_batch=micro_batch, **info)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ..pipeline import encode_pieces

        crash_point("ray.encode")
        pieces, inputs = read_pieces(batch, _placeholder)
        pieces = [with_inputs(p, x) for p, x in zip(pieces, inputs, strict=True)]
        dim = self.encoder.embed_dim
        out = [np.zeros((0, dim), np.float32)] * len(pieces)
        for modality in MODALITIES:
            chosen = [i for i, p in enumerate(pieces) if p.source.modality == modality and _has_inputs(p)]
            if not chosen:
                continue
            vectors, counts = encode_pieces(self.encoder, modality, [pieces[i] for i in chosen])
            cursor = 0
            for i, n in zip(chosen, counts, strict=True):
                out[i] = vectors[cursor : cursor + n]
                cursor += n
        for p in pieces:  # the samples are not sent back
            p.windows, p.pixels = [], None
        counts = [len(v) for v in out]
        return pieces_table(batch.column("pos").to_pylist(), pieces, np.concatenate(out), counts)


def _placeholder(modality: str, pos: int) -> SourceFile:
    """Workers never need a file's own facts beyond its modality: the driver keeps them."""
    return SourceFile(path=None, modality=modality, size=0, mtime=0.0)  # type: ignore[arg-type]


def _has_inputs(piece: Any) -> bool:
    return piece.error is None and not piece.same_content and bool(piece.windows or piece.pixels is not None
                                                                   or piece.text)
