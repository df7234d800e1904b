"""Training configuration: typed dataclasses, the paper's presets, config files and ``--set`` overrides.

A run's configuration is built in layers, each overriding the one before:

1. the defaults of the pydantic models below;
2. a preset (``audio-head``, ``cooperative``, ``full``, ``finetune``, ...: see ``PRESETS``);
3. a config file (YAML, TOML or JSON; nested tables mirror the models);
4. ``--set key=value`` overrides with dotted keys (``optim.lr=1e-3``, ``data.folds=[1,2]``).

The layers are merged as plain mappings, then validated once by pydantic (``extra="forbid"``,
field constraints): a typo'd key is an error that suggests the near miss, a wrong type or an
out-of-range value is one line naming the key, and ``"1e-4"`` is read as a float for a float
field although YAML 1.1 would call it a string.
The resolved configuration is written into the output folder and into every checkpoint, so a
run can be resumed and reproduced from its own folder.

Paper defaults (section 4.4): SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 64,
exponential LR decay per epoch: 1e-4 / 0.95 for audio-head pre-training over 30 epochs (the
AudioSet scale), 5e-5 / 0.98 over 50 epochs for fine-tuning. The authors' ESC-50 protocol file
uses gamma 0.96: preset ``finetune-esc50-protocol``.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import AudioClipSearchError

STAGES = ("audio-head", "cooperative", "full", "finetune")
HEADS = ("audio", "image", "text")
INIT_NAMES = ("audioclip-full", "audioclip-partial", "esresnext-audioset", "none")

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# field types: what a value from YAML/TOML/JSON or a --set string may be


def _integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, str):
        try:
            number = float(value.strip().replace("_", ""))
        except ValueError:
            return value  # pydantic reports it
        return int(number) if number.is_integer() else value
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return value.strip() if isinstance(value, str) else value


def _choice(value: Any) -> Any:
    """A choice written as YAML true/false or a number ("images: true") is its text."""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return value


def _nullish(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~"):
        return None
    return value


def _listish(value: Any) -> Any:
    """``a,b`` or ``[a, b]`` (a --set string) as a list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return _parse_scalar(text)
        return [v.strip() for v in text.split(",") if v.strip()] if text else []
    return list(value) if isinstance(value, tuple) else value


def _folds(value: Any) -> list[int] | str | None:
    """null, "all", or fold numbers (a list, ``1,2`` or ``[1, 2]``)."""
    original = value
    value = _nullish(value)
    if value is None or value == "all":
        return value
    value = _listish(value)
    if isinstance(value, list):
        try:
            folds = [_integer(v) for v in value]
        except ValueError:
            folds = []
        if all(isinstance(f, int) for f in folds) and len(folds) == len(value):
            return folds
    raise ValueError(f"must be null, 'all' or a list of fold numbers, got {original!r}")


Integer = Annotated[int, BeforeValidator(_integer)]
Count = Annotated[Integer, Field(ge=0)]
Positive = Annotated[Integer, Field(ge=1)]
Number = Annotated[float, BeforeValidator(_number)]
Probability = Annotated[Number, Field(ge=0, le=1)]
Flag = bool
Choice = Annotated[T, BeforeValidator(_choice)]
Listish = Annotated[list[T], BeforeValidator(_listish)]
OptionalText = Annotated[str | None, BeforeValidator(_nullish)]


def _complete(info: ValidationInfo) -> bool:
    """Cross-field checks run on a whole configuration (build_config), not on a single --set."""
    return bool(info.context and info.context.get("complete"))


def _problem(message: str) -> NoReturn:
    raise PydanticCustomError("config_problem", "{problem}", {"problem": message})


class _Section(BaseModel):
    """A table of the configuration: unknown keys are errors; ``every-steps`` means ``every_steps``."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _dashes(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {str(k).replace("-", "_"): v for k, v in data.items()}
        return data


class ConfigError(AudioClipSearchError, ValueError):
    """A configuration that cannot be used: unknown key, wrong type, bad value, unreadable file."""


class ModelConfig(_Section):
    """Which architecture, which initial weights, which parts are trained."""

    #: AudioCLIP architecture name or JSON path ("audioclip-rn50" the published size, "audioclip-tiny").
    arch: str = "audioclip-rn50"
    #: Initial weights: audioclip-full | audioclip-partial | esresnext-audioset | PATH | none.
    #: A full AudioCLIP checkpoint initialises every head; an audio-head checkpoint only the audio head
    #: (its classification layer is kept random when its size differs, as the paper's fine-tuning).
    init: str = "audioclip-partial"
    #: Optional second source loaded into the audio head after ``init`` (e.g. esresnext-audioset on top
    #: of CLIP weights for the cooperative stage).
    init_audio: OptionalText = None
    #: Heads updated by the optimiser in the AudioCLIP stages; the others are frozen teachers in eval mode.
    #: Empty means the stage's default (cooperative/finetune: audio; full: audio, image, text).
    train_heads: Listish[str] = Field(default_factory=list)
    #: Also train the logit scales of the modality pairs that involve a trained head.
    train_logit_scales: Flag = True
    #: Train the FBSP filterbank (the learnable time-frequency transform) of the audio head.
    train_fbsp: Flag = True
    #: Number of classes of the standalone audio head; 0 = the size of the label vocabulary.
    num_classes: Count = 0
    #: Classification loss of the audio-head stage: auto (BCE when any sample has several labels, else
    #: CE), bce, ce.
    loss: Choice[Literal["auto", "bce", "ce"]] = "auto"
    #: Convert BatchNorm to SyncBatchNorm under DistributedDataParallel.
    sync_bn: Flag = False

    @field_validator("train_heads")
    @classmethod
    def _known_heads(cls, heads: list[str]) -> list[str]:
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise ValueError(f"unknown head(s) {', '.join(unknown)}; heads: {', '.join(HEADS)}")
        return heads


class DataConfig(_Section):
    """Where the samples come from and how they become tensors."""

    #: manifest (CSV/JSONL/Parquet), esc50 or us8k (the official layouts, through audioclip_search.datasets).
    dataset: Choice[Literal["manifest", "esc50", "us8k"]] = "manifest"
    #: Dataset folder (esc50/us8k), or the folder manifest paths are relative to (default: the manifest's).
    root: OptionalText = None
    #: Training manifest (dataset=manifest).
    train: OptionalText = None
    #: Validation manifest (dataset=manifest); without one, ``val_fraction`` of the training rows.
    val: OptionalText = None
    #: Fraction of training rows held out for validation when there is no ``val`` manifest (by key hash).
    val_fraction: Annotated[Number, Field(ge=0, lt=1)] = 0.0
    #: Cross-validation: null (no folds), "all", or a list of folds; each fold k trains on the others,
    #: validates on k and writes OUT/fold{k}/.
    folds: Annotated[list[int] | str | None, PlainValidator(_folds)] = None
    #: Samples per clip after crop/pad; 0 = the dataset's (ESC-50 5 s, UrbanSound8K 4 s, manifest 5 s).
    clip_samples: Count = 0
    sample_rate: Positive = 44100
    #: Text of a sample: auto (caption if present, else labels), labels, caption.
    text: Choice[Literal["auto", "labels", "caption"]] = "auto"
    #: Prompt template applied to ``", ".join(labels)`` (the official prompts use "{}").
    template: str = "{}"
    #: Use video frames / pictures: auto (stages that train or distil from the image head, when
    #: the data has images), true, false.
    images: Choice[Literal["auto", "true", "false"]] = "auto"
    #: Class vocabulary file (one name a line) for multi-label audio-head training; default: labels seen.
    classes: OptionalText = None
    num_workers: Count = 4
    #: Keep decoded audio in memory (small data sets, repeated epochs).
    cache_audio: Flag = False
    #: Stop when more than this fraction of a split's samples turned out unreadable.
    max_bad_fraction: Annotated[Number, Field(ge=0, le=1)] = 0.05
    #: Use only the first N samples of each split (smoke runs); 0 = all.
    limit: Count = 0

    @model_validator(mode="after")
    def _sources(self, info: ValidationInfo) -> DataConfig:
        if _complete(info):
            if self.dataset == "manifest" and not self.train:
                _problem("data.train (a training manifest) is required when data.dataset=manifest")
            if self.dataset in ("esc50", "us8k") and not self.root:
                _problem(f"data.root (the {self.dataset} folder) is required when data.dataset={self.dataset}")
        return self


class OptimConfig(_Section):
    """SGD with Nesterov momentum and exponential decay per epoch, as the paper."""

    lr: Annotated[Number, Field(gt=0)] = 1e-4
    momentum: Annotated[Number, Field(ge=0, lt=1)] = 0.9
    nesterov: Flag = True
    weight_decay: Annotated[Number, Field(ge=0)] = 5e-4
    #: ExponentialLR factor applied after every epoch.
    gamma: Annotated[Number, Field(gt=0, le=1)] = 0.95
    #: Clip the gradient norm (0 = off).
    grad_clip: Annotated[Number, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _nesterov(self, info: ValidationInfo) -> OptimConfig:
        if _complete(info) and self.nesterov and self.momentum == 0:
            _problem("optim.nesterov needs optim.momentum > 0")
        return self


class AugmentConfig(_Section):
    """Paper section 4.2; applied in training only, on (B, C, T) batches on the training device."""

    enabled: Flag = True
    #: Time scaling by max_scale ** U(-1, 1) (1.0 = off).
    time_scale: Annotated[Number, Field(ge=1)] = 1.5
    #: Probability of time inversion.
    flip_p: Probability = 0.5
    #: Random crop/pad to the clip length (off: centre crop/pad as in evaluation).
    random_crop: Flag = True
    #: Probability of additive white Gaussian noise, and its SNR range in dB.
    noise_p: Probability = 0.25
    snr_min_db: Number = 10.0
    snr_max_db: Number = 120.0

    @model_validator(mode="after")
    def _snr_range(self, info: ValidationInfo) -> AugmentConfig:
        if _complete(info) and self.snr_min_db > self.snr_max_db:
            _problem(f"augment.snr_min_db ({self.snr_min_db}) is above augment.snr_max_db ({self.snr_max_db})")
        return self


class CheckpointConfig(_Section):
    """When the resumable state is written and which metric picks best.pt."""

    #: Also write the resumable training state every N optimiser steps (0 = at epoch ends only).
    every_steps: Count = 0
    #: Metric that picks best.pt: auto (accuracy for classification and fine-tuning, map for multi-label,
    #: val_loss for contrastive), val_loss, accuracy, map, a2t_r1, train_loss.
    best_metric: Choice[Literal["auto", "val_loss", "accuracy", "map", "a2t_r1", "train_loss"]] = "auto"
    #: Validate every N epochs.
    val_every: Positive = 1


class LogConfig(_Section):
    """How often and where progress is recorded."""

    #: Log (JSONL/CSV/display) every N optimiser steps.
    every_steps: Positive = 10
    tensorboard: Flag = False
    #: auto (rich live display on a terminal, plain lines otherwise), rich, plain, none.
    display: Choice[Literal["auto", "rich", "plain", "none"]] = "auto"


class TrainConfig(_Section):
    """A whole run: the stage, the loop's settings and one section per concern."""

    stage: Choice[Literal["audio-head", "cooperative", "full", "finetune"]] = "cooperative"
    #: Name of the preset the configuration started from (informational).
    preset: str = ""
    seed: Integer = 0
    #: torch.use_deterministic_algorithms and seeded everything; with ``threads`` fixed, a resumed run
    #: reproduces the uninterrupted one bit for bit on CPU.
    deterministic: Flag = False
    device: str = "auto"
    #: auto (bf16 autocast on CUDA, fp16 + GradScaler where bf16 is missing; fp32 on CPU), fp32, bf16, fp16.
    precision: Choice[Literal["auto", "fp32", "bf16", "fp16"]] = "auto"
    #: torch intra-op threads (0 = torch's default).
    threads: Count = 0
    epochs: Positive = 30
    #: Per-process micro-batch; the effective batch is batch_size * grad_accum * world size.
    batch_size: Positive = 64
    eval_batch_size: Positive = 64
    grad_accum: Positive = 1
    #: Stop after this many optimiser steps in all (0 = run all epochs).
    max_steps: Count = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A complete configuration from a nested mapping (a saved config.yaml), fully checked."""
        return _validated(data, complete=True)

    @model_validator(mode="after")
    def _stage_heads(self, info: ValidationInfo) -> TrainConfig:
        if _complete(info) and self.stage in ("cooperative", "finetune") and self.model.train_heads \
                and set(self.model.train_heads) != {"audio"}:
            _problem(f"the {self.stage} stage trains the audio head only (model.train_heads=[audio]); "
                     f"use stage=full to train the image or text head")
        return self

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


#: Each preset is a mapping applied on top of the model defaults.
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


def _parse_scalar(text: str) -> Any:
    """A --set value: YAML syntax (numbers, true/false, null, [lists], quoted strings)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _section_of(path: list[str]) -> type[_Section] | None:
    """The model class of the table at ``path`` (None when the path names no table)."""
    cls: type[_Section] = TrainConfig
    for part in path:
        info = cls.model_fields.get(part)
        if info is None or not (isinstance(info.annotation, type) and issubclass(info.annotation, _Section)):
            return None
        cls = info.annotation
    return cls


def _unknown(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r}{hint}; known here: {', '.join(sorted(known))}"


_EXPECTED = {
    "int_parsing": "expected an integer", "int_type": "expected an integer", "int_from_float": "expected an integer",
    "float_parsing": "expected a number", "float_type": "expected a number",
    "bool_parsing": "expected true or false", "bool_type": "expected true or false",
    "string_type": "expected a string", "list_type": "expected a list",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _line(error: Any) -> str:
    """One pydantic error as one line that names the key."""
    parts = [p for p in error["loc"] if isinstance(p, str)]
    key = ".".join(parts) + "".join(f"[{p}]" for p in error["loc"] if isinstance(p, int))
    kind, value = error["type"], error.get("input")
    if kind == "config_problem":
        return error["ctx"]["problem"]
    if kind == "extra_forbidden":
        section = _section_of(parts[:-1])
        return _unknown(".".join(parts), list(section.model_fields) if section else [])
    if kind in _EXPECTED:
        return f"{key}: {_EXPECTED[kind]}, got {value!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key or 'config'}: expected a table/mapping, got {type(value).__name__}"
    if kind == "literal_error":
        choices = error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"{key}: {value!r} is not one of {choices}"
    if kind in _BOUNDS:
        return f"{key} must be {_BOUNDS[kind]} {error['ctx'][_BOUND_KEYS[kind]]}, got {value!r}"
    return f"{key}: {error['msg'].removeprefix('Value error, ')}"


def _validated(data: Any, complete: bool) -> TrainConfig:
    """``data`` as a TrainConfig; every problem one line of a ConfigError."""
    if isinstance(data, dict):  # every table validated, so its cross-field rules run even when left empty
        data = {**{name: {} for name in TrainConfig.model_fields if _section_of([name])}, **data}
    try:
        return TrainConfig.model_validate(data, context={"complete": complete})
    except ValidationError as exc:
        lines = list(dict.fromkeys(_line(e) for e in exc.errors()))
    if len(lines) == 1:
        raise ConfigError(lines[0])
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _merge(into: dict[str, Any], data: dict[str, Any]) -> None:
    """Deep-merge ``data`` into ``into``: tables merge, everything else is replaced."""
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _assign(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key=value`` to the nested mapping ``raw`` (checked later, with the rest)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value (e.g. optim.lr=1e-3)")
    key, text = assignment.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key:
        raise ConfigError(f"--set {assignment!r}: empty key")
    parts = key.split(".")
    target = raw
    for i, part in enumerate(parts[:-1]):
        parent = _section_of(parts[:i])
        if parent is not None and part in parent.model_fields and _section_of(parts[: i + 1]) is None:
            sections = [k for k in parent.model_fields if _section_of([*parts[:i], k]) is not None]
            raise ConfigError(_unknown(".".join(parts[: i + 1]), sections))
        node = target.get(part)
        if not isinstance(node, dict):
            node = target[part] = {}
        target = node
    name = parts[-1]
    section = _section_of(parts[:-1])
    info = section.model_fields.get(name) if section is not None else None
    # Strings are taken literally (a template "{} sound" is not YAML); other types parse YAML first.
    if info is not None and info.annotation is str:
        value: Any = text
    else:
        value = _parse_scalar(text) if text.strip() else text
    if _section_of(parts) is not None and isinstance(value, dict):
        node = target.get(name)
        if not isinstance(node, dict):
            node = target[name] = {}
        _merge(node, value)
        return
    if not isinstance(value, str | int | float | bool | list | type(None)):
        value = text
    target[name] = value


def set_value(config: TrainConfig, assignment: str) -> None:
    """Apply one ``key=value`` override (dotted key, YAML-syntax value) to ``config`` in place."""
    raw = config.to_dict()
    _assign(raw, assignment)
    updated = _validated(raw, complete=False)
    for name in TrainConfig.model_fields:
        setattr(config, name, getattr(updated, name))


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
    raw: dict[str, Any] = {}
    if base is not None:
        if not isinstance(base, dict):
            raise ConfigError(f"config: expected a table/mapping, got {type(base).__name__}")
        _merge(raw, base)
    file_data = read_config_file(config_file) if config_file is not None else {}
    preset_name = preset or file_data.get("preset") or None
    if preset_name:
        if preset_name not in PRESETS:
            close = difflib.get_close_matches(str(preset_name), list(PRESETS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown preset {preset_name!r}{hint}; presets: {', '.join(PRESETS)}")
        _merge(raw, PRESETS[preset_name])
        raw["preset"] = str(preset_name)
    if file_data:
        _merge(raw, file_data)
    for assignment in overrides:
        _assign(raw, assignment)
    return _validated(raw, complete=True)


def validate(config: TrainConfig) -> None:
    """Check a whole configuration (types, ranges and the cross-field rules); a ConfigError if not."""
    _validated(config.to_dict(), complete=True)


def dump_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
