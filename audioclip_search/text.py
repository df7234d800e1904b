"""CLIP's byte-pair-encoding tokenizer; the vocabulary is the one shipped in the open_clip wheel."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

CONTEXT_LENGTH = 77


@lru_cache(maxsize=1)
def _tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=CONTEXT_LENGTH)


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.LongTensor:
    """Texts -> (N, context_length) int64: SOT, tokens, EOT, zero padding.

    Texts longer than the context are cut and end with EOT, so long captions still encode.
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = _tokenizer()
    sot, eot = tok.sot_token_id, tok.eot_token_id
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot, *tok.encode(text), eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out  # type: ignore[return-value]


def format_labels(labels: Sequence[str | Sequence[str]], template: str = "{}") -> list[str]:
    """Labels -> prompt texts as the official code builds them: a label list joins with ', '."""
    joined = [lab if isinstance(lab, str) else ", ".join(lab) for lab in labels]
    return [template.format(text) for text in joined]
