"""What every evaluation task returns, and the small helpers they share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..datasets.base import Dataset, DatasetError, Item
from .embeddings import EmbeddingCache, Failure

__all__ = ["EvalResult", "Splits", "check_template", "encoder_settings", "fold_label", "gather_splits", "mean_of",
           "pct", "resolve_folds", "task_settings"]

TASKS = ("zeroshot", "querying", "finetuned")


@dataclass
class EvalResult:
    """The outcome of one evaluation run: JSON-ready figures plus arrays for the plots.

    ``splits`` holds one dict per evaluated fold (or one for the whole dataset), ``summary`` the
    mean over them; all metric values are percentages. ``artifacts`` (numpy arrays: confusion
    matrices, per-class accuracy, precision-recall curves) feed the plots and are not in the JSON
    except as lists inside ``splits``/``summary``.
    """

    task: str
    dataset: dict[str, Any]
    settings: dict[str, Any]
    class_names: list[str]
    splits: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return _jsonable({
            "task": self.task,
            "units": "percent",
            "dataset": self.dataset,
            "settings": self.settings,
            "class_names": self.class_names,
            "summary": self.summary,
            "splits": self.splits,
            "counts": self.counts,
            "failures": [f.to_dict() for f in self.failures],
            "timings_s": self.timings,
        })


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN/inf -> None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def pct(value: float) -> float:
    """A fraction as a percentage, rounded to 4 decimals (NaN stays NaN)."""
    return float("nan") if value != value else round(100.0 * float(value), 4)


def mean_of(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return round(float(np.mean(vals)), 4) if vals else float("nan")


def resolve_folds(dataset: Dataset, folds: Sequence[int] | None) -> list[int | None]:
    """The splits to evaluate: the asked folds, else every fold, else [None] (the whole dataset)."""
    if folds:
        if not dataset.folds:
            raise DatasetError(f"{dataset.title}: has no folds, so --folds cannot be used")
        unknown = [f for f in folds if f not in dataset.folds]
        if unknown:
            raise DatasetError(f"{dataset.title} at {dataset.root}: no fold {', '.join(map(str, unknown))}; "
                               f"folds present: {', '.join(map(str, dataset.folds))}")
        return list(dict.fromkeys(int(f) for f in folds))
    return list(dataset.folds) or [None]


@dataclass
class Splits:
    """The splits to evaluate: each one's items, and all of them as one list (split order), which
    is the order the embeddings come in."""

    folds: list[int | None]
    groups: list[list[Item]]
    items: list[Item] = field(init=False)

    def __post_init__(self) -> None:
        self.items = [it for group in self.groups for it in group]

    def positions(self) -> list[tuple[int | None, list[int]]]:
        """Each split's fold with the positions of its items in :attr:`items`."""
        out, start = [], 0
        for fold, group in zip(self.folds, self.groups, strict=True):
            out.append((fold, list(range(start, start + len(group)))))
            start += len(group)
        return out


def gather_splits(dataset: Dataset, folds: Sequence[int] | None) -> Splits:
    """The items of each split :func:`resolve_folds` chooses."""
    chosen = resolve_folds(dataset, folds)
    return Splits(chosen, [dataset.items(f) for f in chosen])


def fold_label(fold: int | None) -> str:
    return "all" if fold is None else f"fold {fold}"


def check_template(template: str) -> str:
    """A prompt template must hold one ``{}`` for the label text."""
    try:
        filled = template.format("x")
    except (IndexError, KeyError, ValueError) as exc:
        raise ValueError(f"bad prompt template {template!r}: use one '{{}}' for the label ({exc})") from None
    if filled == template:
        raise ValueError(f"prompt template {template!r} has no '{{}}' for the label")
    return template


def encoder_settings(encoder: Any) -> dict[str, Any]:
    info = getattr(encoder, "info", None)
    return {
        "model": getattr(info, "model_name", "unnamed"),
        "model_sha256": getattr(info, "model_sha256", ""),
        "device": str(getattr(encoder, "device", "")),
        "precision": getattr(encoder, "precision", ""),
        "embed_dim": getattr(info, "embed_dim", None),
    }


def task_settings(encoder: Any, template: str, folds: list[int | None], batch_size: int,
                  cache: EmbeddingCache | None, **extra: Any) -> dict[str, Any]:
    """What a report records about how a zero-shot or querying run was made."""
    from .._version import __version__

    return {**encoder_settings(encoder), "version": __version__, "template": template, "folds": folds,
            "batch_size": batch_size, "cache": cache_settings(cache), **extra}


def make_cache(encoder: Any, cache: EmbeddingCache | bool | None) -> EmbeddingCache | None:
    """``True`` = the default cache for this encoder's model; ``False``/None = none; or a given cache."""
    if isinstance(cache, EmbeddingCache):
        return cache
    if not cache:
        return None
    return EmbeddingCache(getattr(encoder.info, "model_sha256", ""), getattr(encoder, "precision", "fp32"))


def cache_settings(cache: EmbeddingCache | None) -> dict[str, Any]:
    if cache is None or not cache.enabled:
        reason = "disabled" if cache is None else "model has no sha256"
        return {"enabled": False, "reason": reason}
    return {"enabled": True, "dir": str(cache.root), "hits": cache.hits, "misses": cache.misses,
            "write_errors": cache.write_errors}
