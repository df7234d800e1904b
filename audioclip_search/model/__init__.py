"""The AudioCLIP model: configuration, towers and the assembled module."""

from .audioclip import AudioCLIP, contrastive_loss
from .config import AudioCLIPConfig, available_configs, load_config

__all__ = ["AudioCLIP", "AudioCLIPConfig", "available_configs", "contrastive_loss", "load_config"]
