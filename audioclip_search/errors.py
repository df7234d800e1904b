"""Exception types the product raises for bad input, each naming the file and the reason."""

from __future__ import annotations

from pathlib import Path


class AudioClipSearchError(Exception):
    """Root of every error the product raises on purpose; the CLI maps it to one line and exit 2."""


class InputError(AudioClipSearchError):
    """A file that cannot be used: carries the path and a one-line reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioLoadError(InputError):
    """Unreadable, empty, truncated, not audio, unsupported codec, or over a configured limit."""


class ImageLoadError(InputError):
    """Unreadable, empty, truncated or not an image."""


class CheckpointError(AudioClipSearchError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""
