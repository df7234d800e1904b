"""The record of what was indexed: an embedded LanceDB database, one table per modality per table set.

Opening::

    store = Store.open()                       # $ACSEARCH_DB or ./acsearch.lancedb, created if missing
    store = Store.open("s3://bucket/db", table_set="clap", create=False, read_only=True)
    store.bind_model("audioclip-full", sha256, 1024)   # records, or raises ModelMismatchError

Writing (every file's rows change in ONE LanceDB commit, so a crash leaves each file fully old or
fully new, never duplicated)::

    store.upsert_files("audio", rows)          # replaces all rows of every path in `rows`
    store.upsert_files("audio", rows, delete_paths=[...], single_commit=True)  # whole batch at once
    store.add_rows("audio", rows)              # bulk first load: insert ids not present yet
    store.delete_paths("audio", ["/gone.wav"]) # --prune
    store.optimize()                           # compaction + scalar indexes; call after a big run

Reading: a query pins one :class:`~.snapshot.TableSnapshot` (one table at one version) and does
every read through it, so the ranking and the rows shown come from the same version::

    snap = store.snapshot("audio")             # latest committed version (None: no table)
    snap.count(), snap.ids(where), snap.rows(ids), snap.iter_embeddings(), snap.vector_search(q, 10)
    store.file_states("audio")                 # {path: FileState(size, mtime, content_sha256)}
    ids, matrix = store.embeddings("image", where="size > 1000")   # shortcuts over a snapshot
    store.rows_by_ids("text", ids[:10])
    store.count("audio"), store.version("audio"), store.tables(), store.info()

Consistency: the connection is opened with ``read_consistency_interval=0``, so the cached handle of
each table sees every commit (of any process) without a manual ``checkout_latest``; snapshots are
pinned handles (``checkout(version)``), cached per version, so a query running while an indexer
writes sees one committed version, never a half-written file. ``upsert_files`` uses
``merge_insert`` on ``id`` and every file's rows change in a single commit (see
:meth:`Store.upsert_files`); LanceDB retries commits on conflicts.

Scale notes (10^3 to 10^8 rows): ``file_states``/``ids``/``embeddings`` scan only the columns they
need, in batches. Filters on ``id`` and ``path`` (``rows_by_ids``, upserts, deletes) are fast once
:meth:`Store.optimize` has built BTREE indexes on ``id``, ``path`` and ``indexed_at``; run it after
each indexing run (new rows are still found without it, by a scan of the unindexed part).

Model binding: a one-row ``meta`` table per table set (``<set>__meta`` for other sets) records the
model name, its sha256, the embedding dim, the schema version and the creation time. Writing with
another model raises :class:`ModelMismatchError`; use another ``table_set`` to keep both.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import BTree

from ..crashpoints import crash_point
from .errors import ModelMismatchError, StoreError, StoreNotFoundError
from .schema import (
    DEFAULT_DIM,
    DEFAULT_TABLE_SET,
    MODALITIES,
    SCHEMA_VERSION,
    STATE_COLUMNS,
    FileState,
    check_modality,
    embedding_dim,
    meta_schema,
    meta_table_name,
    modality_schema,
    split_table_name,
    sql_in,
    table_name,
    to_arrow_rows,
    validate_table_set,
)
from .snapshot import IN_CHUNK, SCAN_BATCH, TableSnapshot, as_queries

log = logging.getLogger(__name__)

DEFAULT_URI = "./acsearch.lancedb"
ENV_URI = "ACSEARCH_DB"
#: Pinned snapshots kept per store (latest of each table plus a few explicitly pinned versions).
SNAPSHOT_CACHE = 8
#: Columns that get a BTREE scalar index in :meth:`Store.optimize`.
SCALAR_INDEX_COLUMNS = ("id", "path", "indexed_at")


def resolve_uri(uri: str | os.PathLike[str] | None = None) -> str:
    """The database URI: ``uri``, else ``$ACSEARCH_DB``, else ``./acsearch.lancedb``.

    Local paths are made absolute (``~`` expanded); ``file://`` URIs become plain paths; other
    URIs (``s3://``, ``gs://``, ``az://``, ``db://`` ...) are passed to LanceDB unchanged.
    """
    if uri is None:
        uri = os.environ.get(ENV_URI) or DEFAULT_URI
    text = os.fspath(uri)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        return text
    return str(Path(text).expanduser().resolve())


def is_local_uri(uri: str) -> bool:
    """True for a filesystem path (as returned by :func:`resolve_uri`)."""
    return "://" not in uri


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the ``meta`` table of a table set records."""

    model: str
    model_sha256: str
    dim: int
    schema_version: int
    created_at: _dt.datetime
    table_set: str
    arch: str | None = None  # architecture (config name) of the checkpoint; None for old bindings

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Outcome of one :meth:`Store.upsert_files` commit."""

    version: int | None
    inserted: int
    updated: int
    deleted: int
    paths: int


def _table_names(db: Any) -> list[str]:
    """All table names of a connection (``list_tables``, following its page tokens)."""
    names: list[str] = []
    token: str | None = None
    while True:
        resp = db.list_tables(page_token=token) if token else db.list_tables()
        names.extend(resp.tables)
        token = resp.page_token
        if not token:
            return names


class Store:
    """One table set of a LanceDB database. Create with :meth:`Store.open`.

    Safe to share between threads for reads; serialise writes to one table yourself (LanceDB
    resolves conflicts between processes by retrying, but one handle is not meant for concurrent
    writers).
    """

    def __init__(self, db: Any, uri: str, table_set: str, *, read_only: bool = False):
        self._db = db
        self.uri = uri
        self.table_set = table_set
        self.read_only = read_only
        self._handles: dict[str, Any] = {}
        self._datasets: dict[str, Any] = {}  # Lance datasets of the handles, for version checks
        self._snapshots: OrderedDict[tuple[str, int], TableSnapshot] = OrderedDict()
        self._lock = threading.RLock()
        self._model: ModelInfo | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        uri: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        table_set: str = DEFAULT_TABLE_SET,
        read_only: bool = False,
    ) -> Store:
        """Open (and with ``create=True`` create) the database at ``uri``.

        ``uri``: a path or any URI LanceDB takes; ``None`` means ``$ACSEARCH_DB`` or
        ``./acsearch.lancedb``. ``create=False`` raises :class:`StoreNotFoundError` when a local
        database directory does not exist (so does ``read_only``). ``table_set`` selects the set of
        tables (see module doc).
        ``read_only`` makes every write raise :class:`StoreError` and makes :meth:`bind_model` check
        without recording.
        """
        validate_table_set(table_set)
        resolved = resolve_uri(uri)
        if is_local_uri(resolved):
            path = Path(resolved)
            if not path.exists():
                if not create or read_only:
                    raise StoreNotFoundError(f"no database at {resolved} (index some files first)")
                path.mkdir(parents=True, exist_ok=True)
            elif not path.is_dir():
                raise StoreError(f"{resolved} exists and is not a database directory")
        # interval 0: every read of a cached handle sees the latest commit (no checkout_latest)
        db = lancedb.connect(resolved, read_consistency_interval=_dt.timedelta(0))
        return cls(db, resolved, table_set, read_only=read_only)

    @property
    def local_path(self) -> Path | None:
        """The database directory for a local database, else ``None``."""
        return Path(self.uri) if is_local_uri(self.uri) else None

    def with_table_set(self, table_set: str) -> Store:
        """Another :class:`Store` on the same connection for ``table_set``."""
        validate_table_set(table_set)
        return Store(self._db, self.uri, table_set, read_only=self.read_only)

    def table_name(self, modality: str) -> str:
        """LanceDB name of ``modality``'s table in this table set."""
        return table_name(modality, self.table_set)

    def __repr__(self) -> str:
        return f"Store(uri={self.uri!r}, table_set={self.table_set!r})"

    # ------------------------------------------------------------------ handles
    def _all_tables(self) -> list[str]:
        return _table_names(self._db)

    def _latest(self, modality: str) -> Any | None:
        """Cached handle of the table (it follows the latest commit by itself), or ``None``.

        A missing table of a local database costs a ``stat`` rather than a failing ``open_table``
        (a server asked for every target pays this on each query until the table exists).
        """
        name = self.table_name(modality)
        tbl = self._handles.get(name)
        if tbl is not None:
            return tbl
        local = self.local_path
        if local is not None and not (local / f"{name}.lance").is_dir():
            return None
        try:
            tbl = self._db.open_table(name)
        except (ValueError, FileNotFoundError):  # LanceDB: "Table 'x' was not found"
            return None
        with self._lock:
            return self._handles.setdefault(name, tbl)

    def snapshot(self, modality: str, version: int | None = None) -> TableSnapshot | None:
        """``modality``'s table pinned at ``version`` (latest when ``None``); ``None`` if no table.

        Snapshots are cached per version: while the table does not change, this costs one call
        (reading the latest version, see :meth:`_latest_version`) and returns the same object, whose
        cached count, schema, rows and memo carry over between queries.
        """
        check_modality(modality)
        latest = self._latest(modality)
        if latest is None:
            return None
        name = self.table_name(modality)
        try:
            v = self._latest_version(name, latest) if version is None else int(version)
        except Exception:  # dropped or replaced underneath us: reopen once
            with self._lock:
                self._handles.pop(name, None)
                self._datasets.pop(name, None)
            latest = self._latest(modality)
            if latest is None:
                return None
            v = self._latest_version(name, latest) if version is None else int(version)
        key = (name, v)
        with self._lock:
            snap = self._snapshots.get(key)
            if snap is not None:
                self._snapshots.move_to_end(key)
                return snap
        pinned = self._db.open_table(name)
        pinned.checkout(v)
        snap = TableSnapshot(pinned, modality, v)
        with self._lock:
            snap = self._snapshots.setdefault(key, snap)
            while len(self._snapshots) > SNAPSHOT_CACHE:
                self._snapshots.popitem(last=False)
        return snap

    def _latest_version(self, name: str, latest: Any) -> int:
        """The table's latest committed version, asked of its Lance dataset: the same check of the
        storage as LanceDB's ``version`` property, without the hop through LanceDB's event-loop
        thread (0.01 ms instead of 0.2 ms of CPU, and no GIL hand-offs: under load those cost a
        server milliseconds per query)."""
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets.setdefault(name, latest.to_lance())
        return int(ds.latest_version)

    def _writer(self, modality: str, dim: int) -> Any:
        tbl = self._latest(modality)
        if tbl is None:
            name = self.table_name(modality)
            with self._lock:
                tbl = self._db.create_table(name, schema=modality_schema(modality, dim), exist_ok=True)
                self._handles[name] = tbl
        from .migrate import upgrade_table

        with self._lock:
            upgrade_table(tbl)  # id primary key + new columns on tables of older versions
        have = embedding_dim(tbl.schema)
        if have != dim:
            raise ModelMismatchError(
                f"table {self.table_name(modality)!r} in {self.uri} holds {have}-d embeddings, "
                f"not {dim}-d; use another table set",
                stored={"dim": have},
                requested={"dim": dim},
            )
        return tbl

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.uri} was opened read-only")

    # ------------------------------------------------------------------ model binding
    def model_info(self) -> dict[str, Any] | None:
        """The model binding of this table set as a dict, or ``None`` if nothing was bound yet."""
        info = self._read_model()
        return None if info is None else info.as_dict()

    def _read_model(self) -> ModelInfo | None:
        if self._model is not None:
            return self._model
        name = meta_table_name(self.table_set)
        if name not in self._all_tables():
            return None
        try:
            rows = self._db.open_table(name).to_arrow().to_pylist()
        except ValueError:  # listed but its first version not committed yet: another writer is creating it
            return None
        if not rows:
            return None
        r = rows[0]
        created = r["created_at"]
        if created.tzinfo is None:
            created = created.replace(tzinfo=_dt.UTC)
        self._model = ModelInfo(
            model=r["model"],
            model_sha256=r["model_sha256"],
            dim=int(r["dim"]),
            schema_version=int(r["schema_version"]),
            created_at=created,
            table_set=r["table_set"],
            arch=r.get("arch"),
        )
        return self._model

    def _mismatch(self, stored: ModelInfo | dict, name: str, sha256: str, dim: int) -> ModelMismatchError:
        s = stored.as_dict() if isinstance(stored, ModelInfo) else dict(stored)
        when = f" on {s['created_at']}" if s.get("created_at") else ""
        set_opt = "" if self.table_set == DEFAULT_TABLE_SET else f" --table-set {self.table_set}"
        msg = (
            f"the database {self.uri} (table set {self.table_set!r}) was filled by model "
            f"{s.get('model')!r} (sha256 {str(s.get('model_sha256'))[:12]}, dim {s.get('dim')}){when}, "
            f"but you are using {name!r} (sha256 {sha256[:12]}, dim {dim}). Embeddings of different "
            f"models cannot be searched together. Either use the original model{set_opt}, index into "
            f"a new table set (e.g. --table-set {_suggest_set(name)}), or use another database (--db PATH)."
        )
        return ModelMismatchError(
            msg,
            stored={k: s.get(k) for k in ("model", "model_sha256", "dim")},
            requested={"model": name, "model_sha256": sha256, "dim": dim},
        )

    def bind_model(self, name: str, sha256: str, dim: int = DEFAULT_DIM, arch: str | None = None) -> dict[str, Any]:
        """Record that ``name`` (weights ``sha256``, embedding ``dim``, architecture ``arch``) fills
        this table set.

        The model's identity is its content: if the set is already bound, the sha256 and dim must
        match, else :class:`ModelMismatchError`; the name is only a label (another path to the same
        file, or a byte-identical copy, is accepted). A read-only store only checks. Returns the
        binding as a dict.
        """
        if not name or not sha256:
            raise ValueError("bind_model needs a model name and its sha256")
        dim = int(dim)
        current = self._read_model()
        if current is not None:
            if current.model_sha256 != sha256 or current.dim != dim:
                raise self._mismatch(current, name, sha256, dim)
            return current.as_dict()
        # No meta table: tables written without one must agree too.
        for modality in self.tables():
            tbl = self._latest(modality)
            assert tbl is not None
            have_dim = embedding_dim(tbl.schema)
            first = tbl.search().select(["model", "model_sha256"]).limit(1).to_arrow().to_pylist()
            if have_dim != dim or (first and first[0]["model_sha256"] not in (None, sha256)):
                stored = {"model": first[0]["model"] if first else None,
                          "model_sha256": first[0]["model_sha256"] if first else "", "dim": have_dim}
                raise self._mismatch(stored, name, sha256, dim)
        info = {
            "table_set": self.table_set,
            "model": name,
            "model_sha256": sha256,
            "dim": dim,
            "schema_version": SCHEMA_VERSION,
            "created_at": _dt.datetime.now(_dt.UTC),
            "arch": arch,
        }
        if self.read_only:
            return {**info, "created_at": info["created_at"].isoformat()}
        try:
            self._db.create_table(
                meta_table_name(self.table_set), data=pa.Table.from_pylist([info], schema=meta_schema())
            )
        except (ValueError, OSError) as exc:  # another process created it first: compare with theirs
            self._model = None
            current = self._wait_for_binding()
            if current is None:
                raise StoreError(f"could not record the model binding: {exc}") from exc
            if current.model_sha256 != sha256 or current.dim != dim:
                raise self._mismatch(current, name, sha256, dim) from None
            return current.as_dict()
        self._model = None
        bound = self._read_model()
        assert bound is not None
        return bound.as_dict()

    def _wait_for_binding(self, attempts: int = 50, pause: float = 0.1) -> ModelInfo | None:
        """The binding another writer is committing right now: its table is listed before its first
        version lands, so give that commit a moment (up to ``attempts * pause`` seconds)."""
        for _ in range(attempts):
            current = self._read_model()
            if current is not None:
                return current
            time.sleep(pause)
        return None

    def _dim(self, modality: str) -> int:
        tbl = self._latest(modality)
        if tbl is not None:
            return embedding_dim(tbl.schema)
        info = self._read_model()
        return info.dim if info is not None else DEFAULT_DIM

    # ------------------------------------------------------------------ listing
    def tables(self) -> list[str]:
        """Modalities that have a table in this table set (in :data:`MODALITIES` order)."""
        names = set(self._all_tables())
        return [m for m in MODALITIES if self.table_name(m) in names]

    def table_sets(self) -> list[str]:
        """All table sets present in the database (those with a meta table or any modality table)."""
        sets = {parts[0] for n in self._all_tables() if (parts := split_table_name(n)) is not None}
        return sorted(sets, key=lambda s: (s != DEFAULT_TABLE_SET, s))

    def count(self, modality: str, where: str | None = None) -> int:
        """Rows in ``modality`` (matching the SQL filter ``where``); 0 when the table is missing."""
        tbl = self._latest(check_modality(modality))
        if tbl is None:
            return 0
        return int(tbl.count_rows(where) if where else tbl.count_rows())

    def version(self, modality: str) -> int | None:
        """Latest committed version of ``modality``'s table, or ``None`` if it does not exist."""
        tbl = self._latest(check_modality(modality))
        return None if tbl is None else self._latest_version(self.table_name(modality), tbl)

    # ------------------------------------------------------------------ writing
    def upsert_files(
        self,
        modality: str,
        rows: pa.Table | Sequence[Mapping[str, Any]],
        *,
        delete_paths: Iterable[str] = (),
        single_commit: bool = False,
    ) -> UpsertResult:
        """Replace ALL rows of every path in ``rows`` by ``rows``; each file changes in ONE commit.

        Rows of those paths whose id is not in ``rows`` are deleted (e.g. a sound that had 3 windows
        and now has 2), rows with a known id are updated, new ids are inserted. Paths in
        ``delete_paths`` lose all their rows (files that now give no rows). See
        :func:`~audioclip_search.store.schema.to_arrow_rows` for the row formats; ``indexed_at`` is
        set to the commit time. Without a model binding the set is bound to the rows' model.

        Atomicity is per file: a kill at any moment leaves each file fully old or fully new, never
        duplicated. Commits (at most three, each covering many files):

        1. files whose new ids cover all their stored ids (new files, same window count, more
           windows): ``merge_insert`` on ``id`` (update + insert), which costs O(batch);
        2. files that lost windows: ``merge_insert`` + ``when_not_matched_by_source_delete(path IN
           ...)``, atomic but O(table) in LanceDB 0.40 (it scans the table), so only used when needed;
        3. ``delete_paths``: one ``delete(path IN ...)``.

        ``single_commit=True`` makes the whole call one commit (all files or none), always paying
        the O(table) cost of step 2 when anything must be deleted.

        The stored ids are read just before writing: run one writer per table at a time.
        """
        self._check_writable()
        check_modality(modality)
        info = self._read_model()
        if info is None:
            info = self._bind_from_rows(rows)
        self._check_row_models(rows, info)
        table = to_arrow_rows(modality, rows, info.dim, model=info.model, model_sha256=info.model_sha256)
        row_paths = table.column("path").to_pylist()
        new_paths = list(dict.fromkeys(row_paths))
        new_set = set(new_paths)
        gone = [p for p in dict.fromkeys(delete_paths) if p not in new_set]
        if not new_paths and not gone:
            return UpsertResult(self.version(modality), 0, 0, 0, 0)
        tbl = self._writer(modality, info.dim)
        inserted = updated = deleted = 0
        version: int | None = None

        shrink: list[str] = []
        if new_paths and tbl.count_rows() > 0:
            new_ids: dict[str, set[str]] = {}
            for p, i in zip(row_paths, table.column("id").to_pylist(), strict=True):
                new_ids.setdefault(p, set()).add(i)
            stored = self._ids_by_path(tbl, new_paths)
            shrink = [p for p in new_paths if stored.get(p, set()) - new_ids[p]]
        if single_commit and (shrink or gone):
            res = (
                tbl.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(sql_in("path", [*shrink, *gone]))
                .execute(table)
            )
            return UpsertResult(
                version=int(res.version),
                inserted=int(res.num_inserted_rows),
                updated=int(res.num_updated_rows),
                deleted=int(res.num_deleted_rows),
                paths=len(new_paths) + len(gone),
            )
        if shrink:
            mask = pc.is_in(table.column("path"), value_set=pa.array(shrink, pa.string()))
            slow, fast = table.filter(mask), table.filter(pc.invert(mask))
        else:
            slow, fast = table.slice(0, 0), table
        if fast.num_rows:
            res = tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(fast)
            inserted += int(res.num_inserted_rows)
            updated += int(res.num_updated_rows)
            version = int(res.version)
            crash_point("store.upsert.after-merge")
        if slow.num_rows:
            res = (
                tbl.merge_insert("id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(sql_in("path", shrink))
                .execute(slow)
            )
            inserted += int(res.num_inserted_rows)
            updated += int(res.num_updated_rows)
            deleted += int(res.num_deleted_rows)
            version = int(res.version)
        for i in range(0, len(gone), IN_CHUNK):
            res = tbl.delete(sql_in("path", gone[i : i + IN_CHUNK]))
            deleted += int(res.num_deleted_rows)
            version = int(res.version)
        if version is None:
            version = int(tbl.version)
        return UpsertResult(version, inserted, updated, deleted, len(new_paths) + len(gone))

    def _ids_by_path(self, tbl: Any, paths: Sequence[str]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for i in range(0, len(paths), IN_CHUNK):
            q = tbl.search().select(["id", "path"]).where(sql_in("path", paths[i : i + IN_CHUNK]))
            for batch in q.limit(None).to_batches(SCAN_BATCH):
                for rid, p in zip(batch.column("id").to_pylist(), batch.column("path").to_pylist(), strict=True):
                    out.setdefault(p, set()).add(rid)
        return out

    def add_rows(self, modality: str, rows: pa.Table | Sequence[Mapping[str, Any]]) -> UpsertResult:
        """Bulk insert: add the rows whose id is not in the table yet, in one commit.

        Existing ids are left untouched and other rows of the same paths are NOT removed, so use it
        only for files not indexed before (first runs, benchmarks); :meth:`upsert_files` otherwise.
        Cheaper than ``upsert_files`` for very large batches (no per-path delete filter).
        """
        self._check_writable()
        check_modality(modality)
        info = self._read_model() or self._bind_from_rows(rows)
        self._check_row_models(rows, info)
        table = to_arrow_rows(modality, rows, info.dim, model=info.model, model_sha256=info.model_sha256)
        tbl = self._writer(modality, info.dim)
        if table.num_rows == 0:
            return UpsertResult(int(tbl.version), 0, 0, 0, 0)
        res = tbl.merge_insert("id").when_not_matched_insert_all().execute(table)
        return UpsertResult(
            version=int(res.version),
            inserted=int(res.num_inserted_rows),
            updated=0,
            deleted=0,
            paths=len(set(table.column("path").to_pylist())),
        )

    def _bind_from_rows(self, rows: pa.Table | Sequence[Mapping[str, Any]]) -> ModelInfo:
        if isinstance(rows, pa.Table):
            first = rows.slice(0, 1).to_pylist()
        else:
            first = list(rows[:1]) if isinstance(rows, Sequence) else []
        if not first or not first[0].get("model") or not first[0].get("model_sha256"):
            raise StoreError(
                "no model is bound to this table set: call bind_model(name, sha256, dim) before writing"
            )
        emb = first[0].get("embedding")
        dim = int(np.asarray(emb).size) if emb is not None else DEFAULT_DIM
        self.bind_model(first[0]["model"], first[0]["model_sha256"], dim)
        info = self._read_model()
        assert info is not None
        return info

    def _check_row_models(self, rows: pa.Table | Sequence[Mapping[str, Any]], info: ModelInfo) -> None:
        if isinstance(rows, pa.Table):
            shas = set(rows.column("model_sha256").to_pylist()) if "model_sha256" in rows.column_names else set()
        else:
            shas = {r.get("model_sha256") for r in rows}
        shas.discard(None)
        bad = shas - {info.model_sha256}
        if bad:
            b = next(iter(bad))
            raise self._mismatch(info, "(rows' model)", str(b), info.dim)

    def delete_paths(self, modality: str, paths: Iterable[str]) -> int:
        """Delete every row of ``paths`` (commits per 1000 paths). Returns the number of rows deleted."""
        self._check_writable()
        tbl = self._latest(check_modality(modality))
        unique = list(dict.fromkeys(paths))
        if tbl is None or not unique:
            return 0
        deleted = 0
        for i in range(0, len(unique), IN_CHUNK):
            cond = sql_in("path", unique[i : i + IN_CHUNK])
            deleted += int(tbl.delete(cond).num_deleted_rows)
        return deleted

    def optimize(
        self,
        modality: str | None = None,
        *,
        cleanup_older_than: _dt.timedelta | None = _dt.timedelta(days=7),
        scalar_indexes: bool = True,
    ) -> None:
        """Compact small files, build/refresh BTREE indexes on ``id``/``path``/``indexed_at``, and
        remove versions older than ``cleanup_older_than`` (``None``: LanceDB's default of 7 days).

        Cheap to call often; the indexer should call it once at the end of a run.
        """
        self._check_writable()
        for m in [modality] if modality else self.tables():
            tbl = self._latest(check_modality(m))
            if tbl is None or tbl.count_rows() == 0:
                continue
            if scalar_indexes:
                self.ensure_scalar_indexes(m)
            if cleanup_older_than is None:
                tbl.optimize()
            else:
                tbl.optimize(cleanup_older_than=cleanup_older_than)

    def ensure_scalar_indexes(self, modality: str) -> list[str]:
        """Create the missing BTREE indexes of :data:`SCALAR_INDEX_COLUMNS`; returns those created."""
        self._check_writable()
        tbl = self._latest(check_modality(modality))
        if tbl is None or tbl.count_rows() == 0:
            return []
        have = {tuple(ix.columns) for ix in tbl.list_indices()}
        made = []
        for col in SCALAR_INDEX_COLUMNS:
            if (col,) not in have:
                tbl.create_index(col, config=BTree(), replace=True)
                made.append(col)
        return made

    # ------------------------------------------------------------------ reading
    def file_states(self, modality: str, paths: Iterable[str] | None = None) -> dict[str, FileState]:
        """``{path: FileState(size, mtime, content_sha256)}`` for every indexed path (or for ``paths``).

        Reads only those four columns, streamed. For audio the first window's values are used
        (all windows of a file carry the same file state).
        """
        snap = self.snapshot(modality)
        out: dict[str, FileState] = {}
        if snap is None:
            return out
        filters: list[str | None]
        if paths is None:
            filters = [None]
        else:
            p = list(dict.fromkeys(paths))
            filters = [sql_in("path", p[i : i + IN_CHUNK]) for i in range(0, len(p), IN_CHUNK)]
        for flt in filters:
            for batch in snap.scan(list(STATE_COLUMNS), flt):
                if batch.num_rows > 1:  # windows of one file are adjacent: keep each run's first row
                    col = batch.column("path")
                    changed = pc.not_equal(col.slice(1), col.slice(0, batch.num_rows - 1)).fill_null(True)
                    batch = batch.filter(pa.concat_arrays([pa.array([True]), changed]))
                cols = [batch.column(c).to_pylist() for c in STATE_COLUMNS]
                for path, size, mtime, sha in zip(*cols, strict=True):
                    if path not in out:
                        out[path] = FileState(size, mtime, sha)
        return out

    def ids(self, modality: str, where: str | None = None, *, version: int | None = None) -> np.ndarray:
        """Ids of the rows matching ``where`` (all rows when ``None``) as an object array of str."""
        snap = self.snapshot(modality, version)
        return np.empty(0, dtype=object) if snap is None else snap.ids(where)

    def id_column(self, modality: str, where: str | None = None, *, version: int | None = None) -> pa.ChunkedArray:
        """Like :meth:`ids` but as an Arrow string column (no Python objects: fine for 10^8 rows)."""
        snap = self.snapshot(modality, version)
        return pa.chunked_array([], pa.string()) if snap is None else snap.id_column(where)

    def iter_embeddings(
        self,
        modality: str,
        where: str | None = None,
        *,
        version: int | None = None,
        batch_rows: int = SCAN_BATCH,
        columns: Sequence[str] = (),
    ) -> Iterator[tuple[np.ndarray, np.ndarray, pa.RecordBatch]]:
        """Stream ``(ids, matrix, batch)`` of the rows matching ``where`` at one version.

        ``ids`` is an object array of str, ``matrix`` a float32 ``(rows, dim)`` array, ``batch`` the
        Arrow batch with ``id``, ``embedding`` and the extra ``columns``.
        """
        snap = self.snapshot(modality, version)
        if snap is not None:
            yield from snap.iter_embeddings(where, batch_rows=batch_rows, columns=columns)

    def embeddings(
        self, modality: str, where: str | None = None, *, version: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, matrix)`` of all rows matching ``where``: object array of str and float32 (n, dim).

        Holds n * dim * 4 bytes: mind 10^7+ rows; use :meth:`iter_embeddings` there.
        """
        snap = self.snapshot(modality, version)
        if snap is None:
            return np.empty(0, dtype=object), np.empty((0, self._dim(modality)), np.float32)
        return snap.embeddings(where)

    def rows_by_ids(
        self,
        modality: str,
        ids: Iterable[str],
        *,
        columns: Sequence[str] | None = None,
        with_embedding: bool = False,
        version: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows for ``ids`` in the order given (unknown ids are skipped); see :meth:`TableSnapshot.rows`."""
        snap = self.snapshot(modality, version)
        if snap is None:
            return []
        return snap.rows(ids, columns=columns, with_embedding=with_embedding)

    # ------------------------------------------------------------------ LanceDB vector search
    def lancedb_search(
        self,
        modality: str,
        queries: np.ndarray,
        k: int = 10,
        *,
        where: str | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        ef: int | None = None,
        version: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """LanceDB's own vector search (its ANN index if one exists, else exact), dot product.

        Returns ``(scores (q, k) float32, ids (q, k) object)``, padded with ``-inf`` / ``None``.
        """
        q = as_queries(queries)
        snap = self.snapshot(modality, version)
        if snap is None or k <= 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), None, dtype=object)
        s, i, _ = snap.vector_search(q, k, where=where, nprobes=nprobes, refine_factor=refine_factor, ef=ef)
        return s, i

    def create_lancedb_index(
        self,
        modality: str,
        index_type: str = "IVF_PQ",
        *,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Build LanceDB's own ANN index on ``embedding`` (dot metric) for ``backend="lancedb"``."""
        self._check_writable()
        tbl = self._latest(check_modality(modality))
        if tbl is None or tbl.count_rows() == 0:
            raise StoreError(f"no {modality} rows to index")
        tbl.create_index(
            metric="dot",
            vector_column_name="embedding",
            index_type=index_type,
            num_partitions=num_partitions,
            num_sub_vectors=num_sub_vectors,
            replace=True,
            **kwargs,
        )

    # ------------------------------------------------------------------ summary
    def info(self) -> dict[str, Any]:
        """Summary for ``acsearch info``: uri, table set, model, and per table rows/version/indexes."""
        from .vector_index.files import index_manifest  # noqa: PLC0415 - faiss loads only for info()

        out: dict[str, Any] = {
            "uri": self.uri,
            "table_set": self.table_set,
            "table_sets": self.table_sets(),
            "model": self.model_info(),
            "schema_version": SCHEMA_VERSION,
            "tables": {},
        }
        for m in self.tables():
            snap = self.snapshot(m)
            if snap is None:
                continue
            try:
                indexes = [f"{ix.name} ({ix.index_type})" for ix in snap.list_indices()]
            except Exception:  # remote tables may not list indexes
                indexes = []
            out["tables"][m] = {
                "table": self.table_name(m),
                "rows": snap.count(),
                "version": snap.version,
                "dim": snap.dim,
                "lancedb_indexes": indexes,
                "vector_index": index_manifest(self, m),
            }
        return out


def _suggest_set(model_name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in model_name).strip("-")
    return cleaned[:40] or "new"

