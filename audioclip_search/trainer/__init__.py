"""Training AudioCLIP and its audio head: the paper's stages as presets (section 4.3/4.4).

    from audioclip_search.trainer import build_config, train
    config = build_config("finetune", overrides=["data.root=/data/ESC-50"])
    result = train(config, "runs/esc50-finetune")      # runs/esc50-finetune/fold{k}/best.pt

Stages: ``audio-head`` (standalone ESResNeXt-fbsp classification), ``cooperative`` (the audio head
inside AudioCLIP, image and text heads frozen teachers), ``full`` (all three heads), ``finetune``
(the audio head on a target data set with its text labels, per fold). The command line is
``acsearch train`` (``audioclip_search.cli.train``); ``python -m audioclip_search.trainer`` is the
same command, for ``torchrun``.
"""

from __future__ import annotations

from .augment import Augmenter
from .config import (
    PRESETS,
    STAGES,
    AugmentConfig,
    CheckpointConfig,
    ConfigError,
    DataConfig,
    LogConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    build_config,
    list_presets,
    read_config_file,
    set_value,
)
from .errors import MissingFilesError, NonFiniteLossError, TooManyBadSamplesError, TrainingError
from .loop import RunResult, UnitResult, fold_pattern, prepare_config, train

__all__ = [
    "PRESETS",
    "STAGES",
    "AugmentConfig",
    "Augmenter",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "LogConfig",
    "MissingFilesError",
    "ModelConfig",
    "NonFiniteLossError",
    "OptimConfig",
    "RunResult",
    "TooManyBadSamplesError",
    "TrainConfig",
    "TrainingError",
    "UnitResult",
    "build_config",
    "fold_pattern",
    "list_presets",
    "prepare_config",
    "read_config_file",
    "set_value",
    "train",
]
