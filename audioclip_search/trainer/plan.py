"""What a stage trains: which towers, which targets, which validation metrics, and the best metric.

Decided once per run from the configuration and the data, before any model is built, so a run
that cannot work stops with a configuration error instead of failing mid-epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .config import ConfigError, TrainConfig
from .data import DataSource

logger = logging.getLogger(__name__)

__all__ = ["StagePlan", "check_samples", "plan_stage"]


@dataclass
class StagePlan:
    """What a stage trains on and how its best checkpoint is chosen."""

    use_image: bool
    use_text: bool
    classes: dict[str, int] | None
    multilabel: bool
    metrics: list[str]  # validation metrics computed
    best_metric: str


def plan_stage(config: TrainConfig, source: DataSource, has_val: bool) -> StagePlan:
    """The towers, targets and validation metrics of ``config.stage`` on ``source``; refuses impossible asks."""
    stage = config.stage
    images = config.data.images
    if stage == "audio-head":
        use_image, use_text = False, False
    else:
        use_text = True
        if images == "true":
            use_image = True
        elif images == "false":
            use_image = False
        else:
            use_image = stage in ("cooperative", "full") and source.has_images
        if stage == "full" and not use_image:
            logger.warning("stage full without images: only the audio-text term is trained")
    multilabel = source.multilabel if config.model.loss == "auto" else config.model.loss == "bce"
    classes = {name: i for i, name in enumerate(source.class_names)} if source.class_names else None
    single_label = all(len(set(s.labels)) == 1 for s in source.all_samples())
    if stage == "audio-head":
        if classes is None or any(not s.labels for s in source.all_samples()):
            raise ConfigError("the audio-head stage needs labels on every sample")
        metrics = ["val_loss", "map" if multilabel else "accuracy"]
    else:
        metrics = ["val_loss", "a2t_r1"] + (["accuracy"] if classes and single_label else [])
        if not single_label:
            classes = None  # targets only serve the single-label accuracy of the contrastive stages
    best = config.checkpoint.best_metric
    if best == "auto":
        if not has_val:
            best = "train_loss"
        elif stage == "audio-head":
            best = metrics[1]
        elif stage == "finetune" and "accuracy" in metrics:
            best = "accuracy"
        else:
            best = "val_loss"
    elif best != "train_loss":
        if not has_val:
            raise ConfigError(f"checkpoint.best_metric={best} needs validation data (data.val, data.val_fraction "
                              f"or data.folds); use best_metric=train_loss or auto")
        if best not in metrics:
            raise ConfigError(f"checkpoint.best_metric={best} is not computed for this stage/data; "
                              f"available: {', '.join(metrics + ['train_loss'])}")
    return StagePlan(use_image, use_text, classes, multilabel, metrics, best)


def check_samples(config: TrainConfig, source: DataSource, plan: StagePlan) -> None:
    """Refuse to start when samples lack the frames or texts the stage needs (before any training)."""
    samples = source.all_samples()
    if plan.use_image:
        lacking = [s.key for s in samples if not s.images]
        if lacking:
            raise ConfigError(f"{len(lacking)} samples have no image/frame (e.g. {', '.join(lacking[:5])}); "
                              f"set data.images=false or add frames")
    if plan.use_text:
        lacking = [s.key for s in samples if s.text(config.data.text, config.data.template) is None]
        if lacking:
            raise ConfigError(f"{len(lacking)} samples have no text for data.text={config.data.text} "
                              f"(e.g. {', '.join(lacking[:5])})")

