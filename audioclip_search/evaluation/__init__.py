"""Evaluation as in the AudioCLIP paper: zero-shot and fine-tuned classification, cross-modal querying.

    from audioclip_search.datasets import open_dataset
    from audioclip_search.encoder import Encoder
    from audioclip_search.evaluation import run_zeroshot, build_report

    enc = Encoder.from_pretrained("audioclip-full")
    result = run_zeroshot(enc, open_dataset("esc50", "/data/ESC-50"), folds=[1])
    result.summary["top1"]          # mean top-1 accuracy over the folds, percent

Modules: ``metrics`` (numpy metric functions), ``embeddings`` (cached dataset embedding),
``zeroshot``, ``querying``, ``finetuned`` (the tasks), ``report`` (JSON, tables, paper figures),
``plots`` (PNG files; matplotlib imported lazily).
"""

from __future__ import annotations

from .common import EvalResult
from .embeddings import EmbeddingCache, Embeddings, Failure, default_cache_dir
from .finetuned import run_finetuned
from .querying import run_querying
from .report import build_report, paper_reference, print_report, write_json
from .zeroshot import run_zeroshot

__all__ = [
    "EmbeddingCache",
    "Embeddings",
    "EvalResult",
    "Failure",
    "build_report",
    "default_cache_dir",
    "paper_reference",
    "print_report",
    "run_finetuned",
    "run_querying",
    "run_zeroshot",
    "write_json",
]
