"""Why a training run refuses to start or stops: each carries a message meant for the user."""

from __future__ import annotations

from pathlib import Path

from ..errors import AudioClipSearchError
from .config import ConfigError

__all__ = ["ConfigError", "MissingFilesError", "NonFiniteLossError", "TooManyBadSamplesError", "TrainingError"]


class TrainingError(AudioClipSearchError):
    """A run that cannot start or cannot go on; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class MissingFilesError(TrainingError):
    """Files named by the data that are not there: all of them, found before training starts."""

    exit_code = 2

    def __init__(self, missing: list[Path], checked: int, report: Path | None = None, shown: int = 50):
        self.missing = list(missing)
        self.checked = checked
        self.report = report
        lines = [str(p) for p in self.missing[:shown]]
        if len(self.missing) > shown:
            lines.append(f"... and {len(self.missing) - shown} more" + (f" (all listed in {report})" if report else ""))
        super().__init__(f"{len(self.missing)} of {checked} files named by the training data are missing; "
                         f"nothing was trained:\n  " + "\n  ".join(lines))


class TooManyBadSamplesError(TrainingError):
    """More unreadable samples than ``data.max_bad_fraction`` allows."""

    exit_code = 4


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""

    exit_code = 3
