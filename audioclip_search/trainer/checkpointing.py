"""Checkpoint files: atomic writes, the resumable training state, and the exported models.

Files in a unit's folder (the output folder, or ``OUT/fold{k}`` per cross-validation fold):

``last.pt``
    The resumable training state: model, optimiser, LR scheduler, GradScaler, RNG states
    (python, numpy, torch CPU/CUDA, the augmentation generator), epoch, optimiser step, the
    position in the epoch's sample order, the best metric so far and the skipped samples. Written
    every ``checkpoint.every_steps`` steps and at every epoch end. Readable with
    ``torch.load(weights_only=True)`` (no pickled Python objects).
``best.pt`` / ``final.pt``
    Exports of the best (by the validation metric) and the last weights. Inside AudioCLIP: the
    official layout ``{"arch", "config", "state_dict"}`` with AudioCLIP keys, which
    ``checkpoints.load_model(path)`` loads with strict key checks; ``best_audio_head.pt`` /
    ``final_audio_head.pt`` beside them hold the audio head alone. Standalone audio head: the
    head's state dict in the official ESResNeXt-fbsp layout (no ``audio.`` prefix) under
    ``"state_dict"`` with its class names, loadable with ``checkpoints.load_audio_head``.

Every write goes through ``audioclip_search.fileio`` (a temporary file in the same folder, fsynced,
renamed over the target, the folder fsynced), so a crash or SIGKILL leaves either the old file or
the new one, never a torn one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write

__all__ = ["atomic_save", "capture_rng", "export_audio_head", "export_audioclip", "load_state", "restore_rng"]

STATE_VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (see ``fileio.atomic_write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_state(path: str | Path) -> dict[str, Any]:
    """A training state written by the loop (weights-only unpickling)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "audioclip-search-train-state":
        raise ValueError(f"{path}: not a training state written by acsearch train")
    return state


# ---------------------------------------------------------------------------------------------
# RNG states as plain tensors and lists (weights_only-safe)


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    for name, g in (generators or {}).items():
        saved = state.get("generators", {}).get(name)
        if saved is not None:
            g.set_state(saved)


# ---------------------------------------------------------------------------------------------
# exports


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()}


def head_config(head: Any) -> dict[str, Any]:
    """The constructor arguments of an ``ESResNeXtFBSP``, read back from the module."""
    layers = tuple(len(getattr(head, f"layer{i}")) for i in range(1, 5))
    return {
        "num_classes": head.fc.out_features,
        "n_fft": head.n_fft,
        "hop_length": head.hop_length,
        "win_length": int(head.window.shape[0]),
        "window": "blackmanharris",
        "normalized": bool(head.normalized),
        "layers": list(layers),
        "width": head.conv1.out_channels,
        "groups": head.groups,
        "width_per_group": head.base_width,
        "apply_attention": bool(head.apply_attention),
    }


def export_audioclip(model: Any, path: str | Path, training: dict[str, Any] | None = None) -> Path:
    """An AudioCLIP in the layout ``load_model(path)`` reads: {"arch", "config", "state_dict"}."""
    obj = {
        "arch": model.config.name,
        "config": model.config.to_dict(),
        "state_dict": _cpu_state(model),
        "training": dict(training or {}),
    }
    return atomic_save(obj, path)


def export_audio_head(head: Any, path: str | Path, training: dict[str, Any] | None = None,
                      class_names: list[str] | None = None) -> Path:
    """The ESResNeXt-fbsp head alone: its state dict in the official (``audio.``-less) layout."""
    obj = {
        "kind": "audio-head",
        "head_config": head_config(head),
        "class_names": list(class_names or []),
        "state_dict": _cpu_state(head),
        "training": dict(training or {}),
    }
    return atomic_save(obj, path)
