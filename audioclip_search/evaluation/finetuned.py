"""Fine-tuned classification (the paper's "training on target" rows): fold k's model on fold k.

Cross-validation as in the paper: the model fine-tuned with fold k held out is evaluated on fold
k, with the same text-label classification as zero-shot (class-name prompts, argmax of
``audio_emb @ text_emb.T``) using that fold's model for both heads. ``checkpoint_pattern`` names
the checkpoints with ``{fold}``, e.g. ``runs/esc50/fold{fold}/best.pt``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..datasets.base import Dataset, DatasetError
from ..errors import CheckpointError
from ..progress import make_progress
from .common import EvalResult, cache_settings, check_template, encoder_settings, make_cache, resolve_folds
from .embeddings import EmbeddingCache, embed_audio_items
from .zeroshot import _split_result, class_prompts, summarize_classification

__all__ = ["fold_checkpoints", "run_finetuned"]


def fold_checkpoints(pattern: str, folds: Sequence[int | None]) -> dict[int | None, Path]:
    """``{fold: path}`` from the pattern; every file must exist (a ``CheckpointError`` lists the missing)."""
    if "{fold}" not in pattern:
        if folds != [None]:
            raise CheckpointError(f"checkpoint pattern {pattern!r} has no '{{fold}}': fine-tuned evaluation "
                                  f"uses fold k's model on fold k (e.g. 'runs/esc50/fold{{fold}}/best.pt')")
        paths = {None: Path(pattern).expanduser()}
    else:
        try:
            paths = {f: Path(pattern.format(fold=f if f is not None else "all")).expanduser() for f in folds}
        except (IndexError, KeyError, ValueError) as exc:
            raise CheckpointError(f"bad checkpoint pattern {pattern!r}: only '{{fold}}' may be used ({exc})") from None
    missing = [f"fold {f}: {p}" if f is not None else str(p) for f, p in paths.items() if not p.is_file()]
    if missing:
        raise CheckpointError("fine-tuned checkpoint(s) not found:\n  " + "\n  ".join(missing))
    return paths


def run_finetuned(
    dataset: Dataset,
    checkpoint_pattern: str,
    folds: Sequence[int] | None = None,
    template: str = "{}",
    encoder_factory: Callable[[Path], Any] | None = None,
    arch: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 16,
    cache: EmbeddingCache | bool | None = True,
    progress: bool = True,
) -> EvalResult:
    """Accuracy of each fold's fine-tuned checkpoint on its own fold, and the mean over folds.

    ``encoder_factory(path) -> Encoder`` builds the encoder for a checkpoint (default:
    ``Encoder.from_pretrained(path, device, precision, arch=arch)``).
    """
    t0 = time.perf_counter()
    check_template(template)
    split_folds = resolve_folds(dataset, folds)
    if split_folds == [None] and "{fold}" in checkpoint_pattern:
        raise DatasetError(f"{dataset.title}: has no folds, so a per-fold checkpoint pattern cannot be used; "
                           f"give one checkpoint path")
    paths = fold_checkpoints(checkpoint_pattern, split_folds)
    if encoder_factory is None:
        from ..encoder import Encoder

        def encoder_factory(path: Path) -> Any:
            return Encoder.from_pretrained(str(path), device=device, precision=precision, arch=arch)

    prompts = class_prompts(dataset, template)
    splits, failures, per_fold_settings = [], [], []
    totals = {"items": 0, "ok": 0, "failed": 0, "encoded": 0, "from_cache": 0}
    timings = {"model_load": 0.0, "audio_load": 0.0, "audio_encode": 0.0, "text_encode": 0.0}
    with make_progress("clips", quiet=not progress) as bar:
        for fold in split_folds:
            t = time.perf_counter()
            encoder = encoder_factory(paths[fold])
            timings["model_load"] += time.perf_counter() - t
            store = make_cache(encoder, cache)
            t = time.perf_counter()
            class_emb = encoder.encode_texts(prompts)
            timings["text_encode"] += time.perf_counter() - t
            items = dataset.items(fold)
            emb = embed_audio_items(encoder, dataset, items, batch_size=batch_size, cache=store, progress=bar,
                                    description=f"{dataset.title} fold {fold}: embedding {len(items)} clips")
            figures, _ = _split_result(fold, items, list(range(len(items))), emb, class_emb, dataset)
            figures["checkpoint"] = str(paths[fold])
            figures["checkpoint_sha256"] = encoder_settings(encoder)["model_sha256"]
            splits.append(figures)
            failures.extend(emb.failures)
            per_fold_settings.append({"fold": fold, **encoder_settings(encoder), "checkpoint": str(paths[fold]),
                                      "cache": cache_settings(store)})
            totals["items"] += len(items)
            for k, v in emb.counts().items():
                totals[k] += v
            timings["audio_load"] += emb.seconds_load
            timings["audio_encode"] += emb.seconds_encode
            del encoder
    summary = summarize_classification(splits, len(dataset.class_names))
    timings["total"] = time.perf_counter() - t0
    first = per_fold_settings[0]
    return EvalResult(
        task="finetuned",
        dataset=dataset.describe(),
        settings={
            "model": checkpoint_pattern,
            "model_sha256": {str(s["fold"]): s["model_sha256"] for s in per_fold_settings},
            "device": first["device"],
            "precision": first["precision"],
            "arch": arch,
            "version": __version__,
            "template": template,
            "prompts": prompts,
            "folds": split_folds,
            "batch_size": batch_size,
            "checkpoints": per_fold_settings,
            "cache": first["cache"],
        },
        class_names=list(dataset.class_names),
        splits=splits,
        summary=summary,
        failures=failures,
        counts={**totals, "classes": len(dataset.class_names)},
        timings=timings,
        artifacts={"confusion": summary["confusion"], "per_class_accuracy": summary["per_class_accuracy"]},
    )
