"""The configuration of a run: a new one from preset/file/overrides, a resumed one from its folder.

A resumed run reads back ``OUT/config.yaml`` and accepts only ``--set`` changes that do not alter
what is computed, so it continues exactly where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig, build_config

__all__ = ["RESUMABLE_CHANGES", "prepare_config"]

#: Settings a resumed run may change without breaking "continues exactly where it stopped".
RESUMABLE_CHANGES = {
    "epochs", "max_steps", "device", "threads", "eval_batch_size", "data.num_workers", "data.cache_audio",
    "data.max_bad_fraction", "checkpoint.every_steps", "log.every_steps", "log.tensorboard", "log.display",
}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"a.b": value}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def prepare_config(out_dir: str | Path, preset: str | None = None, config_file: str | Path | None = None,
                   overrides: list[str] | tuple[str, ...] = (), resume: bool = False) -> tuple[TrainConfig, list[str]]:
    """The run's configuration and notes for the user.

    A new run: preset <- file <- overrides. ``resume``: the configuration saved in the output
    folder, with only the ``--set`` overrides applied, and those limited to settings that do not
    change what is computed (epochs, max_steps, workers, logging, ...).
    """
    out_dir = Path(out_dir)
    saved = out_dir / "config.yaml"
    notes: list[str] = []
    if not resume:
        return build_config(preset, config_file, overrides), notes
    if not saved.is_file():
        raise ConfigError(f"--resume: no {saved} (nothing to resume in {out_dir}); start without --resume")
    import yaml

    base = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    if preset or config_file:
        notes.append(f"resuming with the configuration saved in {saved}; --preset/--config are ignored")
    config = build_config(None, None, overrides, base=base)
    before, after = _flatten(base), _flatten(config.to_dict())
    changed = sorted(k for k in after if before.get(k) != after[k] and k not in ("preset",))
    refused = [k for k in changed if k not in RESUMABLE_CHANGES]
    if refused:
        raise ConfigError("--resume cannot change " + ", ".join(refused) + " (the run would not continue where "
                          "it stopped); start a new run in another folder instead. Allowed: "
                          + ", ".join(sorted(RESUMABLE_CHANGES)))
    if changed:
        notes.append("resuming with changed " + ", ".join(f"{k}={after[k]!r}" for k in changed))
    return config, notes

