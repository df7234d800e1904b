"""Training configuration: typed dataclasses, the paper's presets, config files and ``--set`` overrides.

A run's configuration is built in layers, each overriding the one before:

1. the defaults of the dataclasses below;
2. a preset (``audio-head``, ``cooperative``, ``full``, ``finetune``, ...: see ``PRESETS``);
3. a config file (YAML, TOML or JSON; nested tables mirror the dataclasses);
4. ``--set key=value`` overrides with dotted keys (``optim.lr=1e-3``, ``data.folds=[1,2]``).

Values are checked against the field types (a typo'd key is an error that suggests the near
miss; ``"1e-4"`` is read as a float for a float field although YAML 1.1 would call it a string).
The resolved configuration is written into the output folder and into every checkpoint, so a
run can be resumed and reproduced from its own folder.

Paper defaults (section 4.4): SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 64,
exponential LR decay per epoch: 1e-4 / 0.95 for audio-head pre-training over 30 epochs (the
AudioSet scale), 5e-5 / 0.98 over 50 epochs for fine-tuning. The authors' ESC-50 protocol file
uses gamma 0.96: preset ``finetune-esc50-protocol``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

STAGES = ("audio-head", "cooperative", "full", "finetune")
HEADS = ("audio", "image", "text")
INIT_NAMES = ("audioclip-full", "audioclip-partial", "esresnext-audioset", "none")


class ConfigError(ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value, unreadable file."""


@dataclass
class ModelConfig:
    """Which architecture, which initial weights, which parts are trained."""

    #: AudioCLIP architecture name or JSON path ("audioclip-rn50" the published size, "audioclip-tiny").
    arch: str = "audioclip-rn50"
    #: Initial weights: audioclip-full | audioclip-partial | esresnext-audioset | PATH | none.
    #: A full AudioCLIP checkpoint initialises every head; an audio-head checkpoint only the audio head
    #: (its classification layer is kept random when its size differs, as the paper's fine-tuning).
    init: str = "audioclip-partial"
    #: Optional second source loaded into the audio head after ``init`` (e.g. esresnext-audioset on top
    #: of CLIP weights for the cooperative stage).
    init_audio: str | None = None
    #: Heads updated by the optimiser in the AudioCLIP stages; the others are frozen teachers in eval mode.
    #: Empty means the stage's default (cooperative/finetune: audio; full: audio, image, text).
    train_heads: list[str] = field(default_factory=list)
    #: Also train the logit scales of the modality pairs that involve a trained head.
    train_logit_scales: bool = True
    #: Train the FBSP filterbank (the learnable time-frequency transform) of the audio head.
    train_fbsp: bool = True
    #: Number of classes of the standalone audio head; 0 = the size of the label vocabulary.
    num_classes: int = 0
    #: Classification loss of the audio-head stage: auto (BCE when any sample has several labels, else
    #: CE), bce, ce.
    loss: Literal["auto", "bce", "ce"] = "auto"
    #: Convert BatchNorm to SyncBatchNorm under DistributedDataParallel.
    sync_bn: bool = False


@dataclass
class DataConfig:
    """Where the samples come from and how they become tensors."""

    #: manifest (CSV/JSONL/Parquet), esc50 or us8k (the official layouts, through audioclip_search.datasets).
    dataset: Literal["manifest", "esc50", "us8k"] = "manifest"
    #: Dataset folder (esc50/us8k), or the folder manifest paths are relative to (default: the manifest's).
    root: str | None = None
    #: Training manifest (dataset=manifest).
    train: str | None = None
    #: Validation manifest (dataset=manifest); without one, ``val_fraction`` of the training rows.
    val: str | None = None
    #: Fraction of training rows held out for validation when there is no ``val`` manifest (by key hash).
    val_fraction: float = 0.0
    #: Cross-validation: null (no folds), "all", or a list of folds; each fold k trains on the others,
    #: validates on k and writes OUT/fold{k}/.
    folds: list[int] | str | None = None
    #: Samples per clip after crop/pad; 0 = the dataset's (ESC-50 5 s, UrbanSound8K 4 s, manifest 5 s).
    clip_samples: int = 0
    sample_rate: int = 44100
    #: Text of a sample: auto (caption if present, else labels), labels, caption.
    text: Literal["auto", "labels", "caption"] = "auto"
    #: Prompt template applied to ``", ".join(labels)`` (the official prompts use "{}").
    template: str = "{}"
    #: Use video frames / pictures: auto (stages that train or distil from the image head, when
    #: the data has images), true, false.
    images: Literal["auto", "true", "false"] = "auto"
    #: Class vocabulary file (one name a line) for multi-label audio-head training; default: labels seen.
    classes: str | None = None
    num_workers: int = 4
    #: Keep decoded audio in memory (small data sets, repeated epochs).
    cache_audio: bool = False
    #: Stop when more than this fraction of a split's samples turned out unreadable.
    max_bad_fraction: float = 0.05
    #: Use only the first N samples of each split (smoke runs); 0 = all.
    limit: int = 0


@dataclass
class OptimConfig:
    """SGD with Nesterov momentum and exponential decay per epoch, as the paper."""

    lr: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    #: ExponentialLR factor applied after every epoch.
    gamma: float = 0.95
    #: Clip the gradient norm (0 = off).
    grad_clip: float = 0.0


@dataclass
class AugmentConfig:
    """Paper section 4.2; applied in training only, on (B, C, T) batches on the training device."""

    enabled: bool = True
    #: Time scaling by max_scale ** U(-1, 1) (1.0 = off).
    time_scale: float = 1.5
    #: Probability of time inversion.
    flip_p: float = 0.5
    #: Random crop/pad to the clip length (off: centre crop/pad as in evaluation).
    random_crop: bool = True
    #: Probability of additive white Gaussian noise, and its SNR range in dB.
    noise_p: float = 0.25
    snr_min_db: float = 10.0
    snr_max_db: float = 120.0


@dataclass
class CheckpointConfig:
    #: Also write the resumable training state every N optimiser steps (0 = at epoch ends only).
    every_steps: int = 0
    #: Metric that picks best.pt: auto (accuracy for classification and fine-tuning, map for multi-label,
    #: val_loss for contrastive), val_loss, accuracy, map, a2t_r1, train_loss.
    best_metric: str = "auto"
    #: Validate every N epochs.
    val_every: int = 1


@dataclass
class LogConfig:
    #: Log (JSONL/CSV/display) every N optimiser steps.
    every_steps: int = 10
    tensorboard: bool = False
    #: auto (rich live display on a terminal, plain lines otherwise), rich, plain, none.
    display: Literal["auto", "rich", "plain", "none"] = "auto"


@dataclass
class TrainConfig:
    stage: Literal["audio-head", "cooperative", "full", "finetune"] = "cooperative"
    #: Name of the preset the configuration started from (informational).
    preset: str = ""
    seed: int = 0
    #: torch.use_deterministic_algorithms and seeded everything; with ``threads`` fixed, a resumed run
    #: reproduces the uninterrupted one bit for bit on CPU.
    deterministic: bool = False
    device: str = "auto"
    #: auto (bf16 autocast on CUDA, fp16 + GradScaler where bf16 is missing; fp32 on CPU), fp32, bf16, fp16.
    precision: str = "auto"
    #: torch intra-op threads (0 = torch's default).
    threads: int = 0
    epochs: int = 30
    #: Per-process micro-batch; the effective batch is batch_size * grad_accum * world size.
    batch_size: int = 64
    eval_batch_size: int = 64
    grad_accum: int = 1
    #: Stop after this many optimiser steps in all (0 = run all epochs).
    max_steps: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = cls()
        apply_mapping(config, data)
        validate(config)
        return config

    # -- derived -------------------------------------------------------------------------------

    @property
    def in_audioclip(self) -> bool:
        """The stages that train inside AudioCLIP (all but the standalone audio head)."""
        return self.stage != "audio-head"

    def trained_heads(self) -> list[str]:
        if self.stage == "audio-head":
            return ["audio"]
        if self.model.train_heads:
            return list(self.model.train_heads)
        return list(HEADS) if self.stage == "full" else ["audio"]


# ---------------------------------------------------------------------------------------------
# presets


def _preset(**values: Any) -> dict[str, Any]:
    return values


#: Each preset is a mapping applied on top of the dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Standalone ESResNeXt-fbsp classification on AudioSet-style data (paper 4.3, "Standalone"):
    # multi-label BCE over the label vocabulary, 1e-4 / 0.95, 30 epochs.
    "audio-head": _preset(
        stage="audio-head", epochs=30,
        model={"init": "esresnext-audioset"},
        optim={"lr": 1e-4, "gamma": 0.95},
        checkpoint={"best_metric": "auto"},
    ),
    # Standalone fine-tuning of the audio head to ESC-50 / UrbanSound8K per fold (CE, 5e-5 / 0.98, 50 epochs).
    "audio-head-finetune": _preset(
        stage="audio-head", epochs=50,
        model={"init": "esresnext-audioset"},
        data={"dataset": "esc50", "folds": "all"},
        optim={"lr": 5e-5, "gamma": 0.98},
    ),
    # The audio head inside AudioCLIP, image and text heads frozen as teachers (paper 4.3, "Cooperative").
    "cooperative": _preset(
        stage="cooperative", epochs=30,
        model={"init": "audioclip-partial", "train_heads": ["audio"]},
        optim={"lr": 1e-4, "gamma": 0.95},
    ),
    # All three heads trained together on audio, video frames and label text (paper 4.3, "AudioCLIP Training").
    "full": _preset(
        stage="full", epochs=30,
        model={"init": "audioclip-partial", "train_heads": ["audio", "image", "text"]},
        optim={"lr": 1e-4, "gamma": 0.95},
    ),
    # The audio head fine-tuned on a target data set with its text labels, per fold (paper 4.3/4.4).
    "finetune": _preset(
        stage="finetune", epochs=50,
        model={"init": "audioclip-full", "train_heads": ["audio"]},
        data={"dataset": "esc50", "folds": "all", "images": "false"},
        optim={"lr": 5e-5, "gamma": 0.98},
    ),
    # As finetune, with the authors' ESC-50 protocol file's decay (gamma 0.96).
    "finetune-esc50-protocol": _preset(
        stage="finetune", epochs=50,
        model={"init": "audioclip-full", "train_heads": ["audio"]},
        data={"dataset": "esc50", "folds": "all", "images": "false"},
        optim={"lr": 5e-5, "gamma": 0.96},
    ),
}


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    return {
        "audio-head": "standalone ESResNeXt-fbsp classification (AudioSet-style pre-training): 1e-4/0.95, 30 ep",
        "audio-head-finetune": "standalone audio head fine-tuned per fold (ESC-50/US8K, CE): 5e-5/0.98, 50 ep",
        "cooperative": "audio head inside AudioCLIP, image+text heads frozen teachers: 1e-4/0.95, 30 ep",
        "full": "all three heads trained on audio + frame + label text: 1e-4/0.95, 30 ep",
        "finetune": "audio head fine-tuned with text labels per fold, text/image frozen: 5e-5/0.98, 50 ep",
        "finetune-esc50-protocol": "finetune with the authors' ESC-50 protocol decay: 5e-5/0.96, 50 ep",
    }


# ---------------------------------------------------------------------------------------------
# loading and overriding


def _field_types(obj: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: hints[f.name] for f in dataclasses.fields(obj)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` (from YAML/TOML/JSON or a --set string) as an instance of the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~"))
        if is_null and type(None) in args:
            return None
        errors = []
        # Try the non-None members in order (str last, so "[1,2]" becomes a list for list[int] | str).
        members = sorted((a for a in args if a is not type(None)), key=lambda a: a is str)
        for member in members:
            try:
                return _coerce(value, member, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{key}: cannot use {value!r}")
    if origin is Literal:
        text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, bool) else str(value)
        text = text.lower() if isinstance(value, bool) else text
        if text not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, args))}")
        return text
    if origin is list:
        (inner,) = args or (Any,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                value = _parse_scalar(text)
            else:
                value = [v.strip() for v in text.split(",") if v.strip()] if text else []
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.strip().replace("_", ""))
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
            if number.is_integer():
                return int(number)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _parse_scalar(text: str) -> Any:
    """A --set value: YAML syntax (numbers, true/false, null, [lists], quoted strings)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _unknown(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; known here: {', '.join(sorted(known))}")


def apply_mapping(config: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested mapping into a config dataclass in place, checking keys and types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table/mapping, got {type(data).__name__}")
    types_ = _field_types(config)
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        full = f"{prefix}{key}"
        if key not in types_:
            raise _unknown(full, list(types_))
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            apply_mapping(current, value, prefix=f"{full}.")
        else:
            setattr(config, key, _coerce(value, types_[key], full))


def set_value(config: TrainConfig, assignment: str) -> None:
    """Apply one ``key=value`` override (dotted key, YAML-syntax value)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value (e.g. optim.lr=1e-3)")
    key, text = assignment.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key:
        raise ConfigError(f"--set {assignment!r}: empty key")
    target: Any = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        types_ = _field_types(target)
        if part not in types_ or not dataclasses.is_dataclass(getattr(target, part)):
            sections = [k for k in types_ if dataclasses.is_dataclass(getattr(target, k))]
            raise _unknown(".".join(parts[: i + 1]), sections)
        target = getattr(target, part)
    types_ = _field_types(target)
    name = parts[-1]
    if name not in types_:
        raise _unknown(key, list(types_))
    if dataclasses.is_dataclass(getattr(target, name)):
        value = _parse_scalar(text)
        apply_mapping(getattr(target, name), value, prefix=f"{key}.")
        return
    tp = types_[name]
    # Strings are taken literally (a template "{} sound" is not YAML); other types parse YAML first.
    value: Any = text if tp is str else _parse_scalar(text) if text.strip() else text
    if isinstance(value, str | int | float | bool | list | type(None)):
        setattr(target, name, _coerce(value, tp, key))
    else:
        setattr(target, name, _coerce(text, tp, key))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file as a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/mapping, got {type(data).__name__}")
    return data


def build_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """defaults <- base (a saved config) <- preset <- config file <- --set overrides, then validated."""
    config = TrainConfig()
    if base is not None:
        apply_mapping(config, base)
    file_data = read_config_file(config_file) if config_file is not None else {}
    preset_name = preset or file_data.get("preset") or None
    if preset_name:
        if preset_name not in PRESETS:
            close = difflib.get_close_matches(str(preset_name), list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown preset {preset_name!r}{hint}; presets: {', '.join(PRESETS)}")
        apply_mapping(config, copy.deepcopy(PRESETS[preset_name]))
        config.preset = str(preset_name)
    if file_data:
        apply_mapping(config, file_data)
    for assignment in overrides:
        set_value(config, assignment)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Cross-field checks, with one message per problem."""
    problems: list[str] = []
    positive = {
        "epochs": config.epochs, "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size,
        "grad_accum": config.grad_accum, "data.sample_rate": config.data.sample_rate,
        "checkpoint.val_every": config.checkpoint.val_every, "log.every_steps": config.log.every_steps,
    }
    problems += [f"{k} must be >= 1, got {v}" for k, v in positive.items() if v < 1]
    non_negative = {
        "max_steps": config.max_steps, "threads": config.threads, "data.clip_samples": config.data.clip_samples,
        "data.num_workers": config.data.num_workers, "data.limit": config.data.limit,
        "checkpoint.every_steps": config.checkpoint.every_steps, "model.num_classes": config.model.num_classes,
    }
    problems += [f"{k} must be >= 0, got {v}" for k, v in non_negative.items() if v < 0]
    if config.optim.lr <= 0:
        problems.append(f"optim.lr must be > 0, got {config.optim.lr}")
    if not 0 < config.optim.gamma <= 1:
        problems.append(f"optim.gamma must be in (0, 1], got {config.optim.gamma}")
    if not 0 <= config.optim.momentum < 1:
        problems.append(f"optim.momentum must be in [0, 1), got {config.optim.momentum}")
    if config.optim.nesterov and config.optim.momentum == 0:
        problems.append("optim.nesterov needs optim.momentum > 0")
    if config.optim.weight_decay < 0 or config.optim.grad_clip < 0:
        problems.append("optim.weight_decay and optim.grad_clip must be >= 0")
    aug = config.augment
    if aug.time_scale < 1:
        problems.append(f"augment.time_scale is the largest factor and must be >= 1, got {aug.time_scale}")
    for name in ("flip_p", "noise_p"):
        p = getattr(aug, name)
        if not 0 <= p <= 1:
            problems.append(f"augment.{name} must be in [0, 1], got {p}")
    if aug.snr_min_db > aug.snr_max_db:
        problems.append(f"augment.snr_min_db ({aug.snr_min_db}) is above augment.snr_max_db ({aug.snr_max_db})")
    if not 0 <= config.data.val_fraction < 1:
        problems.append(f"data.val_fraction must be in [0, 1), got {config.data.val_fraction}")
    if not 0 <= config.data.max_bad_fraction <= 1:
        problems.append(f"data.max_bad_fraction must be in [0, 1], got {config.data.max_bad_fraction}")
    folds = config.data.folds
    if isinstance(folds, str) and folds != "all":
        problems.append(f"data.folds must be null, 'all' or a list of fold numbers, got {folds!r}")
    bad_heads = [h for h in config.model.train_heads if h not in HEADS]
    if bad_heads:
        problems.append(f"model.train_heads: unknown head(s) {', '.join(bad_heads)}; heads: {', '.join(HEADS)}")
    if config.stage in ("cooperative", "finetune") and config.model.train_heads and \
            set(config.model.train_heads) != {"audio"}:
        problems.append(f"the {config.stage} stage trains the audio head only (model.train_heads=[audio]); "
                        f"use stage=full to train the image or text head")
    if config.precision not in ("auto", "fp32", "bf16", "fp16"):
        problems.append(f"precision must be auto, fp32, bf16 or fp16, got {config.precision!r}")
    metrics = ("auto", "val_loss", "accuracy", "map", "a2t_r1", "train_loss")
    if config.checkpoint.best_metric not in metrics:
        problems.append(f"checkpoint.best_metric must be one of {', '.join(metrics)}, "
                        f"got {config.checkpoint.best_metric!r}")
    if config.data.dataset == "manifest" and not config.data.train:
        problems.append("data.train (a training manifest) is required when data.dataset=manifest")
    if config.data.dataset in ("esc50", "us8k") and not config.data.root:
        problems.append(f"data.root (the {config.data.dataset} folder) is required when "
                        f"data.dataset={config.data.dataset}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def dump_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
