"""Model architecture configurations, stored as data (one JSON file per architecture)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

DEFAULT_ARCH = "audioclip-rn50"


@dataclass(frozen=True)
class AudioCLIPConfig:
    """Every size knob of AudioCLIP; the defaults are the published model."""

    name: str = DEFAULT_ARCH
    description: str = ""
    embed_dim: int = 1024
    # image head (CLIP ModifiedResNet)
    image_resolution: int = 224
    vision_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    vision_width: int = 64
    # text head (CLIP transformer)
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 512
    transformer_heads: int = 8
    transformer_layers: int = 12
    # audio front end (FBSP) and head (ESResNeXt)
    n_fft: int = 2048
    hop_length: int = 561
    win_length: int = 1654
    window: str = "blackmanharris"
    normalized: bool = True
    audio_layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    audio_width: int = 64
    audio_groups: int = 32
    audio_width_per_group: int = 4
    apply_attention: bool = True
    sample_rate: int = 44100
    extra: dict = field(default_factory=dict)

    @property
    def vision_heads(self) -> int:
        return self.vision_width * 32 // 64

    @property
    def clip_samples(self) -> int:
        """Samples in the 5 s clips the model was trained on (220500 at 44.1 kHz)."""
        return 5 * self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> AudioCLIPConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        values = dict(data)
        for key in ("vision_layers", "audio_layers"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def available_configs() -> list[str]:
    """Names of the architectures shipped with the package."""
    folder = resources.files("audioclip_search.model") / "configs"
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_config(name_or_path: str | Path = DEFAULT_ARCH) -> AudioCLIPConfig:
    """Load a shipped architecture by name, or any JSON file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        resource = resources.files("audioclip_search.model") / "configs" / f"{name_or_path}.json"
        if not resource.is_file():
            raise ValueError(
                f"unknown model architecture {name_or_path!r}; known: {', '.join(available_configs())}"
            )
        text = resource.read_text(encoding="utf-8")
    return AudioCLIPConfig.from_dict(json.loads(text))
