"""Zero-shot classification (the paper's Tables 2-3 without training on the target).

Each class name becomes a prompt (``template.format(name)``, default ``"{}"`` as the official
code), every clip is embedded with the dataset's evaluation preprocessing, and the predicted class
is ``argmax(audio_emb @ text_emb.T)`` (the logit scale does not change the argmax). Per fold:
top-1 and top-5 accuracy, per-class accuracy, the confusion matrix and the class-wise mAP; the
summary is the mean over folds, as the paper reports cross-validated accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..datasets.base import Dataset, DatasetError, Item
from ..progress import make_progress
from ..text import format_labels
from . import metrics
from .common import (
    EvalResult,
    check_template,
    fold_label,
    gather_splits,
    make_cache,
    mean_of,
    pct,
    task_settings,
)
from .embeddings import EmbeddingCache, Embeddings, embed_audio_items

__all__ = ["class_prompts", "classify", "run_zeroshot"]


def class_prompts(dataset: Dataset, template: str = "{}") -> list[str]:
    """The text for each class, in class-index order."""
    return format_labels(dataset.class_names, check_template(template))


def classify(
    audio_emb: np.ndarray, class_emb: np.ndarray, targets: Sequence[Sequence[int]], num_classes: int
) -> dict[str, Any]:
    """Figures for one split: top-1/top-5 (percent), per-class accuracy, confusion, class mAP.

    A multi-label item counts as correct when a top-k class is any of its labels; the confusion
    matrix holds the single-label items only.
    """
    scores = np.asarray(audio_emb, dtype=np.float64) @ np.asarray(class_emb, dtype=np.float64).T
    top1 = metrics.topk_hits(scores, targets, 1)
    top5 = metrics.topk_hits(scores, targets, 5)
    pred = metrics.predictions(scores)
    single = [i for i, t in enumerate(targets) if len(t) == 1]
    confusion = metrics.confusion_matrix([targets[i][0] for i in single], pred[single], num_classes)
    acc, count = metrics.per_class_accuracy(targets, top1, num_classes)
    n = len(targets)
    return {
        "n": n,
        "top1": pct(top1.mean()) if n else float("nan"),
        "top5": pct(top5.mean()) if n else float("nan"),
        "correct_top1": int(top1.sum()),
        "class_mAP": pct(metrics.class_average_precision(scores, targets, num_classes)) if n else float("nan"),
        "per_class_accuracy": [pct(a) for a in acc],
        "per_class_count": count.tolist(),
        "confusion": confusion,
        "predictions": pred.tolist(),
    }


def _split_result(
    fold: int | None, items: list[Item], positions: list[int], emb: Embeddings, class_emb: np.ndarray,
    dataset: Dataset,
) -> tuple[dict[str, Any], list[Item]]:
    """Classify the items of one split that embedded successfully."""
    row_of = {idx: row for row, idx in enumerate(emb.indices)}
    rows = [row_of[p] for p in positions if p in row_of]
    kept = [items[p] for p in positions if p in row_of]
    audio = emb.vectors[rows] if rows else np.zeros((0, class_emb.shape[1]), np.float32)
    figures = classify(audio, class_emb, [dataset.targets(it) for it in kept], len(dataset.class_names))
    figures = {"split": fold_label(fold), "fold": fold, "excluded": len(positions) - len(rows), **figures}
    figures["items"] = [it.key for it in kept]
    return figures, kept


def summarize_classification(splits: list[dict[str, Any]], num_classes: int) -> dict[str, Any]:
    """Mean over folds of top-1/top-5/class mAP, plus pooled per-class accuracy and confusion."""
    confusion = sum((s["confusion"] for s in splits), np.zeros((num_classes, num_classes), np.int64))
    correct = np.zeros(num_classes)
    count = np.zeros(num_classes)
    for s in splits:
        c = np.asarray(s["per_class_count"], dtype=np.float64)
        a = np.nan_to_num(np.asarray(s["per_class_accuracy"], dtype=np.float64) / 100.0)
        correct += a * c
        count += c
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_acc = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
    n = sum(s["n"] for s in splits)
    return {
        "top1": mean_of(s["top1"] for s in splits),
        "top5": mean_of(s["top5"] for s in splits),
        "class_mAP": mean_of(s["class_mAP"] for s in splits),
        "top1_pooled": pct(sum(s["correct_top1"] for s in splits) / n) if n else float("nan"),
        "n": n,
        "folds": [s["fold"] for s in splits],
        "per_class_accuracy": [pct(a) for a in pooled_acc],
        "per_class_count": count.astype(int).tolist(),
        "confusion": confusion,
    }


def run_zeroshot(
    encoder: Any,
    dataset: Dataset,
    folds: Sequence[int] | None = None,
    template: str = "{}",
    batch_size: int = 16,
    cache: EmbeddingCache | bool | None = True,
    progress: bool = True,
) -> EvalResult:
    """Zero-shot accuracy of ``encoder`` on ``dataset``: each fold (default all) and their mean.

    ``cache``: True = the default embedding cache for the encoder's model, False/None = none, or
    an ``EmbeddingCache``. Files that cannot be decoded are excluded and listed in ``failures``.
    """
    t0 = time.perf_counter()
    check_template(template)
    chosen = gather_splits(dataset, folds)
    items = chosen.items
    if not any(it.path is not None for it in items):
        raise DatasetError(f"{dataset.title}: classification needs audio, and the chosen items have none")
    store = make_cache(encoder, cache)
    t_text = time.perf_counter()
    prompts = class_prompts(dataset, template)
    class_emb = encoder.encode_texts(prompts)
    t_text = time.perf_counter() - t_text
    with make_progress("clips", quiet=not progress) as bar:
        emb = embed_audio_items(encoder, dataset, items, batch_size=batch_size, cache=store, progress=bar,
                                description=f"{dataset.title}: embedding {len(items)} clips")
    t_metrics = time.perf_counter()
    splits = [_split_result(fold, items, positions, emb, class_emb, dataset)[0]
              for fold, positions in chosen.positions()]
    summary = summarize_classification(splits, len(dataset.class_names))
    t_metrics = time.perf_counter() - t_metrics
    return EvalResult(
        task="zeroshot",
        dataset=dataset.describe(),
        settings=task_settings(
            encoder, template, chosen.folds, batch_size, store, prompts=prompts,
            logits="audio_emb @ text_emb.T (L2-normalised; the logit scale does not change the argmax)"),
        class_names=list(dataset.class_names),
        splits=splits,
        summary=summary,
        failures=list(emb.failures),
        counts={"items": len(items), **emb.counts(), "classes": len(dataset.class_names)},
        timings={"total": time.perf_counter() - t0, "audio_load": emb.seconds_load,
                 "audio_encode": emb.seconds_encode, "text_encode": t_text, "metrics": t_metrics},
        artifacts={"confusion": summary["confusion"],
                   "per_class_accuracy": np.asarray(summary["per_class_accuracy"], dtype=np.float64)},
    )
