"""Folding databases indexed separately (shards of one archive) into one: ``acsearch merge``.

Rules
    * Every source must be bound to the same model (sha256 and embedding dimension), and so must
      the target if it already holds data; anything else raises :class:`ModelMismatchError`.
    * Each file (``path``) ends up once: the copy with the newest ``indexed_at`` wins (ties: the
      target's own copy, then the first source listed). Rows are written through
      :meth:`Store.upsert_files`, whose ids are deterministic per (modality, path, window), so a
      file seen in several shards, or a merge run twice, never doubles a row; a winner with fewer
      windows than the target's old copy replaces it wholly.
    * The choice is a columnar computation over ``(path, indexed_at)`` (Arrow sort + run starts),
      and rows are streamed from each source in batches: no per-file Python objects.

Crash safety: each file changes in one commit (see ``upsert_files``), and written rows are stamped
with the commit time, so after a kill the same command picks up exactly the files still missing
(the target's copies are then the newest) and rewrites nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .database import Store
from .errors import ModelMismatchError, StoreError
from .schema import MODALITIES

#: Source rows per Arrow batch while copying.
COPY_BATCH = 2048
TARGET = -1  # the target's own copy, in the "source" column


@dataclass
class MergeReport:
    sources: list[str]
    into: str
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))  # written
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))  # target already newest
    duplicates: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))  # paths in >1 source

    def as_dict(self) -> dict:
        return {
            "sources": self.sources,
            "into": self.into,
            "files": self.files,
            "rows": self.rows,
            "kept": self.kept,
            "duplicates": self.duplicates,
        }


def _batches(store: Store, modality: str, columns: list[str] | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows of one pinned version of ``modality``'s table (all columns when ``columns`` is None)."""
    snap = store.snapshot(modality)
    if snap is None:
        return
    yield from snap.to_lance().to_batches(columns=columns, batch_size=batch_rows)


def check_bindings(sources: Sequence[Store], into: Store) -> dict:
    """The common model binding of ``sources`` (and ``into`` when bound); raises on any difference."""
    bindings = []
    for store in sources:
        info = store.model_info()
        if info is None:
            raise StoreError(f"{store.uri}: no model binding (table set {store.table_set!r}): nothing indexed there")
        bindings.append((store.uri, info))
    target = into.model_info()
    if target is not None:
        bindings.append((into.uri, target))
    uri0, first = bindings[0]
    for uri, info in bindings[1:]:
        if (info["model_sha256"], int(info["dim"])) != (first["model_sha256"], int(first["dim"])):
            raise ModelMismatchError(
                f"{uri} was indexed with {info['model']} (sha256 {info['model_sha256'][:12]}, {info['dim']}-d), "
                f"{uri0} with {first['model']} (sha256 {first['model_sha256'][:12]}, {first['dim']}-d): "
                "only databases of the same model can be merged",
                stored={k: first[k] for k in ("model", "model_sha256", "dim")},
                requested={k: info[k] for k in ("model", "model_sha256", "dim")},
            )
    return first


def file_versions(store: Store, modality: str, source: int) -> pa.Table:
    """One row per path: ``path``, newest ``indexed_at`` (µs), row count, ``source``."""
    parts = [b.select(["path", "indexed_at"]) for b in _batches(store, modality, ["path", "indexed_at"], 65_536)]
    if not parts:
        return pa.table(
            {
                "path": pa.array([], pa.string()),
                "ts": pa.array([], pa.int64()),
                "rows": pa.array([], pa.int64()),
                "source": pa.array([], pa.int32()),
            }
        )
    t = pa.Table.from_batches(parts)
    t = t.set_column(1, "indexed_at", pc.cast(t.column("indexed_at"), pa.timestamp("us")).cast(pa.int64()))
    g = t.group_by("path").aggregate([("indexed_at", "max"), ("indexed_at", "count")])
    return pa.table(
        {
            "path": g.column("path"),
            "ts": g.column("indexed_at_max"),
            "rows": g.column("indexed_at_count").cast(pa.int64()),
            "source": pa.array([source] * g.num_rows, pa.int32()),
        }
    )


def choose(versions: list[pa.Table]) -> pa.Table:
    """Winner per path: newest ts; ties: lowest ``source`` (the target being -1)."""
    allv = pa.concat_tables(versions)
    if allv.num_rows == 0:
        return allv
    allv = allv.sort_by([("path", "ascending"), ("ts", "descending"), ("source", "ascending")])
    path = allv.column("path").combine_chunks()
    starts = pc.not_equal(path.slice(1), path.slice(0, len(path) - 1)).fill_null(True)
    first = pa.concat_arrays([pa.array([True]), starts])
    return allv.filter(first)


def _complete(pending: pa.Table, expected: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split ``pending`` rows into (files whose every row has arrived, the rest)."""
    if pending.num_rows == 0:
        return pending, pending
    have = pending.group_by("path").aggregate([("id", "count")])
    joined = have.join(expected, "path", join_type="inner")
    done = joined.filter(pc.equal(joined.column("id_count"), joined.column("rows"))).column("path")
    done_set = done.combine_chunks() if done.num_chunks else pa.array([], pa.string())
    mask = pc.is_in(pending.column("path"), value_set=done_set)
    return pending.filter(mask), pending.filter(pc.invert(mask))


def _copy(source: Store, into: Store, modality: str, wanted: pa.Table, report: MergeReport, batch_rows: int) -> None:
    """Copy the rows of ``wanted`` paths from ``source``, whole files per upsert."""
    value_set = wanted.column("path").combine_chunks()
    expected = wanted.select(["path", "rows"])
    pending: pa.Table | None = None
    for batch in _batches(source, modality, None, batch_rows):
        rows = pa.Table.from_batches([batch]).filter(pc.is_in(batch.column("path"), value_set=value_set))
        if rows.num_rows == 0:
            continue
        pending = rows if pending is None else pa.concat_tables([pending, rows])
        ready, pending = _complete(pending, expected)
        if ready.num_rows:
            _write(into, modality, ready, report)
    if pending is not None and pending.num_rows:
        # the source changed while it was read (rows of a file missing): write what is whole
        ready, rest = _complete(pending, expected)
        if ready.num_rows:
            _write(into, modality, ready, report)
        if rest.num_rows:
            raise StoreError(f"{source.uri}: {modality} table changed during the merge; run the merge again")


def _write(into: Store, modality: str, rows: pa.Table, report: MergeReport) -> None:
    into.upsert_files(modality, rows.drop_columns(["indexed_at"]))
    report.files[modality] += len(pc.unique(rows.column("path")))
    report.rows[modality] += rows.num_rows


def merge_stores(
    sources: Sequence[Store],
    into: Store,
    *,
    refresh_vector_index: bool = True,
    batch_rows: int = COPY_BATCH,
    progress: Callable[[str, int, int], None] | None = None,
) -> MergeReport:
    """Fold ``sources`` into ``into`` (see the module docstring); returns what was written."""
    if not sources:
        raise ValueError("give at least one database to merge")
    for s in sources:
        if s.uri == into.uri and s.table_set == into.table_set:
            raise StoreError(f"{s.uri} is both a source and the target of the merge")
    binding = check_bindings(sources, into)
    into.bind_model(binding["model"], binding["model_sha256"], int(binding["dim"]))
    report = MergeReport([s.uri for s in sources], into.uri)
    for modality in MODALITIES:
        versions = [file_versions(s, modality, i) for i, s in enumerate(sources)]
        target = file_versions(into, modality, TARGET)
        winners = choose([target, *versions])
        if winners.num_rows == 0:
            continue
        from_target = pc.equal(winners.column("source"), TARGET)
        report.kept[modality] = int(pc.sum(from_target.cast(pa.int64())).as_py() or 0)
        shard_paths = pa.chunked_array([v.column("path").combine_chunks() for v in versions], pa.string())
        report.duplicates[modality] = len(shard_paths) - pc.count_distinct(shard_paths).as_py()
        for i, source in enumerate(sources):
            wanted = winners.filter(pc.equal(winners.column("source"), i))
            if progress is not None:
                progress(modality, i, len(sources))
            if wanted.num_rows:
                _copy(source, into, modality, wanted, report, batch_rows)
        if refresh_vector_index and report.files[modality]:
            from ..indexer.pipeline import refresh_vector_index as refresh

            refresh(into, modality)
    return report
