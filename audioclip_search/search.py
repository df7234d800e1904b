"""Any-to-any search: embed a query made of texts, sounds and pictures, then rank stored items.

Several query parts combine by the sum of their L2-normalised embeddings, normalised again: each
part pulls equally, whatever its modality (a text's raw embedding norm differs from a sound's).
An audio query longer than one window is cut exactly as indexed audio is, and its windows'
normalised embeddings are averaged. Scores are cosine similarities, comparable across tables,
so results from several target modalities merge into one ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio import MODEL_SAMPLE_RATE, AudioLimits, load_audio
from .encoder import Encoder
from .image import load_image
from .indexer.discover import MODALITIES
from .indexer.windows import WindowSpec, split_windows
from .store.filters import Filter, FilterError, parse_filter
from .store.snapshot import Pins


@dataclass
class Window:
    """Another matching window of a file hit (audio), below the window that scored the file."""

    id: str
    score: float
    start: float | None = None
    end: float | None = None


@dataclass
class Hit:
    """One result. Per file (the default), ``score``/``start``/``end``/``id`` are the file's best
    window, ``windows`` its other matching windows (best first) and ``paths`` every path holding
    the same content (same sha256), the best-scoring first."""

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
    windows: list[Window] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    duration: float | None = None

    def as_dict(self) -> dict:
        """The fields as plain JSON-able values (same as ``dataclasses.asdict``, without its deep
        copies: a server builds one per result)."""
        out = dict(self.__dict__)
        out["labels"] = list(self.labels)
        out["paths"] = list(self.paths)
        out["windows"] = [dict(w.__dict__) for w in self.windows]
        return out


class Hits(list):
    """The ranked :class:`Hit` list of one search, plus ``skipped``: the target tables a filter
    was not applied to (they lack some of its columns) -> those missing columns. Those tables
    contribute no results."""

    def __init__(self, hits: Sequence[Hit] = (), skipped: dict[str, list[str]] | None = None):
        super().__init__(hits)
        self.skipped: dict[str, list[str]] = dict(skipped or {})


#: Columns a hit shows (and groups by): a take of fewer columns is cheaper.
SHOWN_COLUMNS = ("id", "path", "content_sha256", "start", "end", "duration", "caption", "labels", "text")
#: First search depth per file asked for (windows per file); grows x4 until k files are certain.
#: Each candidate's row is read (one ``take``) to group it, so a shallow first round is cheapest.
FILE_DEPTH = 2


def _normalise(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError("the query embedding is zero or not finite")
    return (v / norm).astype(np.float32)


@dataclass
class _Candidate:
    """One ranked row of one table before grouping (``row`` filled from the pinned snapshot)."""

    score: float
    modality: str
    id: str
    row_id: int
    row: dict | None = None

    @property
    def group_key(self) -> str:
        """Rows of the same content (sha256) group together; rows without one group by path."""
        row = self.row or {}
        sha = row.get("content_sha256")
        return f"sha:{sha}" if sha else f"path:{row.get('path', self.id)}"


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

    def pins(self) -> Pins:
        """Snapshots for one request (see :class:`Pins`): pass them to :meth:`item_vector` and
        :meth:`search_vector` so both read each table's version once and see the same one."""
        return Pins(self.store)

    def search_vector(self, vector: np.ndarray, target: str | Sequence[str] = "all", k: int = 10,
                      where: str | Filter | None = None, *, per_window: bool = False,
                      pins: Pins | None = None) -> Hits:
        """Rank the target tables' rows against ``vector``: ``k`` files, or ``k`` windows/rows with
        ``per_window=True``.

        Each table is pinned once (:meth:`Store.snapshot`) and both the ranking and the rows shown
        come from that snapshot, so an index run committing meanwhile cannot mix versions.

        Per file: one hit per file (rows with the same ``content_sha256`` count as one file, listing
        all their paths), scored by its best window. Tables are searched ``k * FILE_DEPTH`` deep,
        then deeper (x4) until ``k`` files are certain: a file not seen yet could only score below
        the last candidate of a table that was not searched to its end.

        ``where`` (see :mod:`.store.filters`) applies to the target tables having its columns; the
        others are skipped and named in the result's ``skipped``. A filter no target table can take
        raises :class:`FilterError` naming the columns that exist. ``pins``: the request's
        snapshots (:meth:`pins`), else each target table is pinned here.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        targets = list(MODALITIES) if target == "all" else ([target] if isinstance(target, str) else list(target))
        unknown = set(targets) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown target {sorted(unknown)}: use audio, image, text or all")
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        flt = parse_filter(where) if isinstance(where, str) and where.strip() else (where or None)
        pins = self.pins() if pins is None else pins
        snaps = {}
        skipped: dict[str, list[str]] = {}
        for modality in targets:
            snap = pins[modality]
            if snap is None or not snap.count():
                continue
            missing = flt.missing(snap.columns) if flt is not None else []
            if missing:
                skipped[modality] = missing
            else:
                snaps[modality] = snap
        if flt is not None and skipped and not snaps:
            have = sorted({c for m in skipped for c in pins[m].columns} - {"embedding"})
            raise FilterError(f"no {'/'.join(skipped)} table has the column(s) {', '.join(sorted(flt.columns))} "
                              f"of the filter {flt.text!r}; columns: {', '.join(have)}")
        sql = flt.sql if flt is not None else None
        depth = k if per_window else k * FILE_DEPTH
        known: dict[tuple[str, str], dict] = {}  # rows read in earlier rounds
        while True:
            found: list[_Candidate] = []
            cutoff = -np.inf  # best score a row below some table's search depth could have
            for modality, snap in snaps.items():
                d = min(depth, snap.count())
                result = self.searcher.search(modality, query, d, where=sql, snapshot=snap)
                rows = result.row_ids[0] if result.row_ids is not None else np.full(d, -1)
                got = [_Candidate(float(sc), modality, str(i), int(r))
                       for sc, i, r in zip(result.scores[0], result.ids[0], rows, strict=True)
                       if i is not None and i != ""]
                found += got
                if len(got) == d and d < snap.count():
                    cutoff = max(cutoff, got[-1].score)
            found.sort(key=lambda c: -c.score)
            if per_window:
                return Hits(self._hits(snaps, [[c] for c in found[:k]]), skipped)
            self._fill_rows(snaps, found, known)
            groups: dict[tuple[str, str], list[_Candidate]] = {}
            for c in found:
                groups.setdefault((c.modality, c.group_key), []).append(c)
            ranked = sorted(groups.values(), key=lambda g: -g[0].score)
            certain = [g for g in ranked if g[0].score > cutoff]
            if len(certain) >= k or cutoff == -np.inf:
                return Hits(self._hits(snaps, ranked[:k]), skipped)
            depth *= 4

    @staticmethod
    def _fill_rows(snaps: dict, found: list[_Candidate], known: dict | None = None) -> None:
        """Attach each candidate's row, one ``take`` per table, from the pinned snapshots
        (``known``: rows already read, by ``(modality, id)``; updated)."""
        known = {} if known is None else known
        for c in found:
            if c.row is None and (c.modality, c.id) in known:
                c.row = known[(c.modality, c.id)]
        for modality in dict.fromkeys(c.modality for c in found):
            picked = [c for c in found if c.modality == modality and c.row is None]
            if not picked:
                continue
            snap = snaps[modality]
            have = set(snap.columns)
            cols = [c for c in SHOWN_COLUMNS if c in have]
            rows = snap.rows([c.id for c in picked], row_ids=[c.row_id for c in picked], columns=cols)
            by_id = {r["id"]: r for r in rows}
            for c in picked:
                c.row = known[(modality, c.id)] = by_id.get(c.id, {})

    def _hits(self, snaps: dict, groups: list[list[_Candidate]]) -> list[Hit]:
        self._fill_rows(snaps, [c for g in groups for c in g])
        hits = []
        for rank, group in enumerate(groups, 1):
            best = group[0]
            row = best.row or {}
            path = row.get("path", "")
            paths = list(dict.fromkeys(c.row.get("path", "") for c in group if c.row)) or [path]
            others = [Window(c.id, c.score, c.row.get("start"), c.row.get("end"))
                      for c in group[1:] if c.row and c.row.get("path") == path]
            hits.append(Hit(rank=rank, score=best.score, modality=best.modality, id=best.id, path=path,
                            start=row.get("start"), end=row.get("end"), caption=row.get("caption"),
                            labels=list(row.get("labels") or []), text=row.get("text"), windows=others,
                            paths=paths, duration=row.get("duration")))
        return hits

    def search(self, texts: Sequence[str] = (), audio: Sequence[str | Path] = (),
               images: Sequence[str | Path] = (), target: str | Sequence[str] = "all", k: int = 10,
               where: str | Filter | None = None, *, per_window: bool = False) -> Hits:
        vector = self.embedder.combine(texts, audio, images)
        return self.search_vector(vector, target=target, k=k, where=where, per_window=per_window)

    def similar(self, modality: str, item_id: str, target: str | Sequence[str] = "all", k: int = 10,
                where: str | Filter | None = None, *, per_window: bool = False) -> Hits:
        """'Find similar': the stored item's own embedding is the query."""
        pins = self.pins()
        return self.search_vector(self.item_vector(modality, item_id, pins), target, k, where,
                                  per_window=per_window, pins=pins)

    def item_vector(self, modality: str, item_id: str, pins: Pins | None = None) -> np.ndarray:
        """A stored item's embedding: from the loaded FAISS index when it holds the row unchanged
        (no LanceDB read), else from the table. Raises ``KeyError`` for an unknown id. ``pins``:
        the request's snapshots (:meth:`pins`)."""
        snap = self.store.snapshot(modality) if pins is None else pins[modality]
        if snap is None:
            raise KeyError(f"no {modality} item with id {item_id!r}")
        vector = self.searcher.stored_vector(modality, item_id, snap)
        if vector is not None:
            return vector
        rows = snap.rows([item_id], with_embedding=True, columns=["id"])
        if not rows:
            raise KeyError(f"no {modality} item with id {item_id!r}")
        return np.asarray(rows[0]["embedding"], dtype=np.float32)
