"""The loaded FAISS index of one table: labels <-> row ids, FAISS search, refine, filters, GPU."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import faiss
import numpy as np
import pyarrow as pa

from ..schema import sql_timestamp
from ..snapshot import TableSnapshot, as_queries
from .policy import (
    FILTER_BRUTE_MAX,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    Device,
    IndexKind,
    query_threads,
    resolve_device,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..database import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Row ids as given to :meth:`VectorIndex.labels_for` and the ``allowed_ids`` of searches.
IdsLike = Iterable[str] | np.ndarray | pa.Array | pa.ChunkedArray


def encode_ids(ids: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Row ids as a fixed-width bytes array (UTF-8), vectorised for uniform-length Arrow ids."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        arr = ids.cast(pa.large_string()) if ids.type != pa.large_string() else ids
        n = len(arr)
        if n == 0:
            return np.empty(0, dtype="S1")
        if arr.null_count == 0:
            bufs = arr.buffers()
            offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
            lengths = np.diff(offsets)
            width = int(lengths.max())
            if width > 0 and (lengths == width).all():
                data = np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
                return data.reshape(n, width).copy().view(f"S{width}").reshape(n)
        ids = arr.to_pylist()
    enc = [s.encode("utf-8") for s in ids]
    if not enc:
        return np.empty(0, dtype="S1")
    return np.array(enc, dtype=f"S{max(1, max(len(e) for e in enc))}")


def _decode(b: bytes) -> str:
    return b.decode("utf-8")



class ManifestField(Generic[T]):
    """A manifest entry read as a typed attribute of the index (``VectorIndex.size`` is ``n``)."""

    def __init__(self, cast: Callable[[Any], T], key: str | None = None):
        self.cast = cast
        self.key = key

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = self.key or name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> ManifestField[T]: ...
    @overload
    def __get__(self, obj: VectorIndex, owner: type | None = None) -> T: ...
    def __get__(self, obj: VectorIndex | None, owner: type | None = None) -> T | ManifestField[T]:
        return self if obj is None else self.cast(obj.manifest[self.key])


class VectorIndex:
    """A FAISS index over one table of a :class:`Store`, labels = positions in sorted row ids.

    Build with :meth:`build` (see ``build.py``), load with :meth:`load` (``files.py``); searching a
    table that changed since the build is :func:`~.search.search`'s job.
    """

    def __init__(
        self,
        index: faiss.Index,
        ids: np.ndarray,
        manifest: dict[str, Any],
        *,
        refine_vectors: np.ndarray | None = None,
        directory: Path | None = None,
        device: str = "auto",
        row_ids: np.ndarray | None = None,
    ):
        self.index = index
        self.ids = ids
        #: LanceDB row id of each label's row at the build version (``None``: not recorded)
        self.row_ids = row_ids
        self.manifest = manifest
        self.refine_vectors = refine_vectors
        self.directory = directory
        self.device = resolve_device(device)
        self._gpu_index: Any = None
        self._gpu_res: Any = None
        self._direct_map = False
        if self.device == "cuda":
            self._to_gpu()

    # ---------------------------------------------------------------- properties
    kind: ManifestField[str] = ManifestField(str)
    modality: ManifestField[str] = ManifestField(str)
    size: ManifestField[int] = ManifestField(int, "n")
    dim: ManifestField[int] = ManifestField(int)
    table_version: ManifestField[int] = ManifestField(int)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest["params"])

    def info(self) -> dict[str, Any]:
        """The manifest plus the device in use."""
        return {**self.manifest, "device": self.device}

    def __repr__(self) -> str:
        return f"VectorIndex(kind={self.kind!r}, n={self.size}, table={self.manifest['table']!r})"

    # ---------------------------------------------------------------- build, load, freshness
    @classmethod
    def build(cls, store: Store, modality: str, kind: IndexKind = "auto", **options: Any) -> VectorIndex:
        """Build (and by default save) an index over the latest version; see :func:`.build.build_index`."""
        from .build import build_index  # noqa: PLC0415 - build.py imports this module

        return build_index(store, modality, kind, **options)

    @classmethod
    def load(cls, store: Store, modality: str, *, device: Device = "auto", check_model: bool = True) -> VectorIndex:
        """Load the saved index of ``modality``; see :func:`.files.load_index`."""
        from .files import load_index  # noqa: PLC0415 - files.py imports this module

        return load_index(store, modality, device=device, check_model=check_model)

    def is_stale(self, store: Store, version: int | None = None) -> bool:
        """True when the table changed since the build (version, else row count and ``indexed_at``)."""
        snap = store.snapshot(self.modality, version)
        return snap is None or not self.fresh_at(snap)

    def fresh_at(self, snap: TableSnapshot) -> bool:
        """Whether this index covers exactly the rows of ``snap`` (memoised per snapshot).

        Fresh when ``snap`` is the build version, or when the row count is unchanged and no row has
        an ``indexed_at`` newer than the newest one indexed (compaction and index-only commits do
        not make an index stale).
        """
        if snap.version == self.table_version:
            return True
        key = ("faiss-fresh", id(self), self.manifest.get("built_at"))
        fresh = snap.memo.get(key)
        if fresh is None:
            ts = sql_timestamp(int(self.manifest["max_indexed_at_us"]))
            fresh = (snap.dim == self.dim and snap.count() == self.size
                     and snap.count(f"indexed_at > {ts}") == 0)
            snap.memo[key] = fresh
        return bool(fresh)

    def update(self, store: Store, *, force_retrain: bool = False, save: bool = True) -> VectorIndex:
        """A fresh index for the current table (returns ``self`` when not stale).

        IVF indexes keep their trained centroids / PQ codebooks (no k-means) unless the table size
        moved out of [0.5x, 2x] of the trained size or ``force_retrain``; flat and HNSW rebuild.
        """
        from .build import build_index, empty_trained_copy  # noqa: PLC0415

        if not self.is_stale(store):
            return self
        p = self.params
        n_now = store.count(self.modality)
        trained = None
        if self.kind in ("ivf_flat", "ivf_pq") and not force_retrain and 0.5 * self.size <= n_now <= 2 * self.size:
            trained = empty_trained_copy(self.index)
        return build_index(
            store,
            self.modality,
            self.kind,  # type: ignore[arg-type]
            nlist=p.get("nlist") if trained is not None else None,
            pq_m=p.get("pq_m"),
            refine=bool(p.get("refine", True)),
            refine_factor=None,
            hnsw_m=int(p.get("hnsw_m", HNSW_M)),
            ef_construction=int(p.get("ef_construction", HNSW_EF_CONSTRUCTION)),
            device=self.device,  # type: ignore[arg-type]
            save=save,
            trained=trained,
        )

    def labels_for(self, ids: IdsLike) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, found)`` for string ids: label positions and a mask of ids in the index."""
        if isinstance(ids, pa.Array | pa.ChunkedArray):
            arr = encode_ids(ids)
        elif isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
            arr = ids
        else:
            arr = encode_ids(list(ids))
        n = len(self.ids)
        if len(arr) == 0 or n == 0:
            return np.zeros(len(arr), np.int64), np.zeros(len(arr), bool)
        width = self.ids.dtype.itemsize
        too_long = np.char.str_len(arr) > width if arr.dtype.itemsize > width else np.zeros(len(arr), bool)
        probe = arr.astype(self.ids.dtype)
        pos = np.searchsorted(self.ids, probe)
        pos_c = np.minimum(pos, n - 1)
        found = (pos < n) & (np.asarray(self.ids[pos_c]) == probe) & ~too_long
        return pos_c.astype(np.int64), found

    def ids_of(self, labels: np.ndarray) -> np.ndarray:
        """Object array of str ids for an int label array (``-1`` gives ``None``)."""
        labels = np.asarray(labels)
        out = np.full(labels.shape, None, dtype=object)
        ok = labels >= 0
        if ok.any():
            raw = np.asarray(self.ids[labels[ok]])
            out[ok] = [_decode(b) for b in raw.tolist()]
        return out

    def row_ids_of(self, labels: np.ndarray) -> np.ndarray:
        """LanceDB row ids (at the build version) for an int label array; ``-1`` where unknown."""
        labels = np.asarray(labels, dtype=np.int64)
        out = np.full(labels.shape, -1, np.int64)
        ok = labels >= 0
        if self.row_ids is not None and ok.any():
            out[ok] = np.asarray(self.row_ids)[labels[ok]]
        return out

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        allowed_ids: IdsLike | None = None,
        *,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product: ``(scores (q, k) float32, ids (q, k) object)``.

        ``allowed_ids`` restricts results to those ids (ids not in the index are ignored). Missing
        results (k larger than the candidates) are ``-inf`` / ``None``. No staleness check here:
        use :func:`search` for that.
        """
        scores, labels = self.search_labels(queries, k, allowed_ids, nprobe=nprobe, ef=ef)
        return scores, self.ids_of(labels)

    def search_labels(
        self,
        queries: np.ndarray,
        k: int = 10,
        allowed_ids: IdsLike | None = None,
        *,
        nprobe: int | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but returns int64 labels (``-1`` = no hit) instead of ids."""
        q = as_queries(queries)
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, the index {self.dim}")
        if allowed_ids is None:
            scores, labels = self._search_labels(q, k, nprobe=nprobe, ef=ef)
        else:
            lab, found = self.labels_for(allowed_ids)
            scores, labels = self._search_subset(q, k, np.unique(lab[found]), nprobe=nprobe, ef=ef)
        return np.where(labels >= 0, scores, -np.inf).astype(np.float32), labels

    def _search_params(
        self, nprobe: int | None, ef: int | None, sel: Any = None
    ) -> tuple[faiss.SearchParameters, list[Any]]:
        """Search parameters, and the Python objects they point to (keep them alive during the call)."""
        p = self.manifest["params"]
        keep: list[Any] = [sel]
        if self.kind in ("ivf_flat", "ivf_pq"):
            sp = faiss.SearchParametersIVF()
            sp.nprobe = int(min(p["nlist"], nprobe or p.get("nprobe") or 16))
            if p.get("quantizer") == "hnsw32":
                qp = faiss.SearchParametersHNSW()
                qp.efSearch = max(64, 2 * sp.nprobe)
                sp.quantizer_params = qp
                keep.append(qp)  # the C++ params hold a raw pointer to it
        elif self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = int(ef or p.get("ef_search") or 64)
        else:
            sp = faiss.SearchParameters()
        if sel is not None:
            sp.sel = sel
        return sp, keep

    def _search_labels(
        self,
        q: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef: int | None = None,
        sel: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search (with refine for IVF-PQ): scores and int64 labels, ``-1`` padded."""
        if k <= 0:
            return np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        refine = self.kind == "ivf_pq" and self.refine_vectors is not None
        kk = min(self.size, k * int(self.manifest["params"].get("refine_factor", 1))) if refine else k
        kk = max(kk, 1)
        params, keep = self._search_params(nprobe, ef, sel)
        index = self.index
        if self._gpu_index is not None and sel is None and self.kind != "hnsw":
            index = self._gpu_index
            params = _gpu_params(params)
        try:
            with query_threads(len(q)):
                scores, labels = index.search(q, kk, params=params)
        except RuntimeError:
            if index is self.index:
                raise
            log.warning("GPU search failed; using the CPU index", exc_info=True)
            params, keep = self._search_params(nprobe, ef, sel)
            scores, labels = self.index.search(q, kk, params=params)
        del keep
        if refine:
            scores, labels = self._refine(q, labels, k)
        if scores.shape[1] < k:
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        return scores, labels

    def _refine(self, q: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-score PQ candidates exactly with the float16 vectors (read once, in label order)."""
        assert self.refine_vectors is not None
        valid = labels >= 0
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_l = np.full((len(q), k), -1, np.int64)
        if not valid.any():
            return out_s, out_l
        uniq, inv = np.unique(labels[valid], return_inverse=True)
        vecs = np.asarray(self.refine_vectors[uniq], dtype=np.float32)
        pos = np.zeros(labels.shape, np.int64)
        pos[valid] = inv
        step = max(1, (1 << 22) // max(1, labels.shape[1] * self.dim))
        for a in range(0, len(q), step):
            b = a + step
            s = np.einsum("qcd,qd->qc", vecs[pos[a:b]], q[a:b])
            s[~valid[a:b]] = -np.inf
            kk = min(k, s.shape[1])
            top = np.argsort(-s, axis=1, kind="stable")[:, :kk]
            out_s[a:b, :kk] = np.take_along_axis(s, top, axis=1)
            out_l[a:b, :kk] = np.take_along_axis(labels[a:b], top, axis=1)
        out_l[~np.isfinite(out_s)] = -1
        return out_s, out_l

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """float32 vectors of ``labels`` (exact for flat/IVF-Flat/HNSW, float16-rounded for IVF-PQ)."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return np.empty((0, self.dim), np.float32)
        if self.kind == "ivf_pq" and self.refine_vectors is not None:
            order = np.argsort(labels)
            out = np.empty((len(labels), self.dim), np.float32)
            out[order] = self.refine_vectors[labels[order]]
            return out
        if self.kind in ("ivf_flat", "ivf_pq") and not self._direct_map:
            faiss.extract_index_ivf(self.index).make_direct_map(True)
            self._direct_map = True
        return self.index.reconstruct_batch(labels)

    def _search_subset(
        self, q: np.ndarray, k: int, labels: np.ndarray, *, nprobe: int | None, ef: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        m = len(labels)
        if m == 0 or k <= 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if m <= FILTER_BRUTE_MAX:
            return _topk_labels(q @ self.vectors(labels).T, labels, k)
        bitmap = np.zeros((self.size + 7) // 8, np.uint8)
        mask = np.zeros(self.size, bool)
        mask[labels] = True
        bitmap[:] = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        frac = m / self.size
        p = self.manifest["params"]
        probe = ef_eff = None
        if self.kind in ("ivf_flat", "ivf_pq"):
            base = nprobe or p.get("nprobe") or 16
            probe = int(min(p["nlist"], math.ceil(base / max(frac, 1e-6))))
        elif self.kind == "hnsw":
            base = ef or p.get("ef_search") or 64
            ef_eff = int(min(4096, math.ceil(base / max(frac, 1e-6))))
        scores, lab = self._search_labels(q, k, nprobe=probe, ef=ef_eff, sel=sel)
        if self.kind in ("ivf_flat", "ivf_pq") and (lab < 0).any() and m >= k and probe != p["nlist"]:
            scores, lab = self._search_labels(q, k, nprobe=int(p["nlist"]), sel=sel)
        del bitmap
        return scores, lab

    # ---------------------------------------------------------------- GPU
    def _to_gpu(self) -> None:
        if self.kind == "hnsw" or self._gpu_index is not None:
            return
        try:
            self._gpu_res = faiss.StandardGpuResources()
            co = faiss.GpuClonerOptions()
            co.useFloat16 = False
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self.index, co)
        except Exception as exc:  # pragma: no cover - needs a GPU build of faiss
            log.warning("could not move the FAISS index to the GPU (%s); searching on CPU", exc)
            self._gpu_index = None
            self.device = "cpu"



def _gpu_params(params: Any) -> Any:  # pragma: no cover - needs a GPU build of faiss
    """GPU indexes take nprobe but no selector nor quantizer params."""
    if isinstance(params, faiss.SearchParametersIVF):
        sp = faiss.SearchParametersIVF()
        sp.nprobe = params.nprobe
        return sp
    return None



def _topk_labels(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of ``scores`` (q, m) as (scores, labels[col]) padded with -inf / -1."""
    nq, m = scores.shape
    kk = min(k, m)
    out_s = np.full((nq, k), -np.inf, np.float32)
    out_l = np.full((nq, k), -1, np.int64)
    if kk == 0:
        return out_s, out_l
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if m > kk else np.tile(np.arange(m), (nq, 1))
    ps = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    out_s[:, :kk] = np.take_along_axis(ps, order, axis=1)
    out_l[:, :kk] = labels[np.take_along_axis(part, order, axis=1)]
    return out_s, out_l


