"""Any-to-any search: embed a query made of texts, sounds and pictures, then rank stored items.

Several query parts combine by the sum of their L2-normalised embeddings, normalised again: each
part pulls equally, whatever its modality (a text's raw embedding norm differs from a sound's).
An audio query longer than one window is cut exactly as indexed audio is, and its windows'
normalised embeddings are averaged. Scores are cosine similarities, comparable across tables,
so results from several target modalities merge into one ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .audio import MODEL_SAMPLE_RATE, AudioLimits, load_audio
from .encoder import Encoder
from .image import load_image
from .indexer.discover import MODALITIES
from .indexer.windows import WindowSpec, split_windows


@dataclass
class Hit:
    rank: int
    score: float
    modality: str
    id: str
    path: str
    start: float | None = None
    end: float | None = None
    caption: str | None = None
    labels: list[str] = field(default_factory=list)
    text: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _normalise(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError("the query embedding is zero or not finite")
    return (v / norm).astype(np.float32)


class QueryEmbedder:
    """Turns query parts into one unit vector with the same preprocessing as indexing."""

    def __init__(self, encoder: Encoder, window: WindowSpec | None = None, limits: AudioLimits | None = None):
        self.encoder = encoder
        self.window = window or WindowSpec()
        self.limits = limits or AudioLimits()

    def text(self, text: str) -> np.ndarray:
        if not text.strip():
            raise ValueError("empty text query")
        return self.encoder.encode_texts([text])[0]

    def audio_waveform(self, waveform) -> np.ndarray:  # noqa: ANN001 - (C, T) tensor at 44.1 kHz
        windows, _ = split_windows(waveform, self.window)
        return _normalise(self.encoder.encode_audio(windows).mean(axis=0))

    def audio(self, path: str | Path) -> np.ndarray:
        waveform, _ = load_audio(path, sample_rate=MODEL_SAMPLE_RATE, mono=True, limits=self.limits)
        return self.audio_waveform(waveform)

    def image(self, path: str | Path) -> np.ndarray:
        return self.encoder.encode_images([load_image(path)])[0]

    def combine(self, texts: Sequence[str] = (), audio: Sequence[str | Path] = (),
                images: Sequence[str | Path] = (), vectors: Sequence[np.ndarray] = ()) -> np.ndarray:
        parts = [self.text(t) for t in texts] + [self.audio(a) for a in audio] + [self.image(i) for i in images]
        parts += [_normalise(np.asarray(v, dtype=np.float32)) for v in vectors]
        if not parts:
            raise ValueError("a query needs at least one of --text, --audio, --image")
        return _normalise(np.sum(parts, axis=0))


class SearchEngine:
    """Ranks the rows of a store's tables against a query vector."""

    def __init__(self, store, embedder: QueryEmbedder, device: str = "auto", backend: str = "auto"):  # noqa: ANN001
        from .store import Searcher

        self.store = store
        self.embedder = embedder
        self.searcher = Searcher(store, device=device, backend=backend)

    def search_vector(self, vector: np.ndarray, target: str | Sequence[str] = "all", k: int = 10,
                      where: str | None = None) -> list[Hit]:
        """Rank the target tables' rows against ``vector``.

        Each table is pinned once (:meth:`Store.snapshot`) and both the ranking and the rows shown
        come from that snapshot, so an index run committing meanwhile cannot mix versions.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        targets = list(MODALITIES) if target == "all" else ([target] if isinstance(target, str) else list(target))
        unknown = set(targets) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown target {sorted(unknown)}: use audio, image, text or all")
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        found: list[tuple[float, str, str, int]] = []
        snaps = {}
        for modality in targets:
            snap = self.store.snapshot(modality)
            if snap is None or not snap.count():
                continue
            snaps[modality] = snap
            result = self.searcher.search(modality, query, k, where=where, snapshot=snap)
            rows = result.row_ids[0] if result.row_ids is not None else [-1] * k
            found += [(float(s), modality, str(i), int(r))
                      for s, i, r in zip(result.scores[0], result.ids[0], rows, strict=True)
                      if i is not None and i != ""]
        found.sort(key=lambda t: -t[0])
        found = found[:k]
        shown: dict[tuple[str, str], dict] = {}
        for modality in dict.fromkeys(m for _, m, _, _ in found):
            picked = [(i, r) for _, m, i, r in found if m == modality]
            rows = snaps[modality].rows([i for i, _ in picked], row_ids=[r for _, r in picked])
            shown.update({(modality, r["id"]): r for r in rows})
        hits = []
        for rank, (score, modality, item_id, _) in enumerate(found, 1):
            row = shown.get((modality, item_id), {})
            hits.append(Hit(rank=rank, score=score, modality=modality, id=item_id, path=row.get("path", ""),
                            start=row.get("start"), end=row.get("end"), caption=row.get("caption"),
                            labels=list(row.get("labels") or []), text=row.get("text")))
        return hits

    def search(self, texts: Sequence[str] = (), audio: Sequence[str | Path] = (),
               images: Sequence[str | Path] = (), target: str | Sequence[str] = "all", k: int = 10,
               where: str | None = None) -> list[Hit]:
        vector = self.embedder.combine(texts, audio, images)
        return self.search_vector(vector, target=target, k=k, where=where)

    def similar(self, modality: str, item_id: str, target: str | Sequence[str] = "all", k: int = 10,
                where: str | None = None) -> list[Hit]:
        """'Find similar': the stored item's own embedding is the query."""
        rows = self.store.rows_by_ids(modality, [item_id], with_embedding=True)
        if not rows:
            raise KeyError(f"no {modality} item with id {item_id!r}")
        return self.search_vector(np.asarray(rows[0]["embedding"], dtype=np.float32), target, k, where)
