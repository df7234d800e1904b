"""Named checkpoints as data (``pretrained.json``), where they are cached, and whether the network
may be used.

Nothing here touches the network or the cache: it reads the package's own table and computes names
and paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import CheckpointError

DEFAULT_CHECKPOINT = "audioclip-full"
CACHE_ENV = "ACSEARCH_CACHE_DIR"
OFFLINE_ENV = "ACSEARCH_OFFLINE"
KINDS = ("full", "audio-head")


@dataclass(frozen=True)
class CheckpointEntry:
    """One downloadable checkpoint: where it comes from, what it must hash to, what it fits."""

    name: str
    filename: str
    url: str
    size: int
    sha256: str
    arch: str
    kind: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"checkpoint {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"checkpoint {self.name!r}: sha256 must be 64 lowercase hex digits")
        if self.size <= 0:
            raise ValueError(f"checkpoint {self.name!r}: size must be positive")
        if not self.filename or "/" in self.filename or "\\" in self.filename:
            raise ValueError(f"checkpoint {self.name!r}: filename must be a plain file name")


def _builtin_entries() -> list[CheckpointEntry]:
    """The published checkpoints, from the package's ``pretrained.json`` (a table, as data: a new
    release is a new row there). A row's ``url`` defaults to ``<release>/<filename>``."""
    table = json.loads(resources.files(__package__).joinpath("pretrained.json").read_text(encoding="utf-8"))
    release = table["release"].rstrip("/")
    return [CheckpointEntry(**{"url": f"{release}/{row['filename']}", **row}) for row in table["checkpoints"]]


#: name -> entry. Mutable on purpose: `register_checkpoint` adds entries (tests, private mirrors).
REGISTRY: dict[str, CheckpointEntry] = {e.name: e for e in _builtin_entries()}


def list_checkpoints(registry: Mapping[str, CheckpointEntry] | None = None) -> list[CheckpointEntry]:
    """Every registered checkpoint, in registration order."""
    return list((REGISTRY if registry is None else registry).values())


def get_entry(name: str, registry: Mapping[str, CheckpointEntry] | None = None) -> CheckpointEntry:
    """The entry called `name`; an unknown name is a CheckpointError that lists the known ones."""
    table = REGISTRY if registry is None else registry
    try:
        return table[name]
    except KeyError:
        known = ", ".join(table) or "(none)"
        raise CheckpointError(
            f"unknown checkpoint {name!r}: not a registered name and no such file; known names: {known}"
        ) from None


def register_checkpoint(entry: CheckpointEntry, *, overwrite: bool = False) -> CheckpointEntry:
    """Add an entry to the global registry (a mirror, a fine-tuned model, a test fixture)."""
    if entry.name in REGISTRY and REGISTRY[entry.name] != entry and not overwrite:
        raise ValueError(f"a different checkpoint is already registered as {entry.name!r}")
    REGISTRY[entry.name] = entry
    return entry


def unregister_checkpoint(name: str) -> None:
    """Remove an entry added with `register_checkpoint` (built-in names may be removed too)."""
    REGISTRY.pop(name, None)


@contextmanager
def registered(entry: CheckpointEntry) -> Iterator[CheckpointEntry]:
    """Register `entry` for the duration of a `with` block, restoring whatever was there before."""
    previous = REGISTRY.get(entry.name)
    REGISTRY[entry.name] = entry
    try:
        yield entry
    finally:
        if previous is None:
            REGISTRY.pop(entry.name, None)
        else:
            REGISTRY[entry.name] = previous


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where checkpoints live: the override, else $ACSEARCH_CACHE_DIR, else
    $XDG_CACHE_HOME/audioclip-search, else ~/.cache/audioclip-search. Nothing is created."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "audioclip-search"


def is_offline(offline: bool | None = None) -> bool:
    """The explicit argument wins; otherwise ACSEARCH_OFFLINE=1 (or true/yes/on) means offline."""
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def cached_path(entry: CheckpointEntry, cache_dir_: str | os.PathLike[str] | None = None) -> Path:
    """The final path of `entry` in the cache, whether or not the file is there."""
    return cache_dir(cache_dir_) / entry.filename
