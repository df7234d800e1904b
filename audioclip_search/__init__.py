"""audioclip-search: find sounds, pictures and captions from any of the three with AudioCLIP.

Heavy imports (torch, the model) happen on first use of a name, so `acsearch --version` and
`import audioclip_search` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
