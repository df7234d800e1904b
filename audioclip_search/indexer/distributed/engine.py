"""``acsearch index --engine ray``: decode and encode on a Ray cluster, commit on the driver.

Stages (one Ray Dataset, streamed)::

    driver: discover + columnar plan (the local engine's own)  ->  file records (new/changed files)
    CPU tasks:   map_batches(decode_batch)    the reader's decode_pieces: windows / pixels / text
    actor pool:  map_batches(EncodeStage)     one model per actor (num_gpus each on a GPU cluster),
                                              --encoders N actors, the runner's encode_pieces
    driver:      iter_batches -> rows -> upsert into the same LanceDB tables, FAISS refresh at the end

Everything around the two remote stages is the in-process :class:`~..pipeline.IndexRunner`
itself (this class only replaces how planned files become embeddings): the writer lock, the
model binding, the plan, ``--prune``, caption refreshes, failure reports, the row format, the
commit cadence and the FAISS refresh. Same inputs, same code, so the same tables.

Commit protocol (why a ``kill -9`` of the driver or of any worker leaves every file exactly once):

1. Workers never write to the database. Each encoded piece comes back to the driver as an Arrow
   row (``pos``, piece number, embeddings, spans, sha256, metadata: see :mod:`.records`).
2. The driver puts a file's pieces back in order (they may arrive out of order from different
   actors) and stages its rows only when the last piece is there, so a file's rows are always in
   one commit. Pieces of a file already staged or failed are dropped, so a result Ray delivers
   twice cannot stage a file twice.
3. The driver commits staged rows every ``commit_files`` files or ``commit_seconds`` seconds, as
   the local engine does: ``Store.upsert_files``, a LanceDB ``merge_insert`` keyed by the
   deterministic row id (``sha1(modality|path|window)``, the table's primary key). An upsert of a
   row that is already there is an update, never a second row.
4. Ray retries a decode task or an encode call whose worker died (the actor is restarted). The
   retried attempt recomputes the same pieces; since only the driver commits, and commits by id,
   retries cannot create duplicates, and a dead worker loses only its own in-flight batch.
5. A task that still fails after its retries (a file whose native decoder kills every worker that
   opens it: a segfault or an abort) does not stop the run: Ray Data drops its block
   (``DataContext.max_errored_blocks`` unlimited) and the stream goes on. Files that never came
   back whole are then indexed by the driver through the local engine's own path with the
   reader's restartable worker pool (``IndexRunner._index_modality(..., isolate=True)``): the
   file that kills its decoder is reported as "the decoder crashed on this file", as the local
   engine reports it, and the others of its block are decoded and encoded by the driver and
   committed the same way. Pieces of a dropped block that did come back are discarded first, so a
   file is staged once, by whichever path completes it.
6. If the driver dies, its job's tasks and actors die with it; whatever was committed is whole
   files, and the next run's plan finds them unchanged and redoes only the rest.

Why not ``Dataset.write_lance`` / lance-ray's distributed writer: it appends fragments, which
would duplicate the rows of a file re-encoded after a crash or a retry, and cannot replace the
rows of a changed file; upserts by id give both for free. The commit is one process's work
(metadata plus the new rows' pages), small next to encoding at any cluster size we target.

Limits: local paths must be readable at the same path on every node (a shared filesystem);
object-store inputs (``s3://`` ...) are read by each worker with its node's own credentials, and
by the driver for the files it redoes (step 5). A block that fails costs its task's retries and
then the driver's time for its files (at most ``FILES_PER_BLOCK`` each): fine for the odd hostile
file, slow if a broken cluster fails every block (each such run logs how many files the driver
redid). As in the local engine, long audio (streamed in pieces) is decoded in the driver's own
process, so a long file whose decoder crashes ends the run.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ...crashpoints import ENV_ONCE as CRASH_ONCE
from ...crashpoints import ENV_VAR as CRASH_AT
from ...errors import AudioClipSearchError
from ..discover import SourceFile
from ..pipeline import IndexRunner
from ..reader import DecodedFile
from .records import file_table, read_pieces

#: Files per input block (a decode task's unit of work and of retry).
FILES_PER_BLOCK = 16
#: Files per decode call inside a task.
DECODE_BATCH = 4
#: Retries of a decode task whose worker died before its files are left to the driver (step 5).
DECODE_RETRIES = 3
#: Environment variables forwarded to the workers (test hooks: crash points).
FORWARDED_ENV = (CRASH_AT, CRASH_ONCE)
INSTALL_HINT = 'pip install "audioclip-search[ray]"'

log = logging.getLogger(__name__)


class RayEngineError(AudioClipSearchError):
    """Ray is missing, the cluster cannot be reached, or it failed the run."""


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayEngineError(f"--engine ray needs Ray ({exc.name or exc} is missing): {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Connect to ``address`` (else ``$RAY_ADDRESS``), else start a local Ray; reuse a session this
    process already has. Only a session started here is shut down at the end."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if target is None:
        kwargs["include_dashboard"] = False
    try:
        with warnings.catch_warnings():  # Ray's daemons are fork+exec'd: LanceDB's fork warning does not apply
            warnings.filterwarnings("ignore", message="lancedb fork support")
            ray.init(address=target, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayEngineError(f"cannot connect to the Ray cluster at {target}: {_one_line(exc)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


class _Reorder:
    """Puts each file's pieces back in order and releases them when the file is complete.

    ``done[modality]`` marks files already released (a bool per planned file: 1 byte per file,
    not a Python object), so a piece delivered again after its file was handled is dropped.
    """

    def __init__(self, todo: dict[str, list[SourceFile]]):
        self.done = {m: np.zeros(len(files), dtype=bool) for m, files in todo.items()}
        self._held: dict[tuple[str, int], dict[int, tuple[DecodedFile, np.ndarray]]] = {}

    def push(self, pos: int, piece: DecodedFile, vectors: np.ndarray) -> list[tuple[DecodedFile, np.ndarray]]:
        modality = piece.source.modality
        key = (modality, pos)
        if self.done[modality][pos]:
            return []
        if piece.error is not None:  # a failure part-way: what came of the file's earlier pieces goes
            self._held.pop(key, None)
            self.done[modality][pos] = True
            return [(piece, vectors)]
        held = self._held.setdefault(key, {})
        held[piece.piece] = (piece, vectors)
        last = next((p.piece for p, _ in held.values() if p.complete), None)
        if last is None or any(i not in held for i in range(last + 1)):
            return []
        del self._held[key]
        self.done[modality][pos] = True
        return [held[i] for i in range(last + 1)]

    def give_up(self, modality: str) -> list[int]:
        """The files not released (their block failed): their held pieces are dropped, since
        they will be decoded again whole, and they are marked done."""
        missing = np.flatnonzero(~self.done[modality]).tolist()
        for pos in missing:
            self._held.pop((modality, pos), None)
        self.done[modality][:] = True
        return missing


class _DroppedBlocks(logging.Filter):
    """Keeps Ray Data's traceback for each dropped block off the terminal: the driver redoes
    those files and reports the one that failed (module docstring, step 5)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Ignoring this exception" not in record.getMessage()


@contextlib.contextmanager
def _quiet_dropped_blocks() -> Iterator[None]:
    target = logging.getLogger("ray.data._internal.execution.streaming_executor_state")
    quiet = _DroppedBlocks()
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


class RayIndexRunner(IndexRunner):
    """:class:`IndexRunner` whose decoding and encoding run on a Ray cluster (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.report.stage_seconds["ray"] = 0.0  # waiting on the cluster: decode + encode, overlapped

    def _index_all(self, todo: dict[str, list[SourceFile]]) -> None:
        todo = {m: files for m, files in todo.items() if files}
        if not todo:
            return
        with ray_session(self.options.ray_address) as ray:
            self._run_dataset(ray, todo)

    def _run_dataset(self, ray: Any, todo: dict[str, list[SourceFile]]) -> None:
        reorder = _Reorder(todo)
        touched: dict[str, list[SourceFile]] = {m: [] for m in todo}
        finished = dict.fromkeys(todo, 0)
        for modality, files in todo.items():
            self.progress(modality, 0, len(files))
        batches = iter(self._dataset(ray, todo).iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            with _quiet_dropped_blocks():
                while True:
                    start = time.perf_counter()
                    batch = next(batches, None)
                    self.report.stage_seconds["ray"] += time.perf_counter() - start
                    if batch is None:
                        break
                    self._receive(batch, todo, reorder, touched, finished)
        except ray.exceptions.RayError as exc:
            self._commit(force=True)  # keep every file already complete
            raise RayEngineError(f"the Ray cluster failed the run: {_one_line(exc)}") from None
        for modality, files in todo.items():
            self._redo(modality, [files[pos] for pos in reorder.give_up(modality)], finished[modality], len(files))
            self._finish_modality(modality, touched[modality])

    def _receive(self, batch: Any, todo: dict[str, list[SourceFile]], reorder: _Reorder,
                 touched: dict[str, list[SourceFile]], finished: dict[str, int]) -> None:  # fmt: skip
        """One batch of encoded pieces from the cluster: whole files released in order and taken."""
        pieces, vectors = read_pieces(batch, lambda m, pos: todo[m][pos])
        ready: dict[str, list[tuple[DecodedFile, np.ndarray]]] = {m: [] for m in todo}
        for pos, piece, vecs in zip(batch.column("pos").to_pylist(), pieces, vectors, strict=True):
            for item in reorder.push(pos, piece, vecs):
                ready[item[0].source.modality].append(item)
        for modality, items in ready.items():
            self._take(modality, items, touched[modality])
            finished[modality] += sum(p.complete for p, _ in items)
            if items:
                self.progress(modality, finished[modality], len(todo[modality]))

    def _redo(self, modality: str, files: list[SourceFile], done: int, total: int) -> None:
        """Files whose block failed on the cluster, indexed here as the local engine indexes them,
        each decoded in a restartable worker process (module docstring, step 5)."""
        if not files:
            return
        log.warning("%d %s file(s) lost with a Ray task that failed after its retries: indexing them on the "
                    "driver, each decoded in a worker process", len(files), modality)  # fmt: skip
        self._index_modality(modality, files, isolate=True, counted=(done, total))

    def _take(self, modality: str, items: list[tuple[DecodedFile, np.ndarray]], touched: list[SourceFile]) -> None:
        """Released pieces (whole files, in order): failures reported, unchanged files noted, the
        rest staged through the local engine's own staging."""
        encoded = [(piece, vectors) for piece, vectors in items if self._triage(modality, piece, touched)]
        if encoded:
            pieces = [p for p, _ in encoded]
            self._stage(modality, pieces, np.concatenate([v for _, v in encoded]), [len(v) for _, v in encoded])

    def _dataset(self, ray: Any, todo: dict[str, list[SourceFile]]) -> Any:
        """The Ray Dataset: file records -> decode tasks -> encoder actors."""
        from .stages import EncodeStage, decode_batch

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the CLI draws its own, per modality
        ctx.max_errored_blocks = -1  # a block that fails is dropped; the driver redoes its files (step 5)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # not an INFO line per dataset on the terminal
        files = file_table(todo)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        runtime_env = {"env_vars": env} if env else None
        gpus = self.options.gpus_per_encoder
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        encoders = max(1, int(self.options.encoders))
        model = self.encoder.model
        same_device = gpus == 0 and self.encoder.device.type == "cpu"
        info = {"model_name": self.encoder.info.model_name, "model_sha256": self.encoder.info.model_sha256}
        model_ref = ray.put(model if self.encoder.device.type == "cpu" else copy.deepcopy(model).cpu())
        self._model_ref = model_ref  # held for the run: restarted actors fetch it again
        ds = ray.data.from_arrow(files, override_num_blocks=max(1, math.ceil(files.num_rows / FILES_PER_BLOCK)))
        with warnings.catch_warnings():
            # max_retries has no named parameter in Ray 2.x's map_batches yet; it bounds the retries of a
            # decode task whose worker died, and (differing from the actors' arguments) keeps Ray from
            # fusing decoding into the encoder actors
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                decode_batch, batch_size=DECODE_BATCH, batch_format="pyarrow", num_cpus=1,
                max_retries=DECODE_RETRIES, runtime_env=runtime_env,
                fn_kwargs={"limits": self.options.limits, "image_size": self.encoder.model.config.image_resolution,
                           "window": self.options.window})  # fmt: skip
        return ds.map_batches(
            EncodeStage, batch_size=self._batch_limit("audio"), batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=encoders), num_cpus=1, num_gpus=gpus, runtime_env=runtime_env,
            fn_constructor_kwargs={
                "model_ref": [model_ref], "info": info,
                "precision": self.encoder.precision if same_device else "auto",
                "micro_batch": self.encoder.micro_batch if same_device else None,
                "threads": max(1, (os.cpu_count() or 1) // encoders) if gpus == 0 else None,
            })  # fmt: skip
