"""What the endpoints call: embedding queries and ranking, safe under concurrent requests.

FastAPI runs the sync endpoints in a thread pool, so several requests reach here at once:

- The model is used by one thread at a time (``model_lock``); decoding an uploaded sound or
  picture happens before taking the lock, so only the forward pass is serialised.
- Text queries go through :class:`TextBatcher`: one worker thread takes every text waiting at that
  moment and embeds them in one model call, so under load N concurrent text queries cost about one
  batched forward pass instead of N (no added latency when idle: it never waits for a batch).
- Vector search and row lookups run concurrently: LanceDB reads and CPU FAISS searches are
  thread-safe. When FAISS searches on a GPU (not thread-safe), they are serialised by ``search_lock``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

from ..audio import MODEL_SAMPLE_RATE, AudioLimits, load_audio
from ..image import load_image
from ..index import Index
from ..search import Hits
from ..store import MODALITIES, gpu_available
from ..store.filters import Filter
from ..store.snapshot import Pins
from .errors import ApiError
from .media import ThumbnailCache
from .settings import ServerSettings

_STOP = object()
_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock_for(encoder) -> threading.Lock:  # noqa: ANN001
    """One lock per encoder, shared by every app built on it (tests build several)."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(encoder)
        if lock is None:
            lock = _MODEL_LOCKS[encoder] = threading.Lock()
        return lock


class ThreadSetting:
    """torch's intra-op threads for the threads that run the model (CPU only). Under OpenMP the
    setting belongs to the calling thread, so each model-running thread applies it (once)."""

    def __init__(self, threads: int | None, device: torch.device):
        self.threads = threads if device.type == "cpu" else None
        self._applied = threading.local()

    def apply(self) -> None:
        if self.threads is not None and getattr(self._applied, "n", None) != self.threads:
            torch.set_num_threads(self.threads)
            self._applied.n = self.threads


class TextBatcher:
    """Embeds texts on one worker thread, batching whatever is queued at each step."""

    def __init__(self, encoder, lock: threading.Lock, max_batch: int = 32,  # noqa: ANN001
                 threads: ThreadSetting | None = None):
        self.encoder = encoder
        self.lock = lock
        self.max_batch = max(1, int(max_batch))
        self.threads = threads
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="acsearch-text-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.texts = 0

    def embed(self, text: str, timeout: float | None = 120.0) -> np.ndarray:
        future: Future = Future()
        self._queue.put((text, future))
        return future.result(timeout=timeout)

    def _run(self) -> None:
        if self.threads is not None:
            self.threads.apply()
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            if live:
                try:
                    with self.lock:
                        vectors = self.encoder.encode_texts([t for t, _ in live])
                    self.batches += 1
                    self.texts += len(live)
                    for (_, f), v in zip(live, vectors, strict=True):
                        f.set_result(v)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                    for _, f in live:
                        f.set_exception(exc)
            if stop:
                return

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=5)


class SearchService:
    """Holds the loaded model and the store for the app's lifetime."""

    def __init__(self, index: Index, settings: ServerSettings):
        self.index = index
        self.settings = settings
        self.engine = index.engine  # loads the model once and checks it matches the index
        self.embedder = self.engine.embedder
        self.encoder = self.embedder.encoder
        self.store = index.store
        self.model_lock = model_lock_for(self.encoder)
        gpu_search = str(getattr(self.engine.searcher, "device", "cpu")) != "cpu" and gpu_available()
        self.search_lock: contextlib.AbstractContextManager = threading.Lock() if gpu_search \
            else contextlib.nullcontext()
        self.threads = ThreadSetting(settings.model_threads, self.encoder.device)
        self.texts = TextBatcher(self.encoder, self.model_lock, settings.text_batch, self.threads)
        self.audio_limits = AudioLimits(max_bytes=settings.max_upload_bytes, max_seconds=settings.max_query_seconds)
        self.thumbs = ThumbnailCache(settings.thumb_cache_items, settings.thumb_cache_bytes)

    def warm_up(self) -> None:
        """First text embedding loads the tokenizer; first search loads the FAISS indexes."""
        vector = self.text_vector("warm up")
        for modality in MODALITIES:
            if self.count(modality):
                with self.search_lock:
                    self.engine.search_vector(vector, modality, 1)

    def close(self) -> None:
        self.texts.close()

    # ---------------------------------------------------------------- query parts -> vectors
    def text_vector(self, text: str) -> np.ndarray:
        if not text.strip():
            raise ApiError(400, "empty text query")
        if len(text) > self.settings.max_text_chars:
            raise ApiError(400, f"text query longer than {self.settings.max_text_chars} characters")
        return self.texts.embed(text)

    def audio_vector(self, path: Path) -> np.ndarray:
        waveform, _ = load_audio(path, sample_rate=MODEL_SAMPLE_RATE, mono=True, limits=self.audio_limits)
        with self.model_lock:
            self.threads.apply()
            return self.embedder.audio_waveform(waveform)

    def image_vector(self, path: Path) -> np.ndarray:
        picture = load_image(path, max_pixels=self.settings.max_image_pixels)
        with self.model_lock:
            self.threads.apply()
            return self.encoder.encode_images([picture])[0]

    def pins(self) -> Pins:
        """One request's table snapshots (each table's version read once, at first use)."""
        return self.engine.pins()

    def item_vector(self, modality: str, item_id: str, pins: Pins | None = None) -> np.ndarray:
        try:
            return self.engine.item_vector(modality, item_id, pins)
        except KeyError:
            raise ApiError(404, f"no {modality} item with id {item_id!r}") from None

    # ---------------------------------------------------------------- ranking and rows
    def search(self, vectors: Sequence[np.ndarray], target: str | list[str], k: int,
               where: str | Filter | None, *, per_window: bool = False, pins: Pins | None = None) -> Hits:
        vector = self.embedder.combine(vectors=list(vectors))
        try:
            with self.search_lock:
                return self.engine.search_vector(vector, target, k, where, per_window=per_window, pins=pins)
        except ValueError as exc:
            prefix = "invalid filter: " if where else ""
            raise ApiError(400, prefix + " ".join(str(exc).split())[:400]) from None

    def row(self, modality: str, item_id: str) -> dict:
        rows = self.store.rows_by_ids(modality, [item_id])
        if not rows:
            raise ApiError(404, f"no {modality} item with id {item_id!r}")
        return rows[0]

    def count(self, modality: str) -> int:
        return int(self.store.count(modality))
