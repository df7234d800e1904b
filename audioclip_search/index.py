"""The Python API of the product: open an index, add paths, search by text, sound or picture.

    from audioclip_search.index import Index
    index = Index.open("./acsearch.lancedb")            # model: the one that filled it, else the default
    index.add(["./sounds", "./photos"])
    hits = index.search(text="dog bark", target="audio", k=5)

The model loads on first use, so opening an index to read `info()` is instant.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from .encoder import Encoder
from .fsio import input_path
from .indexer.pipeline import IndexOptions, IndexReport, ProgressHook, make_runner
from .search import Hit, QueryEmbedder, SearchEngine

DEFAULT_MODEL = "audioclip-full"
ENV_MODEL = "ACSEARCH_MODEL"


def _as_list(value: str | Path | Sequence[str | Path] | None) -> list:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return list(value)


class Index:
    """A LanceDB store plus the encoder that fills and queries it."""

    def __init__(self, store, model: str | None = None, arch: str | None = None, device: str = "auto",  # noqa: ANN001
                 precision: str = "auto", encoder: Encoder | None = None, search_device: str = "auto"):
        self.store = store
        self._model = model
        self._arch = arch
        self._device = device
        self._precision = precision
        self._encoder = encoder
        self._engine: SearchEngine | None = None
        self._search_device = search_device

    @classmethod
    def open(cls, db: str | Path | None = None, model: str | None = None, *, arch: str | None = None,
             device: str = "auto", precision: str = "auto", table_set: str = "default",
             encoder: Encoder | None = None, create: bool = True, read_only: bool = False,
             search_device: str = "auto") -> Index:
        from .store import Store

        store = Store.open(db, create=create, table_set=table_set, read_only=read_only)
        return cls(store, model, arch, device, precision, encoder, search_device)

    @property
    def model_name(self) -> str:
        """--model, else $ACSEARCH_MODEL, else the model that filled this index, else audioclip-full."""
        if self._model:
            return self._model
        if os.environ.get(ENV_MODEL):
            return os.environ[ENV_MODEL]
        bound = self.store.model_info()
        return (bound or {}).get("model") or DEFAULT_MODEL

    @property
    def arch(self) -> str | None:
        """--arch, else the architecture recorded in the binding when the model is the bound one
        (same content), else None (the checkpoint's own record or the registry decides)."""
        if self._arch:
            return self._arch
        bound = self.store.model_info() or {}
        if not bound.get("arch"):
            return None
        if not self._model and not os.environ.get(ENV_MODEL):
            return bound["arch"]
        from .checkpoints import checkpoint_sha256, resolve_checkpoint

        try:
            same = checkpoint_sha256(resolve_checkpoint(self.model_name)) == bound.get("model_sha256")
        except Exception:  # noqa: BLE001 - loading the model reports the real problem
            return None
        return bound["arch"] if same else None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder.from_pretrained(self.model_name, device=self._device,
                                                    precision=self._precision, arch=self.arch)
        return self._encoder

    @property
    def engine(self) -> SearchEngine:
        if self._engine is None:
            info = self.encoder.info
            # refuses a model other than the one that filled the index (read-only stores only check)
            self.store.bind_model(info.model_name, info.model_sha256, info.embed_dim)
            self._engine = SearchEngine(self.store, QueryEmbedder(self.encoder), device=self._search_device)
        return self._engine

    def add(self, paths: str | Path | Sequence[str | Path], options: IndexOptions | None = None,
            progress: ProgressHook | None = None, *, engine: str | None = None) -> IndexReport:
        """Index new and changed files under `paths` (files or folders, recursively).

        ``engine="ray"`` runs decoding and encoding on a Ray cluster (``options.ray_address``,
        ``options.encoders``); ``None`` keeps ``options.engine`` ("local" by default).
        """
        if engine is not None:
            options = dataclasses.replace(options or IndexOptions(), engine=engine)
        runner = make_runner(self.store, self.encoder, options, progress)
        return runner.run([input_path(p) for p in _as_list(paths)])

    def search(self, text: str | Sequence[str] | None = None, audio: str | Path | Sequence | None = None,
               image: str | Path | Sequence | None = None, target: str | Sequence[str] = "all", k: int = 10,
               where: str | None = None, *, per_window: bool = False) -> list[Hit]:
        """Query parts combine by normalised-embedding sum; results ranked by cosine similarity.

        ``k`` files, one hit per file scored by its best window (other matching windows listed under
        it, identical content at several paths merged); ``per_window=True``: ``k`` windows/rows.
        """
        return self.engine.search(_as_list(text), _as_list(audio), _as_list(image), target, k, where,
                                  per_window=per_window)

    def similar(self, modality: str, item_id: str, target: str | Sequence[str] = "all", k: int = 10,
                where: str | None = None, *, per_window: bool = False) -> list[Hit]:
        return self.engine.similar(modality, item_id, target, k, where, per_window=per_window)

    def classify(self, path: str | Path, labels: Sequence[str], template: str = "{}"):  # noqa: ANN201
        from .classify import classify

        return classify(QueryEmbedder(self.encoder), path, labels, template)

    def info(self) -> dict:
        return self.store.info()
