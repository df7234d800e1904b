"""Cross-modal querying, the paper's Table 4 protocol.

Queries are the unique samples of the query modality; results are the samples of the result
modality; a result is relevant when it carries the same label *set* as the query.

* text: one query per unique label set (its labels joined with ", ", through the template). For
  text->X the label sets are those of X's samples; for X->text the results are the unique label
  sets of X's samples, and exactly one of them (the query's own set) is relevant.
* audio: one sample per clip that decoded. For audio->audio the query clip is removed from its
  own results.
* image: one sample per picture (an item may list several; each carries the item's labels).

Directions: text->audio, audio->text, audio->audio where there is audio; text->image,
image->text where there are pictures; audio->image, image->audio where there are both.
Per split (each fold, or with ``scope="all"`` the chosen folds as one corpus) and direction:
P@1, R@1, mAP, R@5, R@10 and MRR (standard IR definitions, see docs/metrics.md); the summary is
the mean over splits. Queries without any relevant result (a clip alone in its class, for
audio->audio) are skipped and counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets.base import Dataset, DatasetError
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
from .embeddings import EmbeddingCache, embed_audio_items, embed_image_paths

__all__ = ["ALL_DIRECTIONS", "available_directions", "query_split", "run_querying"]

ALL_DIRECTIONS = (
    ("text", "audio"),
    ("audio", "text"),
    ("audio", "audio"),
    ("text", "image"),
    ("image", "text"),
    ("audio", "image"),
    ("image", "audio"),
)
METRIC_KEYS = ("P@1", "R@1", "mAP", "R@5", "R@10", "MRR")


def direction_name(query: str, result: str) -> str:
    return f"{query}->{result}"


def available_directions(has_audio: bool, has_images: bool) -> list[tuple[str, str]]:
    have = {"text", *(["audio"] if has_audio else []), *(["image"] if has_images else [])}
    return [(q, r) for q, r in ALL_DIRECTIONS if q in have and r in have]


def parse_directions(spec: Sequence[str] | None, has_audio: bool, has_images: bool) -> list[tuple[str, str]]:
    """``["text->audio", ...]`` -> pairs; None = every direction the data supports."""
    possible = available_directions(has_audio, has_images)
    if not spec:
        return possible
    out = []
    for s in spec:
        parts = tuple(p.strip().lower() for p in s.replace("2", "->").split("->"))
        if parts not in ALL_DIRECTIONS:
            names = ", ".join(direction_name(*d) for d in ALL_DIRECTIONS)
            raise ValueError(f"unknown querying direction {s!r}: use one of {names}")
        if parts not in possible:
            raise DatasetError(f"direction {s!r} needs {' and '.join(parts)} samples, which this dataset lacks")
        out.append(parts)
    return out


def _label_set_ids(
    label_sets: Sequence[tuple[str, ...]], order: dict[str, int]
) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """(unique label sets in a fixed order, id of each input label set)."""
    unique = sorted(set(label_sets), key=lambda ls: (len(ls), [order.get(x, -1) for x in ls], ls))
    index = {ls: i for i, ls in enumerate(unique)}
    return unique, np.array([index[ls] for ls in label_sets], dtype=np.int64)


def query_split(
    samples: dict[str, tuple[np.ndarray, list[tuple[str, ...]]]],
    text_embed: Any,
    directions: Sequence[tuple[str, str]],
    class_order: dict[str, int],
    template: str = "{}",
) -> dict[str, tuple[metrics.RetrievalMetrics, dict[str, int]]]:
    """Retrieval metrics of one split for each direction.

    ``samples`` maps "audio"/"image" to (embeddings (N, D), label set per row). ``text_embed``
    maps a list of label sets to their (M, D) text embeddings (for caching them across calls).
    """
    out: dict[str, tuple[metrics.RetrievalMetrics, dict[str, int]]] = {}
    for query, result in directions:
        needed = [m for m in (query, result) if m != "text"]
        if any(m not in samples or len(samples[m][1]) == 0 for m in needed):
            continue
        media = needed[0]
        emb, label_sets = samples[media]
        unique, ids = _label_set_ids(label_sets, class_order)
        if query == "text" or result == "text":
            text = text_embed(unique)
            text_ids = np.arange(len(unique))
            if query == "text":
                q_emb, q_ids, r_emb, r_ids = text, text_ids, emb, ids
            else:
                q_emb, q_ids, r_emb, r_ids = emb, ids, text, text_ids
            exclude = None
        else:
            q_emb, q_labels = samples[query]
            r_emb, r_labels = samples[result]
            unique, ids_all = _label_set_ids(list(q_labels) + list(r_labels), class_order)
            q_ids, r_ids = ids_all[: len(q_labels)], ids_all[len(q_labels):]
            exclude = np.eye(len(q_ids), dtype=bool) if query == result else None
        scores = np.asarray(q_emb, np.float64) @ np.asarray(r_emb, np.float64).T
        relevant = q_ids[:, None] == r_ids[None, :]
        m = metrics.retrieval_metrics(scores, relevant, exclude)
        out[direction_name(query, result)] = (m, {"queries": m.n_queries, "skipped_queries": m.n_skipped,
                                                  "results": int(r_emb.shape[0]), "label_sets": len(unique)})
    return out


def run_querying(
    encoder: Any,
    dataset: Dataset,
    folds: Sequence[int] | None = None,
    template: str = "{}",
    scope: str = "fold",
    directions: Sequence[str] | None = None,
    batch_size: int = 16,
    cache: EmbeddingCache | bool | None = True,
    progress: bool = True,
) -> EvalResult:
    """Querying scores per split (``scope="fold"``: each fold; ``"all"``: the folds as one corpus)."""
    t0 = time.perf_counter()
    check_template(template)
    if scope not in ("fold", "all"):
        raise ValueError(f"scope must be 'fold' or 'all', got {scope!r}")
    chosen = gather_splits(dataset, folds)
    items = chosen.items
    dirs = parse_directions(directions, any(it.path is not None for it in items),
                            any(it.image_paths for it in items))
    store = make_cache(encoder, cache)
    need_audio = any("audio" in d for d in dirs)
    need_image = any("image" in d for d in dirs)
    image_paths: list[Path] = []
    image_owner: list[int] = []
    for i, it in enumerate(items):
        for p in it.image_paths:
            image_paths.append(p)
            image_owner.append(i)
    with make_progress("clips", quiet=not progress) as bar:
        audio = embed_audio_items(encoder, dataset, items, batch_size=batch_size, cache=store, progress=bar,
                                  description=f"{dataset.title}: embedding audio") if need_audio else None
        images = embed_image_paths(encoder, dataset, image_paths, batch_size=max(batch_size, 1), cache=store,
                                   progress=bar, description=f"{dataset.title}: embedding images") \
            if need_image and image_paths else None
    text_cache: dict[tuple[str, ...], np.ndarray] = {}
    t_text = 0.0

    def text_embed(label_sets: list[tuple[str, ...]]) -> np.ndarray:
        nonlocal t_text
        todo = [ls for ls in label_sets if ls not in text_cache]
        if todo:
            t = time.perf_counter()
            vecs = encoder.encode_texts(format_labels([list(ls) for ls in todo], template))
            t_text += time.perf_counter() - t
            text_cache.update(zip(todo, vecs, strict=True))
        return np.stack([text_cache[ls] for ls in label_sets])

    groups = [(None, list(range(len(items))))] if scope == "all" else chosen.positions()
    class_order = {name: i for i, name in enumerate(dataset.class_names)}
    t_metrics = time.perf_counter()
    splits: list[dict[str, Any]] = []
    curves: dict[str, list[np.ndarray]] = {}
    for fold, positions in groups:
        pos = set(positions)
        samples: dict[str, tuple[np.ndarray, list[tuple[str, ...]]]] = {}
        if audio is not None:
            rows = [r for r, i in enumerate(audio.indices) if i in pos]
            samples["audio"] = (audio.vectors[rows] if rows else np.zeros((0, 0)),
                                [items[audio.indices[r]].label_set for r in rows])
        if images is not None:
            rows = [r for r, i in enumerate(images.indices) if image_owner[i] in pos]
            samples["image"] = (images.vectors[rows] if rows else np.zeros((0, 0)),
                                [items[image_owner[images.indices[r]]].label_set for r in rows])
        found = query_split(samples, text_embed, dirs, class_order, template)
        split: dict[str, Any] = {"split": fold_label(fold) if scope == "fold" else "all", "fold": fold,
                                 "directions": {}}
        for name, (m, counts) in found.items():
            summary = m.summary()
            split["directions"][name] = {**{k: pct(summary[k]) for k in METRIC_KEYS}, **counts,
                                         "pr_curve": [pct(v) for v in m.pr_curve]}
            curves.setdefault(name, []).append(m.pr_curve)
        splits.append(split)
    summary_dirs: dict[str, Any] = {}
    for name in [direction_name(*d) for d in dirs]:
        rows = [s["directions"][name] for s in splits if name in s["directions"]]
        if not rows:
            continue
        summary_dirs[name] = {k: mean_of(r[k] for r in rows) for k in METRIC_KEYS}
        summary_dirs[name].update({
            "queries": sum(r["queries"] for r in rows),
            "skipped_queries": sum(r["skipped_queries"] for r in rows),
            "splits": len(rows),
            "pr_curve": [pct(v) for v in np.nanmean(np.stack(curves[name]), axis=0)],
        })
    t_metrics = time.perf_counter() - t_metrics
    failures = (list(audio.failures) if audio else []) + (list(images.failures) if images else [])
    counts: dict[str, Any] = {"items": len(items)}
    if audio is not None:
        counts["audio"] = audio.counts()
    if images is not None:
        counts["image"] = images.counts()
    return EvalResult(
        task="querying",
        dataset=dataset.describe(),
        settings=task_settings(
            encoder, template, chosen.folds, batch_size, store, scope=scope,
            directions=[direction_name(*d) for d in dirs], relevance="same label set",
            pr_recall_levels=[round(float(x), 2) for x in metrics.PR_RECALL_LEVELS]),
        class_names=list(dataset.class_names),
        splits=splits,
        summary={"directions": summary_dirs},
        failures=failures,
        counts=counts,
        timings={"total": time.perf_counter() - t0,
                 "audio_load": audio.seconds_load if audio else 0.0,
                 "audio_encode": audio.seconds_encode if audio else 0.0,
                 "image_load": images.seconds_load if images else 0.0,
                 "image_encode": images.seconds_encode if images else 0.0,
                 "text_encode": t_text, "metrics": t_metrics},
        artifacts={"pr_curves": {k: np.asarray(v["pr_curve"], dtype=np.float64) / 100.0
                                 for k, v in summary_dirs.items()},
                   "pr_recall_levels": metrics.PR_RECALL_LEVELS},
    )
