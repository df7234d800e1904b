"""audioclip-search: find sounds, pictures and captions from any of the three with AudioCLIP.

Heavy imports (torch, the model) happen on first use of a name, so `acsearch --version` and
`import audioclip_search` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

_LAZY = {
    "AudioCLIP": ".model",
    "AudioCLIPConfig": ".model",
    "load_config": ".model",
    "tokenize": ".text",
    "image_transform": ".image",
    "load_image": ".image",
    "load_audio": ".audio",
    "load_model": ".checkpoints",
    "AudioLoadError": ".errors",
    "ImageLoadError": ".errors",
    "InputError": ".errors",
    "CheckpointError": ".errors",
}

__all__ = [
    "AudioCLIP",
    "AudioCLIPConfig",
    "AudioLoadError",
    "CheckpointError",
    "ImageLoadError",
    "InputError",
    "__version__",
    "image_transform",
    "load_audio",
    "load_config",
    "load_image",
    "load_model",
    "tokenize",
]

if TYPE_CHECKING:  # pragma: no cover
    from .audio import load_audio
    from .checkpoints import load_model
    from .errors import AudioLoadError, CheckpointError, ImageLoadError, InputError
    from .image import image_transform, load_image
    from .model import AudioCLIP, AudioCLIPConfig, load_config
    from .text import tokenize


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
