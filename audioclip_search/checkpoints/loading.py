"""Reading checkpoint files safely and turning them into a ready AudioCLIP model.

Every file goes through `torch.load(..., weights_only=True)`: a checkpoint that needs arbitrary
Python objects to unpickle is refused, never executed. Keys are checked strictly, and a mismatch
is reported readably (counts, the first keys of each kind, shapes) instead of as a wall of text.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError
from .download import _lookup, resolve_checkpoint
from .registry import CheckpointEntry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from ..model import AudioCLIP, AudioCLIPConfig

PathLike = str | os.PathLike[str]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_REPORT_LIMIT = 10


# --------------------------------------------------------------------------------------------
# reading files


@dataclass
class CheckpointFile:
    """What a checkpoint file holds: the weights and whatever it says about its architecture."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    arch: str | None = None
    config: dict | None = None
    metadata_keys: list[str] = field(default_factory=list)


def _sniff(path: Path) -> str:
    """'zip' (torch.save since 1.6), 'pickle' (the legacy format) or 'other'."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return "other"
    if head == b"PK":
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "other"


def _load_failure_reason(exc: BaseException, kind: str) -> str:
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({match.group(1)})" if match else ""
        return (f"it needs arbitrary Python objects{what} to unpickle; only weights-only checkpoints "
                f"(tensors and plain containers) are loaded, for safety")
    if kind == "other":
        return "not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
    if kind == "zip" or isinstance(exc, EOFError):
        return "the file is corrupt or truncated (its data cannot be read back)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"the file is corrupt or not a checkpoint ({first[:200]})"


def _torch_load(path: Path) -> Any:
    import torch

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    # A torch.save zip archive is memory-mapped: tensors are read from the page cache when first
    # touched, so a command that uses one tower never reads the others (the legacy pickle format
    # cannot be mapped and is read whole).
    mmap = _sniff(path) == "zip"
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # torch raises a zoo of types for bad files
        raise CheckpointError(f"{path}: {_load_failure_reason(exc, _sniff(path))}") from None


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DDP "module." (or torch.compile "_orig_mod.") prefix carried by every key."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
                changed = True
    return state_dict


def _describe_keys(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:8])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def read_checkpoint(path: PathLike) -> CheckpointFile:
    """Load a file and find its state dict: raw, or wrapped under "state_dict"/"model" together
    with optional "arch" (a config name) or "config" (a config dict), as our trainer saves."""
    path = Path(path).expanduser()
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a state dict (the file holds a {type(obj).__name__})")
    if not obj:
        raise CheckpointError(f"{path}: the state dict is empty")
    arch: str | None = None
    config: dict | None = None
    metadata: list[str] = []
    if _is_tensor_dict(obj):
        state = dict(obj)
    else:
        wrapper = next((k for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if wrapper is None:
            keys = [str(k) for k in obj]
            raise CheckpointError(
                f"{path}: no state dict found: the top-level keys are {_describe_keys(keys)}, expected "
                f"parameter tensors or a 'state_dict' / 'model' entry"
            )
        inner = obj[wrapper]
        if not _is_tensor_dict(inner):
            import torch

            bad = [str(k) for k, v in inner.items() if not isinstance(v, torch.Tensor)]
            raise CheckpointError(
                f"{path}: the {wrapper!r} entry is not a state dict"
                + (f" (non-tensor entries: {_describe_keys(bad)})" if bad else " (it is empty)")
            )
        state = dict(inner)
        if isinstance(obj.get("arch"), str):
            arch = obj["arch"]
        if isinstance(obj.get("config"), Mapping):
            config = dict(obj["config"])
        metadata = [str(k) for k in obj if k != wrapper]
    return CheckpointFile(path=path, state_dict=_strip_prefixes(state), arch=arch, config=config,
                          metadata_keys=metadata)


def load_state_dict_file(path: PathLike) -> dict[str, torch.Tensor]:
    """`{name: tensor}` from a checkpoint file (raw or wrapped; any "module." prefix removed).

    Always `torch.load(path, map_location="cpu", weights_only=True)`; an unreadable, corrupt or
    unsafe file is a CheckpointError naming the file and the reason.
    """
    return read_checkpoint(path).state_dict


# --------------------------------------------------------------------------------------------
# key checks


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _first(keys: list[str], limit: int = _REPORT_LIMIT) -> str:
    shown = "\n".join(f"    {k}" for k in keys[:limit])
    if len(keys) > limit:
        shown += f"\n    ... and {len(keys) - limit} more"
    return shown


@dataclass
class KeyReport:
    """How a state dict compares with a model's own."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, model's shape, checkpoint's

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key{'s' * (len(self.missing) != 1)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key{'s' * (len(self.unexpected) != 1)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch{'es' * (len(self.mismatched) != 1)}")
        return ", ".join(parts) or "all keys match"

    def details(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"  missing from the checkpoint ({len(self.missing)}):\n{_first(self.missing)}")
        if self.unexpected:
            lines.append(
                f"  unexpected in the checkpoint ({len(self.unexpected)}):\n{_first(self.unexpected)}"
            )
        if self.mismatched:
            rows = [f"{k}: model expects {_fmt_shape(want)}, checkpoint has {_fmt_shape(got)}"
                    for k, want, got in self.mismatched]
            lines.append(f"  shape mismatches ({len(self.mismatched)}):\n{_first(rows)}")
        return "\n".join(lines)


def compare_keys(expected: Mapping[str, Any], state_dict: Mapping[str, Any]) -> KeyReport:
    """Compare a model's state dict (or any name->tensor map) with a checkpoint's."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, _shape(expected[k]), _shape(state_dict[k]))
        for k in expected
        if k in state_dict and _shape(expected[k]) != _shape(state_dict[k])
    ]
    return KeyReport(missing, unexpected, mismatched)


def _looks_like_audio_head(state_dict: Mapping[str, Any]) -> bool:
    keys = list(state_dict)
    return (not any(k.startswith(("visual.", "transformer.")) for k in keys)
            and any(k.startswith("fbsp.") for k in keys)
            and any(k.startswith("layer1.") for k in keys))


def _guess_arch(state_dict: Mapping[str, Any], exclude: str | None) -> str | None:
    """The shipped architecture whose parameter shapes match the state dict exactly, if any."""
    try:
        import torch

        from ..model import AudioCLIP, available_configs

        for name in available_configs():
            if name == exclude:
                continue
            with torch.device("meta"):
                candidate = AudioCLIP(name)
            if compare_keys(candidate.state_dict(), state_dict).ok:
                return name
    except Exception:  # a hint only; never let it hide the real report
        return None
    return None


def check_keys(model: nn.Module, state_dict: Mapping[str, Any], *, source: str | None = None) -> None:
    """Strict check: every model key present with the same shape, and no extra keys.

    Raises CheckpointError with a readable report: counts, then the first ~10 missing and
    unexpected keys and the shape mismatches (key: model's shape vs checkpoint's).
    """
    report = compare_keys(model.state_dict(), state_dict)
    if report.ok:
        return
    config = getattr(model, "config", None)
    arch = getattr(config, "name", None)
    what = f"the {arch} model" if arch else f"the {type(model).__name__} model"
    head = f"{source}: " if source else ""
    message = f"{head}checkpoint does not fit {what}: {report.summary()}\n{report.details()}"
    hints = []
    if _looks_like_audio_head(state_dict):
        hints.append("this looks like an audio-head-only checkpoint (ESResNeXt-fbsp): load it with "
                     "load_audio_head(model, path) into a built model instead")
    elif arch is not None and len(report.mismatched) >= 2:  # one odd tensor is not a wrong arch
        guess = _guess_arch(state_dict, exclude=arch)
        if guess:
            hints.append(f"its shapes match the {guess!r} architecture: pass arch={guess!r}")
    if hints:
        message += "\n  hint: " + "\n  hint: ".join(hints)
    raise CheckpointError(message)


# --------------------------------------------------------------------------------------------
# building models


def _config_from(arch: Any, ckpt: CheckpointFile, entry: CheckpointEntry | None) -> AudioCLIPConfig:
    """arch argument > config stored in the file > arch name stored in the file > registry > default."""
    from ..model import AudioCLIPConfig, load_config
    from ..model.config import DEFAULT_ARCH

    try:
        if isinstance(arch, AudioCLIPConfig):
            return arch
        if arch is not None:
            return load_config(arch)
        if ckpt.config is not None:
            return AudioCLIPConfig.from_dict(ckpt.config)
        if ckpt.arch is not None:
            return load_config(ckpt.arch)
        return load_config(entry.arch if entry is not None else DEFAULT_ARCH)
    except (ValueError, TypeError, OSError) as exc:
        raise CheckpointError(f"{ckpt.path}: cannot build the model: {exc}") from None


def _audio_head_refusal(name: str) -> CheckpointError:
    return CheckpointError(
        f"{name!r} is an audio-head checkpoint (the ESResNeXt-fbsp audio head alone), not a full "
        f"AudioCLIP model: build a model and call load_audio_head(model, {name!r}) to put it in "
        f"model.audio, or load a full checkpoint such as 'audioclip-full'"
    )


def load_model(
    name_or_path: PathLike | CheckpointEntry = "audioclip-full",
    device: str = "auto",
    arch: str | AudioCLIPConfig | None = None,
    cache_dir: PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
    *,
    registry: Mapping[str, CheckpointEntry] | None = None,
) -> AudioCLIP:
    """A ready AudioCLIP (eval mode, on the resolved device) from a registered name or a file.

    Names are downloaded into the cache on first use. The architecture comes from `arch`, else
    the file's own "config"/"arch" entry, else the registry entry, else "audioclip-rn50". Keys are
    checked strictly; audio-head-only checkpoints are refused in favour of `load_audio_head`.
    """
    from ..devices import resolve_device

    dev = resolve_device(device)  # fail fast on an impossible device, before reading 500 MB
    entry, _ = _lookup(name_or_path, registry)
    if entry is not None and entry.kind == "audio-head":
        raise _audio_head_refusal(entry.name)
    path = resolve_checkpoint(entry if entry is not None else name_or_path, cache_dir,
                              offline=offline, progress=progress, registry=registry)
    ckpt = read_checkpoint(path)
    if entry is None and arch is None and ckpt.config is None and ckpt.arch is None \
            and _looks_like_audio_head(ckpt.state_dict):
        raise _audio_head_refusal(str(path))
    config = _config_from(arch, ckpt, entry)
    model = build_from_state_dict(config, ckpt.state_dict, source=str(path))
    return model.to(dev).eval()


def build_from_state_dict(
    config: AudioCLIPConfig, state_dict: Mapping[str, torch.Tensor], *, source: str | None = None
) -> AudioCLIP:
    """An AudioCLIP whose tensors are the checkpoint's own (keys checked strictly).

    The module is built on the meta device and the tensors are assigned, not copied: no random
    initial values are drawn only to be overwritten, and memory-mapped tensors stay mapped, so a
    command reads only the pages of the tower it runs. A tensor stored in another dtype than the
    model's is converted.
    """
    import torch

    from ..model import AudioCLIP

    with torch.device("meta"):
        model = AudioCLIP(config)
    check_keys(model, state_dict, source=source)
    expected = model.state_dict()
    tensors = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    empty = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:
        raise CheckpointError(f"{source or 'checkpoint'}: no values for {_describe_keys(empty)}")
    return model


@dataclass
class AudioHeadReport:
    """What `load_audio_head` did: how many tensors it loaded and what it left as it was."""

    path: Path
    loaded: int
    skipped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # key, model's shape, checkpoint's
    kept: list[str]  # model tensors the checkpoint does not have (recomputable buffers)
    ignored: int = 0  # tensors of other heads in a full AudioCLIP checkpoint

    def __str__(self) -> str:
        text = f"loaded {self.loaded} audio-head tensors from {self.path}"
        if self.skipped:
            rows = "; ".join(f"{k} (model {_fmt_shape(m)}, checkpoint {_fmt_shape(c)})"
                             for k, m, c in self.skipped)
            text += f"; skipped for a shape difference, kept the model's own: {rows}"
        if self.kept:
            text += f"; not in the checkpoint, kept the model's own: {', '.join(self.kept)}"
        if self.ignored:
            text += f"; ignored {self.ignored} tensors of the image and text heads"
        return text


_RECOMPUTABLE = ("window",)


def load_audio_head(
    model: nn.Module,
    name_or_path: PathLike | CheckpointEntry = "esresnext-audioset",
    cache_dir: PathLike | None = None,
    offline: bool | None = None,
    progress: bool = True,
    *,
    registry: Mapping[str, CheckpointEntry] | None = None,
) -> AudioHeadReport:
    """Load ESResNeXt-fbsp weights into `model.audio` (or into `model` if it is the audio head).

    The final `fc` is skipped when its shape differs (AudioSet's 527 classes vs the 1024-d
    embedding) and the model keeps its own; every other tensor must match. A full AudioCLIP
    checkpoint also works: its "audio." tensors are used. Returns what was loaded and skipped.
    """
    target = getattr(model, "audio", model)
    path = resolve_checkpoint(name_or_path, cache_dir, offline=offline, progress=progress, registry=registry)
    state = load_state_dict_file(path)
    ignored = 0
    if any(k.startswith("audio.") for k in state):
        audio = {k[len("audio."):]: v for k, v in state.items() if k.startswith("audio.")}
        ignored = len(state) - len(audio)
        state = audio
    expected = target.state_dict()
    report = compare_keys(expected, state)
    skipped = [(k, want, got) for k, want, got in report.mismatched if k.split(".")[0] == "fc"]
    skip_keys = {k for k, _, _ in skipped}
    kept = [k for k in report.missing if k in _RECOMPUTABLE]
    blocking = KeyReport(
        missing=[k for k in report.missing if k not in _RECOMPUTABLE],
        unexpected=report.unexpected,
        mismatched=[m for m in report.mismatched if m[0] not in skip_keys],
    )
    if not blocking.ok:
        raise CheckpointError(
            f"{path}: checkpoint does not fit the audio head: {blocking.summary()}\n{blocking.details()}"
        )
    usable = {k: v for k, v in state.items() if k not in skip_keys}
    target.load_state_dict(usable, strict=False)
    result = AudioHeadReport(path=Path(path), loaded=len(usable), skipped=skipped, kept=kept, ignored=ignored)
    logger.info("%s", result)
    return result
