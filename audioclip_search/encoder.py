"""Batched, no-grad embedding of sounds, pictures and texts with one AudioCLIP model.

The indexer, evaluator and server all embed through `Encoder`, so device choice, mixed
precision, micro-batching and the inference rewrites (folded BatchNorm, channels-last) live here
once. Outputs are float32 numpy arrays, L2-normalised unless asked otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .devices import autocast, resolve_device, resolve_precision
from .image import image_transform
from .model import AudioCLIP
from .model.inference import inference_copy
from .text import tokenize

# Micro-batches bound the activation memory. On CPU, audio runs 8 clips per call: on a 2-core
# AVX-512 Xeon (torch 2.15) 8 clips took 11.4 s where four calls of 2 took 14.8-21.8 s (the big
# GEMMs and convolutions amortise better than the page faults of >32 MB activations cost).
_CPU_MICRO_BATCH = {"audio": 8, "image": 8, "text": 64}
_CUDA_MICRO_BATCH = {"audio": 32, "image": 128, "text": 512}


@dataclass(frozen=True)
class EncoderInfo:
    """Identifies the embeddings: the store refuses to mix vectors from different models."""

    model_name: str
    model_sha256: str
    embed_dim: int


class Encoder:
    """Embeds with `model` on `device` ('auto' = CUDA when present) in `precision` ('auto' = bf16
    autocast on CUDA, faithful fp32 on CPU; 'bf16' also runs on CPU through AMX/AVX-512)."""

    def __init__(
        self,
        model: AudioCLIP,
        device: str | torch.device = "auto",
        precision: str = "auto",
        optimize: bool = True,
        micro_batch: dict[str, int] | None = None,
        model_name: str = "unnamed",
        model_sha256: str = "",
    ):
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.info = EncoderInfo(model_name, model_sha256, model.config.embed_dim)
        defaults = _CUDA_MICRO_BATCH if self.device.type == "cuda" else _CPU_MICRO_BATCH
        self.micro_batch = {**defaults, **(micro_batch or {})}
        self.optimize = optimize
        # Each tower's inference copy is built on its first use: a text query never pays for the
        # audio and image towers (nor reads their memory-mapped weights), and a server only for
        # the towers its requests use.
        self._towers: dict[str, torch.nn.Module] = {}
        self._tower_lock = threading.Lock()
        self._image_transform = image_transform(model.config.image_resolution)

    def _tower(self, name: str) -> torch.nn.Module:
        """model.audio / model.visual, rewritten for inference (folded BatchNorm, channels-last)."""
        tower = self._towers.get(name)
        if tower is None:
            with self._tower_lock:  # server threads may ask for the same tower at once
                tower = self._towers.get(name)
                if tower is None:
                    module = getattr(self.model, name)
                    tower = inference_copy(module) if self.optimize else module
                    self._towers[name] = tower
        return tower

    @property
    def built_towers(self) -> tuple[str, ...]:
        """The towers whose inference copies exist so far ('audio', 'visual')."""
        return tuple(sorted(self._towers))

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = "audioclip-full", device: str = "auto", precision: str = "auto", **kwargs
    ) -> Encoder:
        """Load a registry checkpoint (downloaded on first use) or a local file."""
        from .checkpoints import checkpoint_sha256, load_model, resolve_checkpoint

        arch = kwargs.pop("arch", None)
        path = resolve_checkpoint(name_or_path)
        model = load_model(path, device="cpu", arch=arch)
        return cls(model, device=device, precision=precision, model_name=str(name_or_path),
                   model_sha256=checkpoint_sha256(path), **kwargs)

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    def _run(self, fn, batch: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        with torch.inference_mode(), autocast(self.device, self.precision):
            return fn(batch.to(self.device, non_blocking=True)).float()

    def _finish(self, chunks: list[torch.Tensor], normalize: bool) -> np.ndarray:
        out = torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)
        if normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def encode_audio(self, waveforms: torch.Tensor | Sequence[torch.Tensor], normalize: bool = True) -> np.ndarray:
        """Waveforms in [-1, 1] at 44.1 kHz: a (B, C, T) tensor, or a list of (C, T) or (T,) tensors
        (equal shapes are batched together). Returns (B, D) in input order."""
        from .audio import to_model_scale

        items = [waveforms[i] for i in range(len(waveforms))]
        items = [torch.as_tensor(w, dtype=torch.float32) for w in items]
        items = [w.unsqueeze(0) if w.dim() == 1 else w for w in items]
        results: list[torch.Tensor | None] = [None] * len(items)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, w in enumerate(items):
            groups.setdefault(tuple(w.shape), []).append(i)
        step = self.micro_batch["audio"]
        for indices in groups.values():
            for start in range(0, len(indices), step):
                idx = indices[start : start + step]
                batch = to_model_scale(torch.stack([items[i] for i in idx]))
                emb = self._run(self._tower("audio"), batch)
                for j, i in enumerate(idx):
                    results[i] = emb[j]
        return self._finish([r.unsqueeze(0) for r in results], normalize)  # type: ignore[union-attr]

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self._image_transform(img) for img in images])

    def encode_images(self, images: Sequence[Image.Image] | torch.Tensor, normalize: bool = True) -> np.ndarray:
        """PIL images (any mode) or an already preprocessed (B, 3, 224, 224) tensor -> (B, D)."""
        pixels = images if isinstance(images, torch.Tensor) else self.preprocess_images(images)
        step = self.micro_batch["image"]
        visual = self._tower("visual")
        chunks = [self._run(visual, pixels[i : i + step]) for i in range(0, len(pixels), step)]
        return self._finish(chunks, normalize)

    def encode_texts(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Texts -> (B, D); longer than CLIP's 77-token context are cut (ending with EOT)."""
        step = self.micro_batch["text"]
        chunks = [
            self._run(self.model.encode_text, tokenize(list(texts[i : i + step])))
            for i in range(0, len(texts), step)
        ]
        return self._finish(chunks, normalize)
