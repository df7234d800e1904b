"""Named AudioCLIP checkpoints: the registry, the download cache, and safe loading.

    from audioclip_search.checkpoints import load_model
    model = load_model()                      # "audioclip-full", downloaded on first use
    model = load_model("path/to/ckpt.pt", arch="audioclip-rn50", device="cpu")

Importing this package touches neither the disk nor the network, and does not import torch.
"""

from __future__ import annotations

from .download import (
    VerifyResult,
    checkpoint_sha256,
    download_checkpoint,
    missing_message,
    resolve_checkpoint,
    verify_checkpoint,
)
from .loading import (
    AudioHeadReport,
    CheckpointFile,
    KeyReport,
    check_keys,
    compare_keys,
    load_audio_head,
    load_model,
    load_state_dict_file,
    read_checkpoint,
)
from .registry import (
    DEFAULT_CHECKPOINT,
    REGISTRY,
    CheckpointEntry,
    cache_dir,
    cached_path,
    get_entry,
    is_offline,
    list_checkpoints,
    register_checkpoint,
    registered,
    unregister_checkpoint,
)

__all__ = [
    "DEFAULT_CHECKPOINT",
    "REGISTRY",
    "AudioHeadReport",
    "CheckpointEntry",
    "CheckpointFile",
    "KeyReport",
    "VerifyResult",
    "cache_dir",
    "cached_path",
    "check_keys",
    "checkpoint_sha256",
    "compare_keys",
    "download_checkpoint",
    "get_entry",
    "is_offline",
    "list_checkpoints",
    "load_audio_head",
    "load_model",
    "load_state_dict_file",
    "missing_message",
    "read_checkpoint",
    "register_checkpoint",
    "registered",
    "resolve_checkpoint",
    "unregister_checkpoint",
    "verify_checkpoint",
]
