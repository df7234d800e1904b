"""The plan step as a columnar, out-of-core diff: discovered files vs stored file states.

Every discovered file is new, changed, unchanged or (stored but no longer found) gone. At 10^8
files neither side fits in Python objects, so both are Arrow record batches end to end:

1. the listing (``path, size, mtime, pos``; ``pos`` = the file's position in the caller's list)
   and the stored states (``path, size, mtime, content_sha256`` scanned from the LanceDB table)
   are hash-partitioned by ``path`` into Arrow IPC files on disk, streamed batch by batch;
2. each partition pair is joined with ``pyarrow.Table.join`` (full outer, on ``path``) and
   classified with ``pyarrow.compute``;
3. the four results are Arrow IPC files read back in batches (:meth:`PlanResult.batches`).

Partitions hold about ``rows_per_partition`` rows (default 5 x 10^5), so peak memory is set by that
constant, not by the archive: a Grace hash join. Nothing here needs the model.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from .paths import FILE_URI, fs_path, stored_path

#: Rows per partition joined in memory: sets the peak memory (see benchmarks/plan_scale.py).
ROWS_PER_PARTITION = 500_000
#: Rows per batch written to the listing.
LISTING_BATCH = 65_536
#: Two mtimes this close are the same (float seconds stored by earlier runs).
MTIME_TOLERANCE = 1e-6
KINDS = ("new", "changed", "unchanged", "gone")

LISTING_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                            ("pos", pa.int64())])  # fmt: skip
STATE_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                          ("content_sha256", pa.string())])  # fmt: skip
RESULT_SCHEMA = pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                           ("pos", pa.int64()), ("known_sha256", pa.string())])  # fmt: skip


def listing_batches(files: Iterable, batch_rows: int = LISTING_BATCH) -> Iterator[pa.RecordBatch]:
    """Discovered files (anything with ``path``, ``size``, ``mtime``) as listing batches, in order."""
    paths: list[str] = []
    sizes: list[int] = []
    mtimes: list[float] = []
    pos = 0
    for f in files:
        paths.append(stored_path(f.path))
        sizes.append(int(f.size))
        mtimes.append(float(f.mtime))
        if len(paths) >= batch_rows:
            yield _listing_batch(paths, sizes, mtimes, pos)
            pos += len(paths)
            paths, sizes, mtimes = [], [], []
    if paths:
        yield _listing_batch(paths, sizes, mtimes, pos)


def _listing_batch(paths: list[str], sizes: list[int], mtimes: list[float], first: int) -> pa.RecordBatch:
    n = len(paths)
    return pa.record_batch([pa.array(paths, pa.string()), pa.array(sizes, pa.int64()), pa.array(mtimes, pa.float64()),
                            pa.array(np.arange(first, first + n, dtype=np.int64))], schema=LISTING_SCHEMA)  # fmt: skip


def stored_batches(store, modality: str, batch_rows: int = LISTING_BATCH) -> Iterator[pa.RecordBatch]:  # noqa: ANN001
    """The store's ``(path, size, mtime, content_sha256)`` columns, streamed from one pinned version
    (audio has a row per window; the diff keeps one per path)."""
    snap = store.snapshot(modality)
    if snap is None:
        return
    yield from scan_states(snap.to_lance(), batch_rows)


def scan_states(dataset, batch_rows: int = LISTING_BATCH) -> Iterator[pa.RecordBatch]:  # noqa: ANN001
    """The state columns of a Lance dataset, one fragment read ahead at a time (Lance's default
    reads several fragments ahead, which makes memory grow with the table's size)."""
    scanner = dataset.scanner(columns=list(STATE_SCHEMA.names), batch_size=batch_rows, fragment_readahead=1,
                              batch_readahead=2)  # fmt: skip
    for batch in scanner.to_batches():
        yield batch.select(list(STATE_SCHEMA.names))


def path_buckets(paths: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """A stable hash of each path modulo ``partitions`` (vectorised over the string buffer)."""
    if isinstance(paths, pa.ChunkedArray):
        paths = paths.combine_chunks()
    n = len(paths)
    if partitions <= 1 or n == 0:
        return np.zeros(n, dtype=np.int64)
    if paths.offset or paths.type != pa.string():
        paths = pa.concat_arrays([paths.cast(pa.string())])  # zero offset, plain 32-bit offsets
    _, offsets_buf, data_buf = paths.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1).astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8, count=int(offsets[-1])) if data_buf else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    rel = np.arange(len(data), dtype=np.uint64) - np.repeat(offsets[:-1], lengths).astype(np.uint64)
    # sum of (byte + 1) x a pseudo-random 64-bit weight per position (splitmix64 of the position),
    # then mixed: cheap, vectorised, deterministic across runs and machines
    weights = _splitmix64(rel)
    terms = (data.astype(np.uint64) + np.uint64(1)) * weights
    sums = np.zeros(n, dtype=np.uint64)
    nonempty = lengths > 0
    if terms.size:
        sums[nonempty] = np.add.reduceat(terms, offsets[:-1][nonempty])
    return (_splitmix64(sums) % np.uint64(partitions)).astype(np.int64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _Partitioner:
    """Splits incoming batches by path hash into ``partitions`` Arrow IPC files."""

    def __init__(self, folder: Path, name: str, schema: pa.Schema, partitions: int):
        self.paths = [folder / f"{name}-{i:05d}.arrow" for i in range(partitions)]
        self.schema = schema
        self.partitions = partitions
        self._writers: dict[int, ipc.RecordBatchFileWriter] = {}
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        buckets = path_buckets(batch.column("path"), self.partitions)
        order = np.argsort(buckets, kind="stable")
        counts = np.bincount(buckets, minlength=self.partitions)
        ordered = batch.take(pa.array(order))
        start = 0
        for i, count in enumerate(counts):
            if count:
                self._writer(i).write_batch(ordered.slice(start, int(count)))
                start += int(count)

    def _writer(self, i: int) -> ipc.RecordBatchFileWriter:
        w = self._writers.get(i)
        if w is None:
            w = self._writers[i] = ipc.new_file(str(self.paths[i]), self.schema)
        return w

    def close(self) -> None:
        for w in self._writers.values():
            w.close()

    def read(self, i: int) -> pa.Table:
        if i not in self._writers:
            return self.schema.empty_table()
        with pa.OSFile(str(self.paths[i])) as source:
            return ipc.open_file(source).read_all()


@dataclass
class PlanResult:
    """Where the four kinds of files were written, and how many of each."""

    folder: Path
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    partitions: int = 1

    def batches(self, kind: str) -> Iterator[pa.RecordBatch]:
        """``path, size, mtime, pos, known_sha256`` of ``kind`` (``pos`` is null for ``gone``)."""
        path = self.folder / f"{kind}.arrow"
        if not path.exists():
            return
        with pa.OSFile(str(path)) as source:
            reader = ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def column(self, kind: str, name: str) -> pa.ChunkedArray:
        """One column of ``kind`` (e.g. the ``pos`` of every changed file) as Arrow."""
        chunks = [b.column(name) for b in self.batches(kind)]
        return pa.chunked_array(chunks, RESULT_SCHEMA.field(name).type)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _classify(listing: pa.Table, stored: pa.Table) -> dict[str, pa.Table]:
    if stored.num_rows:
        # one state per path (an audio file has a row per window, all with the same state)
        stored = (
            stored.group_by("path", use_threads=False)
            .aggregate([("size", "max"), ("mtime", "max"), ("content_sha256", "max")])
            .rename_columns(["path", "s_size", "s_mtime", "known_sha256"])
        )
    else:
        stored = STATE_SCHEMA.empty_table().rename_columns(["path", "s_size", "s_mtime", "known_sha256"])
    stored = stored.append_column("stored", pa.array(np.ones(stored.num_rows, dtype=bool)))
    joined = listing.join(stored, "path", join_type="full outer", coalesce_keys=True)
    listed = pc.is_valid(joined.column("pos"))
    known = pc.is_valid(joined.column("stored"))
    same = pc.and_kleene(
        pc.equal(joined.column("size"), joined.column("s_size")),
        pc.less_equal(pc.abs(pc.subtract(joined.column("mtime"), joined.column("s_mtime"))), MTIME_TOLERANCE),
    ).fill_null(False)
    masks = {
        "new": pc.and_(listed, pc.invert(known)),
        "changed": pc.and_(pc.and_(listed, known), pc.invert(same)),
        "unchanged": pc.and_(pc.and_(listed, known), same),
        "gone": pc.invert(listed),
    }
    out = {}
    for kind, mask in masks.items():
        part = joined.filter(mask)
        if kind == "gone":
            part = part.set_column(part.schema.get_field_index("size"), "size", part.column("s_size"))
            part = part.set_column(part.schema.get_field_index("mtime"), "mtime", part.column("s_mtime"))
        if kind == "new":
            part = part.set_column(part.schema.get_field_index("known_sha256"), "known_sha256",
                                   pa.nulls(part.num_rows, pa.string()))  # fmt: skip
        out[kind] = part.select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)
    return out


def diff_listing(
    listing: Iterable[pa.RecordBatch],
    stored: Iterable[pa.RecordBatch],
    workdir: str | Path | None = None,
    *,
    rows_per_partition: int = ROWS_PER_PARTITION,
    stored_rows: int = 0,
) -> PlanResult:
    """Classify every listed and every stored path (see the module docstring).

    The listing is spilled to disk first (its length decides the number of partitions), then
    both sides are partitioned and joined partition by partition; ``stored_rows`` (the table's
    row count, cheap to get) sizes the partitions when the table is the larger side. Results stay in ``workdir``
    (a fresh temporary folder when ``None``) until :meth:`PlanResult.cleanup`. Results are in
    partition order, and within a partition in no particular order: sort by ``pos`` to get the
    listing's order back.
    """
    folder = Path(tempfile.mkdtemp(prefix="acsearch-plan-", dir=workdir))
    # 1. the listing, as it comes, to one file (the caller may be a generator over a bucket)
    spilled = folder / "listing.arrow"
    rows = 0
    with ipc.new_file(str(spilled), LISTING_SCHEMA) as writer:
        for batch in listing:
            writer.write_batch(batch.select(LISTING_SCHEMA.names).cast(LISTING_SCHEMA))
            rows += batch.num_rows
    # 2. partition both sides
    partitions = max(1, math.ceil(max(rows, stored_rows) / rows_per_partition))
    left = _Partitioner(folder, "listing", LISTING_SCHEMA, partitions)
    right = _Partitioner(folder, "stored", STATE_SCHEMA, partitions)
    try:
        with pa.OSFile(str(spilled)) as source:
            reader = ipc.open_file(source)
            for i in range(reader.num_record_batches):
                left.write(reader.get_batch(i))
        for batch in stored:
            right.write(batch.select(STATE_SCHEMA.names).cast(STATE_SCHEMA))
    finally:
        left.close()
        right.close()
    spilled.unlink()
    # 3. join each partition pair, append to the four result files
    result = PlanResult(folder, partitions=partitions)
    writers = {k: ipc.new_file(str(folder / f"{k}.arrow"), RESULT_SCHEMA) for k in KINDS}
    try:
        for i in range(partitions):
            parts = _classify(left.read(i), right.read(i))
            for kind, table in parts.items():
                if table.num_rows:
                    writers[kind].write_table(table)
                    result.counts[kind] += table.num_rows
            left.paths[i].unlink(missing_ok=True)
            right.paths[i].unlink(missing_ok=True)
    finally:
        for w in writers.values():
            w.close()
    return result


def _under(path: str, roots: list) -> bool:
    return any(path == str(r) or path.startswith(str(r).rstrip("/") + "/") for r in roots)


def plan_modality(
    store,
    modality: str,
    files: list,
    roots: list,
    prune: bool,  # noqa: ANN001
    workdir: str | Path | None = None,
) -> tuple[list, int, list[str]]:
    """What :meth:`IndexRunner.plan` needs for one modality, from the columnar diff:
    ``(todo, unchanged, gone)`` -- the new and changed ``files`` in their listed order with
    ``known_sha256`` set from the store, the number unchanged, and (with ``prune``) the stored
    paths under ``roots`` that were not found."""
    result = diff_listing(
        listing_batches(files), stored_batches(store, modality), workdir, stored_rows=store.count(modality)
    )
    try:
        todo_pos = []
        for kind in ("new", "changed"):
            for batch in result.batches(kind):
                pos = batch.column("pos").to_numpy()
                shas = batch.column("known_sha256").to_pylist()
                for p, sha in zip(pos.tolist(), shas, strict=True):
                    files[p].known_sha256 = sha
                todo_pos.append(pos)
        order = np.sort(np.concatenate(todo_pos)) if todo_pos else np.zeros(0, np.int64)
        todo = [files[p] for p in order.tolist()]
        gone: list[str] = []
        if prune:
            prefixes = [str(r).rstrip("/") + "/" for r in roots]
            for batch in result.batches("gone"):
                col = batch.column("path")
                keep = pc.is_in(col, value_set=pa.array([str(r) for r in roots], pa.string()))
                for prefix in prefixes:
                    keep = pc.or_(keep, pc.starts_with(col, prefix))
                gone.extend(batch.filter(keep).column("path").to_pylist())
                # names stored as file:// URIs (not UTF-8) are compared as the paths they name
                escaped = batch.filter(pc.starts_with(col, FILE_URI)).column("path").to_pylist()
                gone.extend(p for p in escaped if _under(str(fs_path(p)), roots))
        return todo, result.counts["unchanged"], gone
    finally:
        result.cleanup()
