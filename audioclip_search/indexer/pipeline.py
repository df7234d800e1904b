"""The indexing run: discover -> read (worker processes) -> encode (model) -> write (LanceDB) -> FAISS.

Each stage is timed. A file's rows are written in the same commit (LanceDB versions every
commit), so a run killed at any moment leaves each file fully indexed or not at all, and the
same command again picks up exactly the files still missing. Bad files are reported and skipped.

The record stays true to the files: a stored file that now fails to decode loses its rows (it is
reported as failed and removed), a caption sidecar edited or deleted updates the stored caption,
the stored duration is that of the decoded audio, and the FAISS index of every table is brought up
to date at the end of each run (also when an earlier run committed rows but never built it).

One writer per local database: the run holds the database's writer lock (:mod:`..store.lock`)
and checks that the database can be written before it encodes anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..audio import AudioLimits
from ..crashpoints import crash_point
from ..encoder import Encoder
from ..fsio import input_path, is_object_path
from .discover import MODALITIES, SourceFile, discover
from .paths import display_path, stored_path
from .plan import plan_modality
from .reader import DecodedFile, read_files
from .state import settle_caption, stored_captions
from .windows import WindowSpec


@dataclass
class IndexOptions:
    captions: str | os.PathLike[str] | None = None  # a captions manifest: local path or object URI
    prune: bool = False
    workers: int | None = None  # decoding processes; None = auto (see auto_workers)
    batch_size: int | None = None  # items per encoder call; None = the encoder's micro-batch x 4
    window: WindowSpec = field(default_factory=WindowSpec)
    limits: AudioLimits = field(default_factory=AudioLimits)
    commit_files: int = 256  # commit at least this often (files) ...
    commit_seconds: float = 30.0  # ... or this often (seconds), whichever comes first
    build_vector_index: bool = True
    wait_for_lock: bool | float = False  # another writer holds the database: wait (True / seconds)?
    engine: str = "local"  # "local": this process (+ decoding workers); "ray": a Ray cluster (indexer/distributed)
    ray_address: str | None = None  # engine="ray": the cluster; None = $RAY_ADDRESS, else a local one
    encoders: int = 1  # engine="ray": encoder actors (one model each)
    gpus_per_encoder: float | None = None  # engine="ray": None = 1 when the cluster has GPUs, else 0


ENGINES = ("local", "ray")


@dataclass
class IndexReport:
    indexed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    pruned: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    recaptioned: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))  # now failing
    failed: list[tuple[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("discover", "read", "encode", "write", "vector_index"), 0.0))
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict:
        return {
            "indexed": self.indexed, "rows": self.rows, "unchanged": self.unchanged, "pruned": self.pruned,
            "recaptioned": self.recaptioned, "removed": self.removed,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "stage_seconds": self.stage_seconds, "total_seconds": self.total_seconds,
        }


ProgressHook = Callable[[str, int, int], None]  # (modality, done, total)


class _Timer:
    def __init__(self, report: IndexReport, stage: str):
        self.report, self.stage = report, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.report.stage_seconds[self.stage] += time.perf_counter() - self.start


def auto_workers(device_type: str) -> int:
    """Decoding processes when not given: none on CPU, where the model's threads already use every
    core and decoding (~5 ms a clip against ~300 ms of encoding) is cheaper in-process than a
    worker's start-up and its competition for the cores (measured: 8 % pipeline overhead in-process
    vs 22 % with 2 workers on 2 cores); on a GPU, up to 8 workers keep the device fed."""
    if device_type == "cpu":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def encode_pieces(encoder: Encoder, modality: str, pieces: list[DecodedFile]) -> tuple[np.ndarray, list[int]]:
    """Embed decoded pieces: ``(vectors, counts)``, a piece's ``counts[i]`` rows in order (audio:
    one per window; image and text: one). Shared by both engines (Ray's encoder actors call it)."""
    if modality == "audio":
        vectors = encoder.encode_audio([w for p in pieces for w in p.windows])
        return vectors, [len(p.windows) for p in pieces]
    if modality == "image":
        import torch

        return encoder.encode_images(torch.stack([p.pixels for p in pieces])), [1] * len(pieces)
    return encoder.encode_texts([p.text for p in pieces]), [1] * len(pieces)


def refresh_vector_index(store, modality: str) -> None:  # noqa: ANN001 - store.Store
    """Bring the saved FAISS index up to date with the table (build it the first time)."""
    from .heal import refresh_vector_index as refresh

    refresh(store, modality)


class IndexRunner:
    """Runs one indexing pass of `paths` into `store` with `encoder`."""

    def __init__(self, store, encoder: Encoder, options: IndexOptions | None = None,  # noqa: ANN001
                 progress: ProgressHook | None = None):
        self.store = store
        self.encoder = encoder
        self.options = options or IndexOptions()
        self.progress = progress or (lambda *_: None)
        self.report = IndexReport()
        self._pending: dict[str, list[dict]] = {m: [] for m in MODALITIES}
        self._pending_deletes: dict[str, list[str]] = {m: [] for m in MODALITIES}
        self._label = encoder.info.model_name
        # streamed files whose last piece is still to come: path -> (vectors, spans) so far
        self._partial: dict[str, tuple[list[np.ndarray], list]] = {}
        self._pending_files = 0
        self._last_commit = time.monotonic()

    def plan(self, paths: Iterable[Path]) -> dict[str, list[SourceFile]]:
        """Discover files and keep the new or changed ones; records unchanged and prunes."""
        roots = [input_path(p) for p in paths]  # local paths resolved; s3:// etc. kept whole
        with _Timer(self.report, "discover"):
            # local arguments unresolved, so a self-looping symlink is reported as one failed path
            args = [r if is_object_path(r) else Path(os.path.expanduser(p)) for p, r in zip(paths, roots, strict=True)]
            found = discover(args, self.options.captions)
        self.report.failed.extend(found.skipped)
        todo: dict[str, list[SourceFile]] = {}
        have_manifest = self.options.captions is not None
        for modality in MODALITIES:
            files = found.files[modality]
            # columnar, out-of-core diff against the stored file states (indexer/plan.py)
            todo[modality], unchanged, gone = plan_modality(self.store, modality, files, roots,
                                                            self.options.prune)  # fmt: skip
            self.report.unchanged[modality] += unchanged
            planned = {id(f) for f in todo[modality]}
            captions = stored_captions(self.store, modality)
            recaption: list[SourceFile] = []
            for f in files:
                key = stored_path(f.path)
                f.stored = id(f) not in planned or f.known_sha256 is not None
                caption_changed = settle_caption(f, captions.get(key), have_manifest)
                if id(f) not in planned and caption_changed:
                    recaption.append(f)
            if recaption:
                self._refresh_file_meta(modality, recaption)
                self.report.recaptioned[modality] += len(recaption)
            if self.options.prune and gone:
                with _Timer(self.report, "write"):
                    self.store.delete_paths(modality, gone)
                self.report.pruned[modality] = len(gone)
        return todo

    def run(self, paths: Iterable[Path]) -> IndexReport:
        """Index ``paths`` holding the database's writer lock; storage failures become one-line
        StorageError messages naming the database."""
        from ..store.lock import writer_lock
        from ..store.storage import check_writable, storage_errors

        start = time.perf_counter()
        paths = list(paths)
        check_writable(self.store.uri)  # before anything is encoded
        with storage_errors(self.store.uri), writer_lock(self.store.uri, wait=self.options.wait_for_lock):
            self._bind()
            todo = self.plan(paths)
            self._index_all(todo)
            self._commit(force=True)
            if self.options.build_vector_index:
                from .heal import refresh_vector_indexes

                with _Timer(self.report, "vector_index"):
                    refresh_vector_indexes(self.store)
        self.report.total_seconds = time.perf_counter() - start
        return self.report

    def _bind(self) -> None:
        """Bind the table set to the model's content (sha256 + architecture); rows then carry the
        binding's name, so another path to the same checkpoint writes the same label."""
        info = self.encoder.info
        arch = getattr(getattr(self.encoder.model, "config", None), "name", None)
        bound = self.store.bind_model(info.model_name, info.model_sha256, info.embed_dim, arch=arch)
        self._label = bound.get("model") or info.model_name

    def _batch_limit(self, modality: str) -> int:
        return self.options.batch_size or self.encoder.micro_batch[modality] * 4

    def _index_all(self, todo: dict[str, list[SourceFile]]) -> None:
        """Decode, encode and stage the planned files, one modality after the other."""
        for modality in MODALITIES:
            if todo[modality]:
                self._index_modality(modality, todo[modality])

    def _index_modality(self, modality: str, files: list[SourceFile], isolate: bool = False,
                        counted: tuple[int, int] | None = None) -> None:  # fmt: skip
        """``isolate``: decode every file in a worker process, so one that kills its decoder is
        reported and the others go on (the Ray engine's fallback for files whose task died).
        ``counted``: (files already done, total) when these files finish a larger run, so progress
        counts on from there."""
        buffered: list[DecodedFile] = []
        touched: list[SourceFile] = []
        items = 0
        done, total = counted or (0, len(files))
        self.progress(modality, done, total)
        workers = self.options.workers
        if workers is None:
            workers = auto_workers(self.encoder.device.type)
        if isolate:
            workers = max(1, workers)
        stream = iter(read_files(files, workers, self.options.limits,
                                 self.encoder.model.config.image_resolution, self.options.window, isolate=isolate))
        while True:
            with _Timer(self.report, "read"):
                decoded = next(stream, None)
            if decoded is None:
                break
            if decoded.complete:
                done += 1
            if self._triage(modality, decoded, touched):
                buffered.append(decoded)
                items += len(decoded.windows) if modality == "audio" else 1
                if items >= self._batch_limit(modality):
                    self._encode_and_stage(modality, buffered)
                    buffered, items = [], 0
            elif decoded.error is not None:
                # A long file can fail part-way: what was kept of its earlier pieces goes too.
                buffered = [b for b in buffered if b.source.path != decoded.source.path]
            self.progress(modality, done, total)
        if buffered:
            self._encode_and_stage(modality, buffered)
        self._finish_modality(modality, touched)

    def _triage(self, modality: str, decoded: DecodedFile, touched: list[SourceFile]) -> bool:
        """A decoded piece, as both engines take it: a failure is reported, an unchanged file is
        counted and noted in ``touched``; True when the piece is to be encoded."""
        if decoded.error is not None:
            self._failed(modality, decoded)
            return False
        if decoded.same_content:
            self.report.unchanged[modality] += 1
            touched.append(decoded.source)
            return False
        return True

    def _failed(self, modality: str, decoded: DecodedFile) -> None:
        """Report a file that failed to decode; drop what was kept of its earlier pieces, and its
        stored rows when it was indexed before (they no longer describe the file)."""
        self._partial.pop(str(decoded.source.path), None)
        reason = decoded.error or "failed"
        if decoded.source.stored:
            self._pending_deletes[modality].append(stored_path(decoded.source.path))
            self.report.removed[modality] += 1
            reason += " (its earlier rows were removed)"
        self.report.failed.append((display_path(decoded.source.path), reason))

    def _finish_modality(self, modality: str, touched: list[SourceFile]) -> None:
        """After a modality's last file: commit its removals, then refresh the touched files' metadata."""
        self._commit(force=bool(self._pending_deletes[modality]))
        if touched:
            self._refresh_file_meta(modality, touched)

    def _refresh_file_meta(self, modality: str, files: list[SourceFile]) -> None:
        """Files touched but not changed, or whose caption changed: store their new size, mtime and
        caption, keep their embeddings."""
        from ..store import sql_in

        by_path = {stored_path(f.path): f for f in files}
        with _Timer(self.report, "write"):
            paths = list(by_path)
            for i in range(0, len(paths), 500):
                chunk = paths[i : i + 500]
                ids = self.store.ids(modality, where=sql_in("path", chunk))
                rows = self.store.rows_by_ids(modality, list(ids), with_embedding=True)
                for row in rows:
                    src = by_path[row["path"]]
                    row.update(size=src.size, mtime=src.mtime, caption=src.caption,
                               caption_source=src.caption_source, labels=list(src.labels))
                    row.pop("indexed_at", None)
                if rows:
                    self.store.upsert_files(modality, rows)

    def _encode_and_stage(self, modality: str, pieces: list[DecodedFile]) -> None:
        """Encode decoded items; a file's rows are staged once its last piece is encoded."""
        with _Timer(self.report, "encode"):
            vectors, counts = encode_pieces(self.encoder, modality, pieces)
        self._stage(modality, pieces, vectors, counts)

    def _stage(self, modality: str, pieces: list[DecodedFile], vectors: np.ndarray, counts: list[int]) -> None:
        """Keep each piece's ``counts[i]`` vectors (rows of ``vectors``, in order) with its file; a
        file's rows are staged for the next commit once its last piece is here (pieces of one file
        arrive in order)."""
        files, file_vectors, file_counts, spans = [], [], [], []
        cursor = 0
        for piece, n in zip(pieces, counts, strict=True):
            part = self._partial.setdefault(str(piece.source.path), ([], []))
            part[0].append(vectors[cursor : cursor + n])
            part[1].extend(piece.spans if modality == "audio" else [None] * n)
            piece.windows = []  # the samples are no longer needed
            cursor += n
            if piece.complete:
                got_vectors, got_spans = self._partial.pop(str(piece.source.path))
                files.append(piece)
                file_vectors.append(np.concatenate(got_vectors))
                file_counts.append(len(got_spans))
                spans.extend(got_spans)
        if not files:
            return
        rows = self._rows(modality, files, np.concatenate(file_vectors), file_counts, spans)
        self._pending[modality].extend(rows)
        self._pending_files += len(files)
        self.report.indexed[modality] += len(files)
        self.report.rows[modality] += len(rows)
        self._commit()

    def _rows(self, modality: str, files: list[DecodedFile], vectors: np.ndarray, counts: list[int],
              spans: list) -> list[dict]:  # noqa: ANN001
        info = self.encoder.info
        now = datetime.now(UTC)
        rows, cursor = [], 0
        for f, n in zip(files, counts, strict=True):
            for w in range(n):
                src = f.source
                row = {
                    "path": stored_path(src.path), "content_sha256": f.sha256, "size": src.size,
                    "mtime": src.mtime, "caption": src.caption, "caption_source": src.caption_source,
                    "labels": list(src.labels), "embedding": vectors[cursor],
                    "model": self._label, "model_sha256": info.model_sha256, "indexed_at": now,
                }
                if modality == "audio":
                    start, end = spans[cursor]
                    # the reader reports what was decoded, not the header's claim
                    row.update(window_index=w, start=start, end=end, duration=f.meta.get("duration"),
                               sample_rate=f.meta.get("sample_rate"), channels=f.meta.get("channels"))
                elif modality == "image":
                    row.update(width=f.meta["width"], height=f.meta["height"])
                else:
                    row.update(text=f.text)
                rows.append(row)
                cursor += 1
        return rows

    def _commit(self, force: bool = False) -> None:
        due = self._pending_files >= self.options.commit_files or (
            time.monotonic() - self._last_commit >= self.options.commit_seconds)
        waiting = self._pending_files or any(self._pending_deletes.values())
        if not (force or due) or not waiting:
            return
        with _Timer(self.report, "write"):
            for modality, rows in self._pending.items():
                gone = self._pending_deletes[modality]
                if rows:  # files that now fail lose their rows in the same commit
                    self.store.upsert_files(modality, rows, delete_paths=gone)
                elif gone:
                    self.store.delete_paths(modality, gone)
                rows.clear()
                gone.clear()
        self._pending_files = 0
        self._last_commit = time.monotonic()
        crash_point("index.commit")


def make_runner(store, encoder: Encoder, options: IndexOptions | None = None,  # noqa: ANN001 - store.Store
                progress: ProgressHook | None = None) -> IndexRunner:
    """The runner of ``options.engine``: :class:`IndexRunner` in this process, or the Ray engine
    (:mod:`.distributed`, imported only when asked for)."""
    options = options or IndexOptions()
    if options.engine not in ENGINES:
        raise ValueError(f"unknown indexing engine {options.engine!r} (use {' or '.join(ENGINES)})")
    if options.engine == "ray":
        from .distributed.engine import RayIndexRunner

        return RayIndexRunner(store, encoder, options, progress)
    return IndexRunner(store, encoder, options, progress)
