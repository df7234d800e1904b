"""One table at one committed version: every LanceDB read a query makes goes through here.

A query pins a :class:`TableSnapshot` once (``store.snapshot("audio")``) and passes it down: the
ranking (FAISS, exact or LanceDB's own ANN) and the rows shown come from the same version, even
while an indexer commits. A snapshot never moves; the store hands out the cached snapshot of the
latest version while the table does not change, so a warm query costs one call to learn the
latest version and one ``take`` for the rows it shows (none for a small table, see below). A
request that reads a stored vector and then searches (find similar) pins each table once through
:class:`Pins`.

Rows are fetched by row id (Lance's take by row address) when the ranking knows them (exact search
reads ``_rowid`` with the vectors; FAISS indexes store each row's row id at build time). Row ids
change only when compaction rewrites a fragment, so every fetched row is checked against the id
asked for, and the missing ones are looked up by an ``id IN (...)`` filter (one more call).

A table of at most :data:`RESIDENT_ROWS` rows is read whole instead, once per version: the first
:meth:`TableSnapshot.rows` reads the asked columns of every row in one scan and later calls pick
rows from memory (a ``take`` costs about 3 ms of CPU for 20 rows of 8 columns at 10^5 rows, the
scan 40 ms once; measured by ``benchmarks/serve_load.py``). Larger tables are taken row by row,
with the last :data:`ROW_CACHE` rows kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .schema import arrow_embeddings, embedding_dim, sql_in

if TYPE_CHECKING:  # pragma: no cover
    from .database import Store

#: Values per ``IN (...)`` list in one filter (paths, ids).
IN_CHUNK = 1000
#: Rows per Arrow batch when streaming a table.
SCAN_BATCH = 65_536
#: Column LanceDB adds with a row's id (physical address; stable until compaction).
ROWID = "_rowid"
#: Rows (without embeddings) a snapshot keeps once read: a version never changes, so a popular
#: result is read from LanceDB once per table version.
ROW_CACHE = 20_000
#: Tables with at most this many rows are held whole in memory per version (the columns asked
#: for, not the embeddings: about 170 bytes a row for audio, 45 MB at this size) ...
RESIDENT_ROWS = 262_144
#: ... unless those columns take more than this (long captions or texts): then rows are taken.
RESIDENT_BYTES = 96 * 1024 * 1024


def as_queries(queries: np.ndarray) -> np.ndarray:
    """Query vectors as a C-contiguous float32 ``(q, dim)`` array (a 1-d vector becomes one row)."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise ValueError(f"queries must be (q, dim), got shape {q.shape}")
    return np.ascontiguousarray(q)


class _Resident:
    """Columns of every row of one snapshot, found by LanceDB row id (sorted for a binary search)."""

    def __init__(self, table: pa.Table):
        row_ids = table.column(ROWID).to_numpy().astype(np.int64)  # uint64 would make searchsorted cast
        self.order = np.argsort(row_ids, kind="stable")
        self.row_ids = row_ids[self.order]
        self.table = table.drop_columns([ROWID]).combine_chunks()  # a take over chunks would join them each time

    def rows(self, ids: Sequence[str], row_ids: Sequence[int | None]) -> dict[str, dict[str, Any]]:
        """``{id: row}`` for the ``(id, row id)`` pairs whose row id holds that id at this version."""
        pairs = [(i, int(r)) for i, r in zip(ids, row_ids, strict=False)
                 if i is not None and r is not None and int(r) >= 0]
        if not pairs or not len(self.row_ids):
            return {}
        want = np.fromiter((r for _, r in pairs), np.int64, len(pairs))
        pos = np.minimum(np.searchsorted(self.row_ids, want), len(self.row_ids) - 1)
        hit = self.row_ids[pos] == want
        if not hit.any():
            return {}
        rows = self.table.take(pa.array(self.order[pos[hit]])).to_pylist()
        asked = [i for (i, _), h in zip(pairs, hit, strict=True) if h]
        return {r["id"]: r for r, i in zip(rows, asked, strict=True) if r["id"] == i}


class TableSnapshot:
    """Read-only view of one LanceDB table pinned at one version (thread-safe for reads)."""

    def __init__(self, table: Any, modality: str, version: int):
        self._tbl = table
        self.modality = modality
        self.version = int(version)
        self._schema: pa.Schema | None = None
        self._dataset: Any = None
        self._columns: tuple[str, ...] | None = None
        self._count: int | None = None
        self._lock = threading.Lock()
        #: Per-snapshot memo for callers (e.g. a FAISS index's freshness at this version).
        self.memo: dict[Any, Any] = {}
        self._rows: OrderedDict[tuple[str, tuple[str, ...]], dict[str, Any]] = OrderedDict()
        self._resident: dict[tuple[str, ...], _Resident | None] = {}
        self._resident_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TableSnapshot({self.modality!r}, version={self.version})"

    # ---------------------------------------------------------------- metadata (cached)
    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            self._schema = self._tbl.schema
        return self._schema

    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            self._columns = tuple(self.schema.names)
        return list(self._columns)

    @property
    def dim(self) -> int:
        return embedding_dim(self.schema)

    def count(self, where: str | None = None) -> int:
        """Rows (matching ``where``); the unfiltered count is cached."""
        if where:
            return int(self._tbl.count_rows(where))
        if self._count is None:
            self._count = int(self._tbl.count_rows())
        return self._count

    def list_indices(self) -> list[Any]:
        return list(self._tbl.list_indices())

    def to_lance(self) -> Any:
        """The Lance dataset at this version (opened once per snapshot): columnar scans with Lance's
        own scanner options, and takes by row address."""
        if self._dataset is None:
            self._dataset = self._tbl.to_lance()
        return self._dataset

    def _take_addresses(self, addresses: list[int], columns: list[str]) -> pa.Table | None:
        """The rows at these row addresses, asked of the pinned Lance dataset directly: on a 10^6-row
        table that takes 20 rows of the shown columns in ~3.5 ms, where the same take through
        LanceDB's query layer (``take_row_ids``) costs ~7.5 ms, most of a query's time. Lance marks
        ``_take_rows`` as not yet a stable API, so a pylance without it (or with another signature)
        gets LanceDB's take. ``None`` when an address names a fragment that compaction removed:
        the caller then finds the rows by id."""
        take = getattr(self.to_lance(), "_take_rows", None)
        if take is not None:
            try:
                return take(addresses, columns=columns)
            except TypeError:
                pass
            except OSError:  # "belongs to non-existent fragment"; a storage failure shows again below
                return None
        return self._tbl.take_row_ids(addresses).select(columns).to_arrow()

    # ---------------------------------------------------------------- scans
    def scan(
        self,
        columns: Sequence[str],
        where: str | None = None,
        batch_rows: int = SCAN_BATCH,
        *,
        with_row_id: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Stream ``columns`` of the rows matching ``where`` (plus ``_rowid`` if asked) in batches."""
        yield from self._query(columns, where, with_row_id).to_batches(batch_rows)

    def _query(self, columns: Sequence[str], where: str | None, with_row_id: bool) -> Any:
        q = self._tbl.search().select(list(columns))
        if where:
            q = q.where(where)
        if with_row_id:
            q = q.with_row_id(True)
        return q.limit(None)

    def read(self, columns: Sequence[str], where: str | None = None, *, with_row_id: bool = False) -> pa.Table:
        """``columns`` of the rows matching ``where`` as one Arrow table (for small columns only)."""
        return self._query(columns, where, with_row_id).to_arrow()

    def ids(self, where: str | None = None) -> np.ndarray:
        """Ids of the rows matching ``where`` as an object array of str."""
        parts = [b.column("id").to_numpy(zero_copy_only=False) for b in self.scan(["id"], where)]
        return np.concatenate(parts).astype(object) if parts else np.empty(0, dtype=object)

    def id_column(self, where: str | None = None) -> pa.ChunkedArray:
        """Like :meth:`ids` but as an Arrow string column (no Python objects: fine for 10^8 rows)."""
        chunks = [b.column("id") for b in self.scan(["id"], where) if b.num_rows]
        return pa.chunked_array(chunks, pa.string())

    def iter_embeddings(
        self,
        where: str | None = None,
        *,
        batch_rows: int = SCAN_BATCH,
        columns: Sequence[str] = (),
        with_row_id: bool = False,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, pa.RecordBatch]]:
        """Stream ``(ids, matrix, batch)``: object array of str, float32 ``(rows, dim)``, the batch."""
        dim = self.dim
        cols = list(dict.fromkeys(["id", "embedding", *columns]))
        for batch in self.scan(cols, where, batch_rows, with_row_id=with_row_id):
            if batch.num_rows == 0:
                continue
            ids = batch.column("id").to_numpy(zero_copy_only=False).astype(object)
            yield ids, arrow_embeddings(batch.column("embedding"), dim), batch

    def embeddings(self, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, matrix)`` of all rows matching ``where`` (n * dim * 4 bytes in memory)."""
        ids_parts: list[np.ndarray] = []
        mats: list[np.ndarray] = []
        for b_ids, b_mat, _ in self.iter_embeddings(where):
            ids_parts.append(b_ids)
            mats.append(b_mat)
        if not mats:
            return np.empty(0, dtype=object), np.empty((0, self.dim), np.float32)
        return np.concatenate(ids_parts), np.concatenate(mats)

    # ---------------------------------------------------------------- rows
    def take_offsets(self, offsets: Sequence[int], columns: Sequence[str]) -> pa.Table:
        """Rows at scan positions ``offsets`` of this version (one call)."""
        return self._tbl.take_offsets([int(x) for x in offsets]).select(list(columns)).to_arrow()

    def _row_columns(self, columns: Sequence[str] | None, with_embedding: bool) -> list[str]:
        names = list(columns) if columns is not None else [n for n in self.columns if n != "embedding"]
        if "id" not in names:
            names = ["id", *names]
        if with_embedding and "embedding" not in names:
            names.append("embedding")
        return names

    def _to_rows(self, table: pa.Table, names: list[str]) -> list[dict[str, Any]]:
        emb = arrow_embeddings(table.column("embedding"), self.dim) if "embedding" in names else None
        rows = table.select([n for n in names if n != "embedding"]).to_pylist()
        if emb is not None:
            for j, r in enumerate(rows):
                r["embedding"] = emb[j].copy()
        return rows

    def _resident_rows(self, names: list[str]) -> _Resident | None:
        """Every row's ``names`` columns, read in one scan at first use (``None``: table too big)."""
        key = tuple(names)
        if key in self._resident:
            return self._resident[key]
        if self.count() > RESIDENT_ROWS:
            self._resident[key] = None
            return None
        with self._resident_lock:  # concurrent first queries wait for one scan
            if key not in self._resident:
                table = self.read(names, with_row_id=True)
                self._resident[key] = _Resident(table) if table.nbytes <= RESIDENT_BYTES else None
            return self._resident[key]

    def rows(
        self,
        ids: Iterable[str],
        *,
        row_ids: Iterable[int | None] | None = None,
        columns: Sequence[str] | None = None,
        with_embedding: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows for ``ids`` in the order given (unknown ids are skipped).

        ``row_ids`` (same length as ``ids``, ``None``/negative where unknown) lets LanceDB take the
        rows by address in one call (or picks them from memory for a small table, see the module
        doc); rows whose address is unknown or no longer holds that id are found by an
        ``id IN (...)`` filter. ``columns`` defaults to every column except
        ``embedding``; ``with_embedding=True`` adds it as a float32 numpy array.
        """
        ids = list(ids)
        wanted = [i for i in ids if i is not None]
        if not wanted:
            return []
        names = self._row_columns(columns, with_embedding)
        key = tuple(names)
        cacheable = "embedding" not in names
        found: dict[str, dict[str, Any]] = {}
        if row_ids is not None:
            row_ids = list(row_ids)
        resident = self._resident_rows(names) if cacheable and row_ids is not None else None
        if resident is not None:
            found.update(resident.rows(ids, row_ids))  # type: ignore[arg-type]
            cacheable = False  # the whole table is in memory: the row cache would hold copies
        if cacheable:
            with self._lock:
                for i in wanted:
                    row = self._rows.get((i, key))
                    if row is not None:
                        self._rows.move_to_end((i, key))
                        found[i] = dict(row)
        if row_ids is not None:
            addr = sorted({int(r) for i, r in zip(ids, row_ids, strict=False)
                           if i is not None and i not in found and r is not None and int(r) >= 0})
            if addr:
                tab = self._take_addresses(addr, names)
                if tab is not None:
                    want = set(wanted)
                    found.update((r["id"], r) for r in self._to_rows(tab, names) if r["id"] in want)
        missing = list(dict.fromkeys(i for i in wanted if i not in found))
        for c in range(0, len(missing), IN_CHUNK):
            for batch in self.scan(names, sql_in("id", missing[c : c + IN_CHUNK])):
                found.update((r["id"], r) for r in self._to_rows(pa.Table.from_batches([batch]), names))
        if cacheable:
            with self._lock:
                for i, row in found.items():
                    self._rows[(i, key)] = dict(row)
                while len(self._rows) > ROW_CACHE:
                    self._rows.popitem(last=False)
        return [found[i] for i in wanted if i in found]

    # ---------------------------------------------------------------- LanceDB's own ANN
    def vector_search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        where: str | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """LanceDB's vector search (its ANN index if one exists, else exact), dot product.

        Returns ``(scores, ids, row_ids)``, each ``(q, k)``, padded with ``-inf`` / ``None`` / ``-1``.
        """
        q = as_queries(queries)
        scores = np.full((len(q), k), -np.inf, np.float32)
        out_ids = np.full((len(q), k), None, dtype=object)
        out_rows = np.full((len(q), k), -1, np.int64)
        for i, vec in enumerate(q):
            b = self._tbl.search(vec, vector_column_name="embedding").distance_type("dot").limit(k)
            if where:
                b = b.where(where, prefilter=True)
            if nprobes:
                b = b.nprobes(int(nprobes))
            if refine_factor:
                b = b.refine_factor(int(refine_factor))
            if ef:
                b = b.ef(int(ef))
            res = b.select(["id", "_distance"]).with_row_id(True).to_arrow()
            m = res.num_rows
            out_ids[i, :m] = res.column("id").to_pylist()
            out_rows[i, :m] = res.column(ROWID).to_numpy()
            scores[i, :m] = 1.0 - res.column("_distance").to_numpy().astype(np.float32)  # dot: 1 - q.v
        return scores, out_ids, out_rows


class Pins(dict):
    """The snapshots one request works on, ``{modality: TableSnapshot | None}``: each table's latest
    version is read once, at its first use, so a request that reads a stored vector and then
    searches (find similar) pays one version lookup per table, and both see the same version."""

    def __init__(self, store: Store):
        super().__init__()
        self.store = store

    def __missing__(self, modality: str) -> TableSnapshot | None:
        snap = self[modality] = self.store.snapshot(modality)
        return snap
