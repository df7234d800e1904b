"""Classification and retrieval metrics on score matrices (numpy only; formulas in docs/metrics.md).

Ranking convention: results are ranked by descending score; equal scores keep the results' order
(a stable sort), so every metric is deterministic. scikit-learn's ``average_precision_score``
agrees with ``average_precision`` whenever scores are distinct (it treats ties as one block).
All values are fractions in [0, 1]; reports multiply by 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RetrievalMetrics",
    "average_precision",
    "class_average_precision",
    "confusion_matrix",
    "interpolated_pr_curve",
    "per_class_accuracy",
    "rank_results",
    "retrieval_metrics",
    "topk_hits",
]

DEFAULT_KS = (1, 5, 10)
PR_RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


# ------------------------------------------------------------------------------------------------
# classification


def topk_hits(scores: np.ndarray, targets: Sequence[Sequence[int]] | np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: whether any of an item's target classes is among its ``k`` best-scored classes.

    ``scores`` is (N, C); ``targets`` a class index per item, or a list of indices per item
    (multi-label: a hit when any of them is in the top ``k``). Ties rank the lower class first.
    """
    scores = np.asarray(scores)
    n, c = scores.shape
    k = min(k, c)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.zeros(n, dtype=bool)
    for i in range(n):
        wanted = targets[i]
        wanted = [int(wanted)] if np.ndim(wanted) == 0 else [int(t) for t in wanted]
        hits[i] = bool(np.isin(order[i], wanted).any())
    return hits


def predictions(scores: np.ndarray) -> np.ndarray:
    """(N,) the best-scored class of each item (ties: the lower class index)."""
    return np.argmax(np.asarray(scores), axis=1)


def confusion_matrix(
    true: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(out, (true, pred), 1)
    return out


def per_class_accuracy(
    targets: Sequence[Sequence[int]], correct: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, count) per class: the share of items carrying the class whose top-1 was correct.

    An item counts towards each of its target classes; a class without items has accuracy NaN.
    """
    hit = np.zeros(num_classes, dtype=np.int64)
    count = np.zeros(num_classes, dtype=np.int64)
    for tgt, ok in zip(targets, np.asarray(correct, dtype=bool), strict=True):
        for t in set(int(x) for x in (np.atleast_1d(tgt))):
            count[t] += 1
            hit[t] += int(ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, hit / np.maximum(count, 1), np.nan)
    return acc, count


# ------------------------------------------------------------------------------------------------
# retrieval


def rank_results(scores: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """(Q, R) result indices by descending score per query; excluded results go last.

    Stable: equal scores keep the results' order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if exclude is not None:
        scores = np.where(exclude, -np.inf, scores)
    return np.argsort(-scores, axis=1, kind="stable")


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one query: the mean over its relevant results of the precision at their ranks.

    ``scores`` and ``relevant`` are (R,). NaN when nothing is relevant.
    """
    relevant = np.asarray(relevant, dtype=bool)
    total = int(relevant.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    rel = relevant[order]
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(np.arange(1, total + 1) / ranks))


@dataclass
class RetrievalMetrics:
    """Per-query metric arrays over the valid queries (those with at least one relevant result)."""

    precision_at: dict[int, np.ndarray]
    recall_at: dict[int, np.ndarray]
    ap: np.ndarray
    rr: np.ndarray
    n_relevant: np.ndarray
    valid: np.ndarray  # (Q,) bool over all queries
    pr_curve: np.ndarray  # mean interpolated precision at PR_RECALL_LEVELS

    @property
    def n_queries(self) -> int:
        return int(self.valid.sum())

    @property
    def n_skipped(self) -> int:
        return int((~self.valid).sum())

    def summary(self) -> dict[str, float]:
        """Means over valid queries: P@k, R@k, mAP, MRR (fractions; NaN when no query is valid)."""

        def mean(x: np.ndarray) -> float:
            return float(np.mean(x)) if x.size else float("nan")

        out: dict[str, float] = {}
        for k in sorted(self.precision_at):
            out[f"P@{k}"] = mean(self.precision_at[k])
        for k in sorted(self.recall_at):
            out[f"R@{k}"] = mean(self.recall_at[k])
        out["mAP"] = mean(self.ap)
        out["MRR"] = mean(self.rr)
        return out


def retrieval_metrics(
    scores: np.ndarray,
    relevant: np.ndarray,
    exclude: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> RetrievalMetrics:
    """Rank each query's results and compute P@k, R@k, AP and reciprocal rank.

    ``scores``/``relevant``/``exclude`` are (Q, R). Excluded results (a query item itself in
    audio->audio) are removed from that query's ranking: they are neither retrieved nor relevant.
    Queries left without a relevant result are skipped (``valid`` False).
    With n_rel relevant results, rel_i = 1 when the result at rank i is relevant:

    * P@k = (sum_{i<=k} rel_i) / k   (k counts ranks, also past the end of a short list)
    * R@k = (sum_{i<=k} rel_i) / n_rel
    * AP  = (1 / n_rel) * sum_i rel_i * P@i
    * RR  = 1 / (rank of the first relevant result)
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be equal (Q, R) shapes")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=bool)
        relevant = relevant & ~exclude
    order = rank_results(scores, exclude)
    rel = np.take_along_axis(relevant, order, axis=1)
    n_rel = rel.sum(axis=1)
    valid = n_rel > 0
    rel = rel[valid]
    n_rel_v = n_rel[valid].astype(np.float64)
    num_results = rel.shape[1]
    cum = np.cumsum(rel, axis=1, dtype=np.float64)
    ranks = np.arange(1, num_results + 1, dtype=np.float64)
    found_at = {}
    for k in ks:
        idx = min(k, num_results) - 1
        found_at[k] = cum[:, idx] if idx >= 0 else np.zeros(len(rel))
    precision = {k: found_at[k] / k for k in ks}
    recall = {k: found_at[k] / n_rel_v for k in ks}
    prec_at_rank = cum / ranks
    ap = (prec_at_rank * rel).sum(axis=1) / n_rel_v if len(rel) else np.zeros(0)
    first = np.argmax(rel, axis=1) if len(rel) else np.zeros(0, dtype=np.int64)
    rr = 1.0 / (first + 1.0)
    curve = interpolated_pr_curve(rel, n_rel_v)
    return RetrievalMetrics(precision, recall, ap, rr, n_rel_v.astype(np.int64), valid, curve)


def interpolated_pr_curve(
    ranked_relevant: np.ndarray, n_relevant: np.ndarray, levels: np.ndarray = PR_RECALL_LEVELS
) -> np.ndarray:
    """Mean over queries of the interpolated precision at each recall level.

    Interpolated precision at recall r: the highest precision at any rank whose recall is >= r
    (0 where recall r is never reached). ``ranked_relevant`` is (Q, R) bool in rank order.
    """
    rel = np.asarray(ranked_relevant, dtype=bool)
    if rel.shape[0] == 0:
        return np.full(len(levels), np.nan)
    cum = np.cumsum(rel, axis=1, dtype=np.float64)
    precision = cum / np.arange(1, rel.shape[1] + 1)
    recall = cum / np.asarray(n_relevant, dtype=np.float64)[:, None]
    # Best precision from each rank onwards (a running max from the end).
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((rel.shape[0], len(levels)))
    for j, level in enumerate(levels):
        reached = recall >= level - 1e-12
        any_reached = reached.any(axis=1)
        first = np.argmax(reached, axis=1)
        out[:, j] = np.where(any_reached, best_after[np.arange(rel.shape[0]), first], 0.0)
    return out.mean(axis=0)


def class_average_precision(scores: np.ndarray, targets: Sequence[Sequence[int]], num_classes: int) -> float:
    """Macro mAP over classes: for each class with at least one item, the AP of ranking all items by
    that class's score (positives: items carrying the class); the AudioSet-style metric."""
    scores = np.asarray(scores)
    aps = []
    for c in range(num_classes):
        positive = np.array([c in set(np.atleast_1d(t).tolist()) for t in targets], dtype=bool)
        if positive.any():
            aps.append(average_precision(scores[:, c], positive))
    return float(np.mean(aps)) if aps else float("nan")
