"""Arrow forms of what moves between the Ray stages: file records, decoded pieces, encoded pieces.

Ray Data moves Arrow tables between tasks and actors without pickling Python objects, so the
reader's :class:`~..reader.DecodedFile` pieces travel as rows of plain columns: the samples or
pixels flattened into one ``float32`` list with their ``shape``, the window spans as two lists,
the embeddings flattened the same way. ``pos`` is the file's position in the driver's plan, which
keeps every file-level fact the workers do not need (caption, labels, stored state) on the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import torch

from ...fsio import ObjectPath, is_object_uri
from ..discover import SourceFile
from ..paths import fs_path, stored_path
from ..reader import DecodedFile

FILE_SCHEMA = pa.schema([("modality", pa.string()), ("pos", pa.int64()), ("path", pa.string()),
                         ("size", pa.int64()), ("mtime", pa.float64()), ("known_sha256", pa.string())])  # fmt: skip
_META = (("duration", pa.float64()), ("sample_rate", pa.int32()), ("channels", pa.int32()),
         ("width", pa.int32()), ("height", pa.int32()))  # fmt: skip
PIECE_FIELDS = [("modality", pa.string()), ("pos", pa.int64()), ("piece", pa.int32()), ("complete", pa.bool_()),
                ("error", pa.string()), ("same_content", pa.bool_()), ("sha256", pa.string()),
                ("items", pa.int32()), ("shape", pa.list_(pa.int32())), ("text", pa.string()),
                ("span_start", pa.list_(pa.float64())), ("span_end", pa.list_(pa.float64())), *_META]  # fmt: skip
#: a decoded piece: its model inputs flattened in ``data``
DECODED_SCHEMA = pa.schema([*PIECE_FIELDS, ("data", pa.large_list(pa.float32()))])
#: an encoded piece: ``items`` embeddings flattened in ``embedding``
ENCODED_SCHEMA = pa.schema([*PIECE_FIELDS, ("embedding", pa.large_list(pa.float32()))])

SourceLookup = Callable[[str, int], SourceFile]  # (modality, pos) -> the planned file


def file_table(todo: dict[str, list[SourceFile]]) -> pa.Table:
    """The planned files as records: ``pos`` indexes ``todo[modality]``."""
    cols: dict[str, list] = {name: [] for name in FILE_SCHEMA.names}
    for modality, files in todo.items():
        for pos, f in enumerate(files):
            for name, value in (("modality", modality), ("pos", pos), ("path", stored_path(f.path)),
                                ("size", int(f.size)), ("mtime", float(f.mtime)), ("known_sha256", f.known_sha256)):
                cols[name].append(value)
    return pa.table(cols, schema=FILE_SCHEMA)


def source_of(record: dict) -> SourceFile:
    """A file record back to the :class:`SourceFile` the reader decodes (a stored path names the file)."""
    text = record["path"]
    path = ObjectPath(text) if is_object_uri(text) else fs_path(text)
    return SourceFile(path, record["modality"], int(record["size"]), float(record["mtime"]),
                      known_sha256=record["known_sha256"])  # fmt: skip


def _inputs(piece: DecodedFile) -> list[torch.Tensor]:
    if piece.windows:
        return list(piece.windows)
    return [piece.pixels] if piece.pixels is not None else []


def pieces_table(positions: Sequence[int], pieces: Sequence[DecodedFile],
                 vectors: np.ndarray | None = None, counts: Sequence[int] | None = None) -> pa.Table:
    """Pieces as rows: with ``vectors`` (a piece's ``counts[i]`` rows, in order) an encoded table,
    else a decoded one carrying the model inputs."""
    cols: dict[str, list] = {name: [] for name, _ in PIECE_FIELDS}
    flat: list[np.ndarray] = []
    offsets = [0]
    cursor = 0
    for i, (pos, p) in enumerate(zip(positions, pieces, strict=True)):
        if vectors is None:
            inputs = _inputs(p)
            items, shape = len(inputs), (list(inputs[0].shape) if inputs else [])
            parts = [t.detach().to(torch.float32).contiguous().numpy().ravel() for t in inputs]
        else:
            items, shape = int(counts[i]), [int(vectors.shape[1])]  # type: ignore[index]
            parts = [vectors[cursor : cursor + items].ravel()]
            cursor += items
        flat.extend(parts)
        offsets.append(offsets[-1] + sum(a.size for a in parts))
        values = {"modality": p.source.modality, "pos": int(pos), "piece": p.piece, "complete": p.complete,
                  "error": p.error, "same_content": p.same_content, "sha256": p.sha256, "items": items,
                  "shape": shape, "text": p.text,
                  "span_start": [s for s, _ in p.spans], "span_end": [e for _, e in p.spans]}
        values.update({name: p.meta.get(name) for name, _ in _META})
        for name, value in values.items():
            cols[name].append(value)
    data = np.concatenate(flat).astype(np.float32, copy=False) if flat else np.zeros(0, np.float32)
    column = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(data, pa.float32()))
    schema = DECODED_SCHEMA if vectors is None else ENCODED_SCHEMA
    arrays = [pa.array(cols[name], type_) for name, type_ in PIECE_FIELDS]
    return pa.Table.from_arrays([*arrays, column], schema=schema)


def read_pieces(table: pa.Table, lookup: SourceLookup) -> tuple[list[DecodedFile], list[np.ndarray]]:
    """Rows back to pieces (``lookup`` gives each its :class:`SourceFile`) and, per piece, its
    model inputs (decoded table) or its ``(items, dim)`` embeddings (encoded table)."""
    name = "data" if "data" in table.column_names else "embedding"
    column = table.column(name).combine_chunks()
    values = column.values.to_numpy(zero_copy_only=False)
    offsets = column.offsets.to_numpy()
    meta_names = [n for n, _ in _META]
    rows = table.drop_columns([name]).to_pylist()
    pieces, arrays = [], []
    for i, row in enumerate(rows):
        meta = {k: row[k] for k in meta_names if row[k] is not None}
        piece = DecodedFile(lookup(row["modality"], row["pos"]), row["sha256"] or "", error=row["error"],
                            spans=list(zip(row["span_start"], row["span_end"], strict=True)), text=row["text"],
                            meta=meta, same_content=row["same_content"], complete=row["complete"],
                            piece=row["piece"])  # fmt: skip
        flat = values[offsets[i] : offsets[i + 1]]
        arrays.append(flat.reshape(row["items"], *row["shape"]))
        pieces.append(piece)
    return pieces, arrays


def with_inputs(piece: DecodedFile, inputs: np.ndarray) -> DecodedFile:
    """Give a piece read from a decoded table its model inputs back (windows or pixels)."""
    if piece.source.modality == "audio":
        piece.windows = list(torch.from_numpy(inputs.copy()))  # Arrow buffers are read-only
    elif piece.source.modality == "image" and len(inputs):
        piece.pixels = torch.from_numpy(inputs[0].copy())
    return piece
