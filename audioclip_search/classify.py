"""Zero-shot classification as in the paper: a sound or picture against text label prompts.

Probabilities are the softmax of the model's own logit scale (audio-text or image-text, clamped to
[1, 100] as in the official forward) times the cosine similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .image import IMAGE_EXTENSIONS
from .search import QueryEmbedder
from .text import format_labels


@dataclass
class Prediction:
    label: str
    probability: float
    score: float  # cosine similarity


def classify(
    embedder: QueryEmbedder, path: str | Path, labels: Sequence[str], template: str = "{}"
) -> list[Prediction]:
    """Probabilities of each label for an audio or image file, most likely first."""
    labels = [label.strip() for label in labels if label.strip()]
    if len(labels) < 2:
        raise ValueError("give at least two labels")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct")
    is_image = Path(path).suffix.lower() in IMAGE_EXTENSIONS
    query = embedder.image(path) if is_image else embedder.audio(path)
    texts = embedder.encoder.encode_texts(format_labels(labels, template))
    cosine = texts @ query
    model = embedder.encoder.model
    with torch.no_grad():
        scale_ai, scale_at, scale_it = model.logit_scales()
        scale = float(scale_it if is_image else scale_at)
    logits = scale * cosine.astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    return [Prediction(labels[i], float(probs[i]), float(cosine[i])) for i in order]
