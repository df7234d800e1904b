"""``acsearch check``: verify a database, and repair what can be repaired without re-encoding.

What is checked, per table of the table set:

- duplicate ids: the same row id more than once (two writers that raced before ids became the
  primary key). Repair: keep the newest copy of each id, delete the others by row address, in
  one commit.
- (path, window) duplicates: two rows for the same window of the same file under different ids.
  Repair: keep the row whose id is the canonical :func:`~.schema.row_id`, else the newest.
- rows without a file state (no size, mtime or content hash): the indexer cannot tell whether
  such a file changed. Repair: rows of files that no longer exist are deleted; the others are
  reported (the next ``acsearch index`` of their folder re-encodes them).
- a missing or stale FAISS index. Repair: build or update it (vectors come from the table).
- orphaned temporary files: ``*.tmp`` left in the database folder or its ``_faiss`` folder by a
  writer that died (older than :data:`TEMP_MIN_AGE_S`, so a running writer's files are safe).
  Repair: delete them.

The scan reads only small columns (ids, paths, file state, row addresses), never embeddings.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .schema import row_id

#: A temporary file untouched for this long belongs to no running writer.
TEMP_MIN_AGE_S = 300.0
_STATE = ("size", "mtime", "content_sha256")
_IN_CHUNK = 1000


@dataclass
class Problem:
    kind: str  # duplicate-ids, path-window-duplicates, no-file-state, vector-index, temp-files
    where: str  # table name or folder
    count: int
    detail: str
    repaired: str | None = None  # what --repair did, None if nothing (yet)


@dataclass
class CheckReport:
    uri: str
    table_set: str
    problems: list[Problem] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)  # table -> rows

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unrepaired(self) -> list[Problem]:
        return [p for p in self.problems if p.repaired is None]

    def as_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "table_set": self.table_set, "tables": self.tables,
                "problems": [p.__dict__ for p in self.problems]}


def _scan(snap: Any, modality: str) -> pa.Table:
    cols = ["id", "path", *_STATE, "indexed_at"] + (["window_index"] if modality == "audio" else [])
    return snap.read(cols, with_row_id=True)


def _extra_copies(table: pa.Table, keys: list[str], prefer: Any = None) -> list[int]:
    """Row addresses of every row but one per group of ``keys`` (the kept one: ``prefer(rows)``
    picks it, default the newest ``indexed_at``)."""
    grouped = table.group_by(keys).aggregate([("_rowid", "count")])
    many = grouped.filter(pc.greater(grouped.column("_rowid_count"), 1))
    if many.num_rows == 0:
        return []
    mask = None
    for key in keys:
        part = pc.is_in(table.column(key), value_set=many.column(key))
        mask = part if mask is None else pc.and_(mask, part)
    rows = table.filter(mask).to_pylist()
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    extra: list[int] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        keep = prefer(members) if prefer else max(members, key=lambda r: (r["indexed_at"], r["_rowid"]))
        extra += [r["_rowid"] for r in members if r is not keep]
    return extra


def _delete_rowids(tbl: Any, rowids: list[int]) -> int:
    deleted = 0
    for i in range(0, len(rowids), _IN_CHUNK):
        res = tbl.delete("_rowid IN (" + ",".join(str(int(x)) for x in rowids[i : i + _IN_CHUNK]) + ")")
        deleted += int(getattr(res, "num_deleted_rows", 0) or 0)
    return deleted


def _local_file(stored: str) -> Path | None:
    from ..indexer.paths import fs_path

    if "://" in stored and not stored.startswith("file://"):
        return None
    return fs_path(stored)


def _check_table(store: Any, modality: str, report: CheckReport, repair: bool) -> None:
    name = store.table_name(modality)
    snap = store.snapshot(modality)
    if snap is None:
        return
    table = _scan(snap, modality)
    report.tables[name] = table.num_rows
    writer = store._latest(modality) if repair else None  # noqa: SLF001 - the store's own write handle

    extra = _extra_copies(table, ["id"])
    if extra:
        p = Problem("duplicate-ids", name, len(extra), f"{len(extra)} extra copies of row ids")
        if writer is not None:
            p.repaired = f"deleted {_delete_rowids(writer, extra)} extra copies, kept the newest of each id"
        report.problems.append(p)
        table = table.filter(pc.invert(pc.is_in(table.column("_rowid"), value_set=pa.array(extra, pa.uint64()))))

    if modality == "audio":
        def canonical(members: list[dict]) -> dict:
            for r in members:
                if r["id"] == row_id(modality, r["path"], r["window_index"] or 0):
                    return r
            return max(members, key=lambda r: (r["indexed_at"], r["_rowid"]))

        extra = _extra_copies(table, ["path", "window_index"], canonical)
    else:
        extra = _extra_copies(table, ["path"], lambda m: next((r for r in m if r["id"] == row_id(
            modality, r["path"])), max(m, key=lambda r: (r["indexed_at"], r["_rowid"]))))
    if extra:
        what = "(path, window)" if modality == "audio" else "path"
        p = Problem("path-window-duplicates", name, len(extra), f"{len(extra)} rows repeat a {what} under another id")
        if writer is not None:
            p.repaired = f"deleted {_delete_rowids(writer, extra)} rows, kept the canonical id of each"
        report.problems.append(p)

    no_state = table.filter(pc.or_(pc.or_(pc.is_null(table.column("size")), pc.is_null(table.column("mtime"))),
                                   pc.is_null(table.column("content_sha256"))))
    if no_state.num_rows:
        paths = sorted(set(no_state.column("path").to_pylist()))
        gone = [p for p in paths if (f := _local_file(p)) is not None and not os.path.lexists(f)]
        p = Problem("no-file-state", name, no_state.num_rows,
                    f"{no_state.num_rows} rows of {len(paths)} files have no size/mtime/hash "
                    f"({len(gone)} of those files no longer exist)")
        if writer is not None:
            deleted = store.delete_paths(modality, gone) if gone else 0
            left = len(paths) - len(gone)
            p.repaired = (f"deleted {deleted} rows of {len(gone)} missing files"
                          + (f"; {left} files need `acsearch index` on their folder" if left else ""))
        report.problems.append(p)


def _check_vector_index(store: Any, modality: str, report: CheckReport, repair: bool) -> None:
    from ..indexer.heal import refresh_vector_index
    from .vector_index import VectorIndex, index_manifest

    if not store.count(modality):
        return
    name = store.table_name(modality)
    manifest = index_manifest(store, modality)
    if manifest is None:
        problem = Problem("vector-index", name, 1, "no FAISS index (searches fall back to a full scan)")
    else:
        try:
            stale = VectorIndex.load(store, modality).is_stale(store)
            detail = "the FAISS index is older than the table"
        except Exception as exc:  # noqa: BLE001 - unreadable / other model: a problem to report
            stale, detail = True, f"the FAISS index cannot be used ({str(exc).splitlines()[0]})"
        if not stale:
            return
        problem = Problem("vector-index", name, 1, detail)
    if repair:
        if not refresh_vector_index(store, modality):  # its manifest looked current: rebuild anyway
            VectorIndex.build(store, modality)
        problem.repaired = "rebuilt the FAISS index from the stored vectors"
    report.problems.append(problem)


def orphaned_temp_files(root: Path, now: float | None = None) -> list[Path]:
    """Temporary files of dead writers in the database folder and its ``_faiss`` folder."""
    now = time.time() if now is None else now
    found: list[Path] = []
    for folder in (root, root / "_faiss"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            temp = name.endswith((".tmp", ".tmp.npy")) or name.startswith(".acsearch-probe-")
            try:
                if temp and entry.is_file() and now - entry.stat().st_mtime >= TEMP_MIN_AGE_S:
                    found.append(entry)
            except OSError:
                continue
    return sorted(found)


def check_database(store: Any, *, repair: bool = False) -> CheckReport:
    """Check (and with ``repair=True`` repair) the table set of ``store``; see the module doc.

    Repairs need a writable store; the caller holds the writer lock around them.
    """
    report = CheckReport(store.uri, store.table_set)
    for modality in store.tables():
        _check_table(store, modality, report, repair)
    for modality in store.tables():
        _check_vector_index(store, modality, report, repair)
    root = store.local_path
    if root is not None:
        temps = orphaned_temp_files(root)
        if temps:
            p = Problem("temp-files", str(root), len(temps),
                        f"{len(temps)} orphaned temporary files ({', '.join(t.name for t in temps[:3])}"
                        f"{' ...' if len(temps) > 3 else ''})")
            if repair:
                removed = 0
                for t in temps:
                    try:
                        t.unlink()
                        removed += 1
                    except FileNotFoundError:
                        continue
                p.repaired = f"deleted {removed} temporary files"
            report.problems.append(p)
    return report
