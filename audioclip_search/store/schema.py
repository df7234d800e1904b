"""Table layout of the store: Arrow schemas, deterministic row ids, table-set naming, row conversion.

One LanceDB table per modality (``audio``, ``image``, ``text``) per *table set*. Every row is one
embedded item: a whole picture, a text document, or one analysis window of a sound file.

Common columns (all modalities)

==================  ==================================  ==========================================
column              type                                meaning
==================  ==================================  ==========================================
``id``              string, not null                    :func:`row_id` of ``modality|path|window``
``path``            string, not null                    absolute path or URI of the source file
``content_sha256``  string                              hash of the file's bytes
``size``            int64                               file size in bytes
``mtime``           float64                             modification time, seconds since epoch
``caption``         string, nullable                    free text shown with results
``caption_source``  string, nullable                    ``sidecar``, ``manifest`` or null
``labels``          list<string>                        tags (may be empty)
``embedding``       fixed_size_list<float32, dim>       L2-normalised embedding (dim 1024 default)
``model``           string                              model name that produced ``embedding``
``model_sha256``    string                              checksum of that model's weights
``indexed_at``      timestamp[us, tz=UTC], not null     commit time, always set by the store
==================  ==================================  ==========================================

Audio adds ``duration`` (float64 s), ``sample_rate`` (int32), ``channels`` (int32),
``window_index`` (int32), ``start`` / ``end`` (float64 s of the window). Image adds ``width`` and
``height`` (int32). Text adds ``text`` (string: the document's text).

Table sets: the set ``"default"`` uses the plain names ``audio``, ``image``, ``text`` and ``meta``;
any other set ``S`` uses ``S__audio``, ``S__image``, ``S__text`` and ``S__meta``. Set names are
letters, digits, ``-`` and ``_`` (no ``__``), at most 64 characters.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1
DEFAULT_DIM = 1024
DEFAULT_TABLE_SET = "default"
MODALITIES: tuple[str, ...] = ("audio", "image", "text")
Modality = Literal["audio", "image", "text"]

_SET_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
TIMESTAMP = pa.timestamp("us", tz="UTC")
#: Field metadata marking ``id`` as the table's (unenforced) primary key in Lance.
PRIMARY_KEY_META = "lance-schema:unenforced-primary-key"

# Columns the caller must give (everything else has a default).
REQUIRED_COLUMNS = ("path", "embedding")
# Columns read by file_states(): cheap to scan, never the embedding.
STATE_COLUMNS = ("path", "size", "mtime", "content_sha256")


@dataclass(frozen=True, slots=True)
class FileState:
    """What the store knows about one indexed file: enough to decide whether to re-embed it."""

    size: int | None
    mtime: float | None
    content_sha256: str | None


def check_modality(modality: str) -> str:
    """Return ``modality`` if it is one of :data:`MODALITIES`, else raise ``ValueError``."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}: use one of {', '.join(MODALITIES)}")
    return modality


def validate_table_set(name: str) -> str:
    """Return ``name`` if it is a valid table-set name, else raise ``ValueError``."""
    if not isinstance(name, str) or len(name) > 64 or not _SET_RE.match(name):
        raise ValueError(
            f"invalid table set name {name!r}: use letters, digits, '-' and single '_' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


def table_name(modality: str, table_set: str = DEFAULT_TABLE_SET) -> str:
    """LanceDB table name of ``modality`` in ``table_set`` (plain name for the default set)."""
    check_modality(modality)
    validate_table_set(table_set)
    return modality if table_set == DEFAULT_TABLE_SET else f"{table_set}__{modality}"


def meta_table_name(table_set: str = DEFAULT_TABLE_SET) -> str:
    """Name of the one-row table recording which model filled ``table_set``."""
    validate_table_set(table_set)
    return "meta" if table_set == DEFAULT_TABLE_SET else f"{table_set}__meta"


def split_table_name(name: str) -> tuple[str, str] | None:
    """Inverse of :func:`table_name` / :func:`meta_table_name`: ``(table_set, kind)`` or ``None``."""
    kinds = (*MODALITIES, "meta")
    if name in kinds:
        return DEFAULT_TABLE_SET, name
    head, sep, tail = name.rpartition("__")
    if sep and tail in kinds and _SET_RE.match(head):
        return head, tail
    return None


def row_id(modality: str, path: str, window_index: int = 0) -> str:
    """Deterministic row id: sha1 hex of ``"modality|path|window_index"``.

    Re-indexing the same window of the same file always gives the same id, so an upsert updates the
    row in place instead of adding a duplicate.
    """
    key = f"{modality}|{path}|{int(window_index)}"
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), int(dim))


def modality_schema(modality: str, dim: int = DEFAULT_DIM) -> pa.Schema:
    """Arrow schema of the ``modality`` table for embeddings of dimension ``dim``."""
    check_modality(modality)
    if int(dim) <= 0:
        raise ValueError(f"embedding dimension must be positive, got {dim}")
    fields = [
        # the primary key lets LanceDB's commit check catch two writers inserting the same id
        pa.field("id", pa.string(), nullable=False, metadata={PRIMARY_KEY_META: "true"}),
        pa.field("path", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("mtime", pa.float64()),
        pa.field("caption", pa.string()),
        pa.field("caption_source", pa.string()),
        pa.field("labels", pa.list_(pa.string())),
        pa.field("embedding", embedding_type(dim), nullable=False),
        pa.field("model", pa.string()),
        pa.field("model_sha256", pa.string()),
        pa.field("indexed_at", TIMESTAMP, nullable=False),
    ]
    if modality == "audio":
        fields += [
            pa.field("duration", pa.float64()),
            pa.field("sample_rate", pa.int32()),
            pa.field("channels", pa.int32()),
            pa.field("window_index", pa.int32()),
            pa.field("start", pa.float64()),
            pa.field("end", pa.float64()),
        ]
    elif modality == "image":
        fields += [pa.field("width", pa.int32()), pa.field("height", pa.int32())]
    else:
        fields += [pa.field("text", pa.string())]
    return pa.schema(fields, metadata={"acsearch.schema_version": str(SCHEMA_VERSION)})


def meta_schema() -> pa.Schema:
    """Schema of the per-set ``meta`` table (one row)."""
    return pa.schema(
        [
            pa.field("table_set", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("model_sha256", pa.string(), nullable=False),
            pa.field("dim", pa.int32(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
            pa.field("created_at", TIMESTAMP, nullable=False),
            pa.field("arch", pa.string()),
        ]
    )


def embedding_dim(schema: pa.Schema) -> int:
    """Dimension of the ``embedding`` column of a modality table schema."""
    t = schema.field("embedding").type
    return int(t.list_size)


def sql_str(value: str) -> str:
    """Quote ``value`` as an SQL string literal for LanceDB filters (``'`` doubled, rest verbatim)."""
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("NUL character in a filter value")
    return "'" + value.replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b', ...)`` with every value quoted by :func:`sql_str`."""
    vals = list(values)
    if not vals:
        return "FALSE"
    return f"{column} IN ({', '.join(sql_str(v) for v in vals)})"


def sql_timestamp(ts: _dt.datetime | int) -> str:
    """SQL literal for a UTC timestamp (a datetime or integer microseconds since the epoch)."""
    if isinstance(ts, int | np.integer):
        ts = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC) + _dt.timedelta(microseconds=int(ts))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=_dt.UTC)
    ts = ts.astimezone(_dt.UTC)
    return f"TIMESTAMP '{ts.strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def normalise_embeddings(matrix: np.ndarray, dim: int) -> np.ndarray:
    """Check shape and finiteness, and return float32 rows of unit L2 norm (a new array)."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] != dim:
        raise ValueError(f"embeddings must have shape (n, {dim}), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if (norms <= 1e-12).any():
        raise ValueError("embeddings contain an all-zero vector, which cannot be normalised")
    return (m / norms).astype(np.float32, copy=False)


def fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """Arrow ``fixed_size_list<float32, dim>`` view of a C-contiguous float32 matrix."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), int(m.shape[1]))


def arrow_embeddings(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """Zero-copy-when-possible float32 matrix from a ``fixed_size_list<float32, dim>`` column."""
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            column = column.chunk(0)
        elif column.num_chunks == 0:
            return np.empty((0, dim), np.float32)
        else:
            return np.concatenate([arrow_embeddings(c, dim) for c in column.chunks])
    if len(column) == 0:
        return np.empty((0, dim), np.float32)
    if column.null_count:
        raise ValueError("null embedding in the table")
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten() if column.offset else column.values
        flat = values.to_numpy(zero_copy_only=False)
        return flat.astype(np.float32, copy=False).reshape(-1, dim)[: len(column)]
    return np.asarray(column.to_pylist(), dtype=np.float32).reshape(-1, dim)


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def to_arrow_rows(
    modality: str,
    rows: pa.Table | Sequence[Mapping[str, Any]],
    dim: int,
    *,
    model: str | None = None,
    model_sha256: str | None = None,
    indexed_at: _dt.datetime | None = None,
) -> pa.Table:
    """Convert caller rows to a table with exactly :func:`modality_schema` (same column order).

    - ``rows`` is a ``pa.Table`` or a list of dicts. ``path`` and ``embedding`` are required;
      missing optional columns become null (``labels`` becomes ``[]``, ``window_index`` 0).
    - ``id`` defaults to :func:`row_id` of ``(modality, path, window_index or 0)``; ids must be unique.
    - ``model`` / ``model_sha256`` default to the given binding; given values must match it.
    - ``embedding`` is checked (shape, finite, non-zero) and L2-normalised.
    - ``indexed_at`` is always overwritten with the commit time (the vector index relies on it to
      tell which rows changed since it was built).
    """
    schema = modality_schema(modality, dim)
    if isinstance(rows, pa.Table):
        cols: dict[str, Any] = {name: rows.column(name) for name in rows.column_names}
        n = rows.num_rows
    else:
        rows = list(rows)
        n = len(rows)
        keys: set[str] = set()
        for r in rows:
            keys.update(r.keys())
        cols = {k: [r.get(k) for r in rows] for k in keys}
    unknown = set(cols) - set(schema.names)
    if unknown:
        raise ValueError(f"unknown column(s) for the {modality} table: {', '.join(sorted(unknown))}")
    for name in REQUIRED_COLUMNS:
        if name not in cols:
            raise ValueError(f"rows for the {modality} table need a {name!r} column")

    paths = _as_str_list(cols["path"], "path")
    for p in paths:
        if p is None or p == "":
            raise ValueError("every row needs a non-empty 'path'")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"path {p!r} is not valid UTF-8; store such names as a file:// URI with %-escapes"
            ) from None

    emb = cols["embedding"]
    if isinstance(emb, pa.ChunkedArray | pa.Array):
        matrix = arrow_embeddings(emb, dim) if pa.types.is_fixed_size_list(emb.type) else np.asarray(
            emb.to_pylist(), dtype=np.float32
        )
    else:
        if any(e is None for e in emb):
            raise ValueError("every row needs an 'embedding'")
        matrix = np.stack([np.asarray(e, dtype=np.float32).reshape(-1) for e in emb]) if n else np.empty(
            (0, dim), np.float32
        )
    matrix = normalise_embeddings(matrix.reshape(n, -1) if n else matrix, dim)

    out: dict[str, Any] = {}
    if modality == "audio":
        win = cols.get("window_index")
        win_list = [0] * n if win is None else [0 if w is None else int(w) for w in _as_list(win)]
        cols["window_index"] = win_list
    else:
        win_list = [0] * n
    ids = cols.get("id")
    if ids is None:
        id_list = [row_id(modality, p, w) for p, w in zip(paths, win_list, strict=True)]
    else:
        id_list = _as_str_list(ids, "id")
        if any(i is None or i == "" for i in id_list):
            raise ValueError("'id' values must be non-empty strings")
    if len(set(id_list)) != n:
        seen: set[str] = set()
        dup = next(i for i in id_list if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate row id {dup!r} in one upsert (same path and window twice?)")

    for name, value in (("model", model), ("model_sha256", model_sha256)):
        given = cols.get(name)
        if given is None:
            cols[name] = [value] * n
            continue
        given_list = _as_str_list(given, name)
        if value is not None and any(g is not None and g != value for g in given_list):
            bad = next(g for g in given_list if g is not None and g != value)
            raise ValueError(f"row {name} {bad!r} differs from the store's model {value!r}")
        cols[name] = [value if g is None else g for g in given_list]

    ts = indexed_at or _utc_now()
    for field in schema:
        name = field.name
        if name == "id":
            out[name] = pa.array(id_list, pa.string())
        elif name == "path":
            out[name] = pa.array(paths, pa.string())
        elif name == "embedding":
            out[name] = fixed_size_list(matrix)
        elif name == "indexed_at":
            out[name] = pa.array([ts] * n, TIMESTAMP)
        elif name == "labels":
            lab = cols.get("labels")
            lab_list = [[] for _ in range(n)] if lab is None else [
                [] if v is None else [str(x) for x in v] for v in _as_list(lab)
            ]
            out[name] = pa.array(lab_list, field.type)
        elif name in cols:
            value = cols[name]
            if isinstance(value, pa.ChunkedArray | pa.Array):
                out[name] = value.cast(field.type)
            else:
                out[name] = pa.array([_clean(v) for v in value], field.type)
        else:
            out[name] = pa.nulls(n, field.type)
    return pa.table(out, schema=schema)


def _clean(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, pa.ChunkedArray | pa.Array):
        return value.to_pylist()
    return list(value)


def _as_str_list(value: Any, name: str) -> list[Any]:
    out = _as_list(value)
    for v in out:
        if v is not None and not isinstance(v, str):
            raise TypeError(f"column {name!r} must hold strings, got {type(v).__name__}")
    return out
