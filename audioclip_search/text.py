"""CLIP's byte-pair-encoding tokenizer; the vocabulary is the one shipped in the open_clip wheel."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch

CONTEXT_LENGTH = 77


def _tokenizer_module():  # noqa: ANN202
    """open_clip's tokenizer module, run from its own file when the package is not imported yet.

    `import open_clip.tokenizer` first runs the package's __init__, which imports all of its models,
    torchvision and torch._dynamo: seconds that a text query would pay for a 300-line module that
    needs only ftfy, regex and the vocabulary file beside it.
    """
    if "open_clip" in sys.modules:
        from open_clip import tokenizer

        return tokenizer
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed: it provides CLIP's tokenizer vocabulary")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("audioclip_search._open_clip_tokenizer", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load CLIP's tokenizer from {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def _tokenizer():  # noqa: ANN202
    return _tokenizer_module().SimpleTokenizer(context_length=CONTEXT_LENGTH)


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
