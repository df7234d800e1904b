"""The training loop shared by every stage: data, augmentation, AMP, accumulation, DDP, validation,
checkpoints, exact resume and the stop conditions.

    from audioclip_search.trainer import build_config, train
    config = build_config("finetune", overrides=["data.root=/data/ESC-50", "model.arch=audioclip-tiny"])
    result = train(config, "runs/esc50")

Output folder layout (``U`` is the output folder, or ``OUT/fold{k}`` per cross-validation fold)::

    OUT/config.yaml        the resolved configuration (``--resume`` reads it back)
    OUT/run.json           world size, device, precision, versions
    OUT/summary.json       one entry per unit, written when the run completes
    U/last.pt              resumable training state (every N steps and every epoch)
    U/best.pt, U/final.pt  exported weights (see ``checkpointing``)
    U/metrics.jsonl, U/metrics.csv
    U/done.json            the unit's result; a resumed run skips finished units

Determinism: all randomness is derived from ``seed``: model initialisation (torch seeded before
building), the sample order (``DistributedSampler`` with the seed and the epoch), the frame pick
(seed, epoch, sample) and the augmentation generator (re-seeded from seed, rank, epoch and batch
position before every batch). With ``deterministic=true`` torch's deterministic algorithms are
enforced, so on CPU a resumed run repeats the uninterrupted one's losses exactly. (On CUDA,
ESResNeXt's adaptive max-pool has no deterministic backward; there the mode warns instead.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..audio import to_model_scale
from ..devices import autocast, resolve_device, resolve_precision
from .augment import Augmenter
from .checkpointing import (
    atomic_save,
    atomic_write_text,
    capture_rng,
    export_audio_head,
    export_audioclip,
    load_state,
    restore_rng,
)
from .config import ConfigError, TrainConfig, build_config, dump_yaml
from .data import DataSource, Split, TrainingSet, collate, find_missing, load_source
from .distributed import (
    DistEnv,
    ResumableDistributedSampler,
    all_reduce,
    barrier,
    cleanup,
    derive_seed,
    init_distributed,
)
from .errors import MissingFilesError, NonFiniteLossError, TooManyBadSamplesError, TrainingError
from .logs import Display, MetricsLog
from .tasks import ClassifierTask, build_task

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "UnitResult", "prepare_config", "train"]

HIGHER_IS_BETTER = {"accuracy": True, "map": True, "a2t_r1": True, "val_loss": False, "train_loss": False}

#: Settings a resumed run may change without breaking "continues exactly where it stopped".
RESUMABLE_CHANGES = {
    "epochs", "max_steps", "device", "threads", "eval_batch_size", "data.num_workers", "data.cache_audio",
    "data.max_bad_fraction", "checkpoint.every_steps", "log.every_steps", "log.tensorboard", "log.display",
}


@dataclass
class UnitResult:
    name: str
    folder: str
    fold: int | None
    best_metric: str
    best_value: float | None
    best_epoch: int | None
    epochs_done: int
    steps: int
    skipped: int
    exports: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    out_dir: str
    stage: str
    units: list[UnitResult]


# ---------------------------------------------------------------------------------------------
# configuration on resume


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------
# environment


@contextlib.contextmanager
def _torch_settings(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Threads and deterministic mode for the run, restored afterwards (tests run in-process)."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # CUDA's adaptive max-pool backward (ESResNeXt's attention blocks) has no deterministic
            # kernel: on CUDA the mode warns on such ops instead of refusing to train.
            torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _device_for(config: TrainConfig, env: DistEnv) -> torch.device:
    device = resolve_device(config.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank if env.enabled else torch.cuda.current_device())
    return device


# ---------------------------------------------------------------------------------------------
# stage plumbing


@dataclass
class StagePlan:
    use_image: bool
    use_text: bool
    classes: dict[str, int] | None
    multilabel: bool
    metrics: list[str]  # validation metrics computed
    best_metric: str


def _plan(config: TrainConfig, source: DataSource, has_val: bool) -> StagePlan:
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


def _check_samples(config: TrainConfig, source: DataSource, plan: StagePlan) -> None:
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


def _batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if hasattr(module, "module") else module


# ---------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def evaluate(task: torch.nn.Module, dataset: TrainingSet, config: TrainConfig, plan: StagePlan,
             device: torch.device, precision: str) -> tuple[dict[str, float], list[Any]]:
    """Validation metrics of ``task`` on ``dataset`` (centre-fitted clips, central frames)."""
    from ..evaluation.metrics import class_average_precision, retrieval_metrics, topk_hits
    from ..model import contrastive_loss
    from ..text import format_labels, tokenize

    task = _unwrap(task)
    was_training = task.training
    task.eval()
    loader = DataLoader(dataset, batch_size=config.eval_batch_size, shuffle=False, collate_fn=collate,
                        num_workers=config.data.num_workers, pin_memory=device.type == "cuda")
    total_loss, total_n = 0.0, 0
    bad: list[Any] = []
    outputs: list[torch.Tensor] = []
    audio_feats, text_feats, targets, indices = [], [], [], []
    try:
        for batch in loader:
            bad.extend(batch["bad"])
            if batch["size"] == 0:
                continue
            batch = _batch_to(batch, device)
            audio = to_model_scale(batch["audio"])
            n = batch["size"]
            with autocast(device, precision):
                if isinstance(task, ClassifierTask):
                    loss, logits = task(audio, target=batch["target"])
                    outputs.append(logits.float().cpu())
                else:
                    feats = task.features(audio, batch.get("image"), batch.get("tokens"))
                    loss = contrastive_loss(task.logits(*feats)) + task.model.audio.loss_ttf()
                    audio_feats.append(feats[0].float().cpu())
                    text_feats.append(feats[2].float().cpu())
            total_loss += float(loss) * n
            total_n += n
            indices.append(batch["index"].cpu())
            if "target" in batch:
                targets.append(batch["target"].cpu())
        metrics: dict[str, float] = {"val_loss": total_loss / total_n if total_n else float("nan"),
                                     "val_samples": float(total_n)}
        if total_n == 0:
            return metrics, bad
        index = torch.cat(indices).tolist()
        if isinstance(task, ClassifierTask):
            scores = torch.cat(outputs).numpy()
            target = torch.cat(targets)
            if plan.multilabel:
                lists = [np.flatnonzero(row).tolist() for row in target.numpy()]
                metrics["map"] = class_average_precision(scores, lists, scores.shape[1])
            else:
                metrics["accuracy"] = float(topk_hits(scores, target.numpy(), 1).mean())
        else:
            a = torch.cat(audio_feats)
            t = torch.cat(text_feats)
            texts = [dataset.text_of(i) for i in index]
            relevant = np.array([[ti == tj for tj in texts] for ti in texts], dtype=bool)
            metrics["a2t_r1"] = retrieval_metrics((a @ t.T).numpy(), relevant, ks=(1,)).summary()["R@1"]
            if "accuracy" in plan.metrics and targets:
                names = sorted(plan.classes, key=plan.classes.get)  # type: ignore[arg-type]
                prompts = format_labels(names, config.data.template)
                chunks = []
                for start in range(0, len(prompts), config.eval_batch_size):
                    tokens = tokenize(prompts[start:start + config.eval_batch_size]).to(device)
                    with autocast(device, precision):
                        f = task.model.encode_text(tokens).float()
                    chunks.append((f / f.norm(dim=-1, keepdim=True)).cpu())
                class_f = torch.cat(chunks)
                metrics["accuracy"] = float(topk_hits((a @ class_f.T).numpy(), torch.cat(targets).numpy(), 1).mean())
        return metrics, bad
    finally:
        task.train(was_training)


# ---------------------------------------------------------------------------------------------
# one unit (the whole run or one fold)


@dataclass
class _State:
    epoch: int = 0
    position: int = 0  # micro-batches of the current epoch already consumed
    step: int = 0  # optimiser steps so far
    best_value: float | None = None
    best_epoch: int | None = None
    bad: dict[int, str] = field(default_factory=dict)  # index -> reason
    epoch_loss_sum: float = 0.0
    epoch_loss_n: int = 0
    elapsed: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "step": self.step, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "bad": {str(k): v for k, v in self.bad.items()},
                "epoch_loss_sum": self.epoch_loss_sum, "epoch_loss_n": self.epoch_loss_n, "elapsed": self.elapsed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _State:
        s = cls(**{k: d[k] for k in ("epoch", "position", "step", "best_value", "best_epoch", "epoch_loss_sum",
                                     "epoch_loss_n", "elapsed") if k in d})
        s.bad = {int(k): v for k, v in d.get("bad", {}).items()}
        return s


class _Unit:
    """Trains one split into one folder."""

    def __init__(self, config: TrainConfig, source: DataSource, split: Split, folder: Path, env: DistEnv,
                 device: torch.device, precision: str, plan: StagePlan, display: Display, resume: bool):
        self.config = config
        self.source = source
        self.split = split
        self.folder = folder
        self.env = env
        self.device = device
        self.precision = precision
        self.plan = plan
        self.display = display
        self.resume = resume
        self.main = env.is_main
        self.last_path = folder / "last.pt"

    # -- setup ---------------------------------------------------------------------------------

    def _datasets(self) -> tuple[TrainingSet, TrainingSet | None]:
        cfg = self.config
        limit = cfg.data.limit
        train_samples = self.split.train[:limit] if limit else self.split.train
        val_samples = self.split.val[:limit] if limit else self.split.val
        text = cfg.data.text if self.plan.use_text else None
        common = dict(text=text, template=cfg.data.template, images=self.plan.use_image, classes=self.plan.classes,
                      multilabel=self.plan.multilabel, seed=cfg.seed, cache_audio=cfg.data.cache_audio)
        train_set = TrainingSet(train_samples, self.source.preprocessing, train=True, **common)
        val_set = TrainingSet(val_samples, self.source.preprocessing, train=False, **common) if val_samples else None
        return train_set, val_set

    def _export(self, task: torch.nn.Module, tag: str, training: dict[str, Any]) -> dict[str, str]:
        task = _unwrap(task)
        out: dict[str, str] = {}
        if isinstance(task, ClassifierTask):
            out[tag] = str(export_audio_head(task.head, self.folder / f"{tag}.pt", training, task.class_names))
        else:
            out[tag] = str(export_audioclip(task.model, self.folder / f"{tag}.pt", training))
            out[f"{tag}_audio_head"] = str(export_audio_head(task.model.audio, self.folder / f"{tag}_audio_head.pt",
                                                             training))
        return out

    def _is_better(self, value: float, best: float | None) -> bool:
        if value != value:  # NaN never wins
            return False
        if best is None:
            return True
        return value > best if HIGHER_IS_BETTER[self.plan.best_metric] else value < best

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> UnitResult:
        cfg, env, device = self.config, self.env, self.device
        _seed_everything(cfg.seed)
        task = build_task(cfg, self.source.class_names, self.plan.multilabel, self.plan.use_image,
                          self.plan.use_text).to(device)
        if cfg.model.sync_bn and env.enabled:
            task = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task)
        params = [p for p in task.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("nothing to train: every parameter is frozen")
        opt_cfg = cfg.optim
        optimizer = torch.optim.SGD(params, lr=opt_cfg.lr, momentum=opt_cfg.momentum, nesterov=opt_cfg.nesterov,
                                    weight_decay=opt_cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=opt_cfg.gamma)
        scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        model: torch.nn.Module = task
        if env.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(task, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=False)

        train_set, val_set = self._datasets()
        sampler = ResumableDistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                              seed=cfg.seed)
        per_epoch = sampler.batches_per_epoch(cfg.batch_size)
        if per_epoch < 1:
            raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {sampler.num_samples} training "
                              f"samples per process of {self.split.name}; lower batch_size")
        steps_per_epoch = -(-per_epoch // cfg.grad_accum)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        augmenter = Augmenter(cfg.augment, self.source.clip_samples)
        loader = DataLoader(
            train_set, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, collate_fn=collate,
            num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
        )
        generator = torch.Generator(device=device)

        state = _State()
        if self.resume and self.last_path.is_file():
            saved = load_state(self.last_path)
            _unwrap(model).load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            rng = saved["rng"]
            restore_rng(rng[env.rank] if isinstance(rng, list) else rng, {"augment": generator})
            state = _State.from_dict(saved["state"])
            self.display.message(f"{self.split.name}: resumed from {self.last_path} at epoch {state.epoch + 1}, "
                                 f"step {state.step}")
        elif self.resume:
            self.display.message(f"{self.split.name}: no checkpoint to resume from, starting from the beginning")

        log = MetricsLog(self.folder, self.plan.metrics, enabled=self.main,
                         resume_step=state.step if self.resume else None, tensorboard=cfg.log.tensorboard)
        budget = cfg.data.max_bad_fraction * len(train_set)
        training_info = {"stage": cfg.stage, "fold": self.split.fold, "preset": cfg.preset}
        exports: dict[str, str] = {}

        def save_state() -> None:
            rng = capture_rng({"augment": generator})
            rngs = None
            if env.enabled:
                from .distributed import all_gather_object

                rngs = all_gather_object(env, rng)
            if self.main:
                atomic_save({
                    "format": "audioclip-search-train-state", "version": 1, "config": cfg.to_dict(),
                    "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng": rngs if rngs is not None else rng, "state": state.to_dict(),
                    "world_size": env.world_size,
                }, self.last_path)

        def lr_now() -> float:
            return float(optimizer.param_groups[0]["lr"])

        def end_of_epoch(epoch_done: bool) -> None:
            """Validation, best export and the state checkpoint (at an epoch end, or at max_steps)."""
            nonlocal exports
            train_loss = state.epoch_loss_sum / state.epoch_loss_n if state.epoch_loss_n else float("nan")
            record: dict[str, Any] = {"kind": "val", "epoch": state.epoch + 1,
                                      "step": state.step, "train_loss": train_loss, "lr": lr_now()}
            if epoch_done:
                scheduler.step()
                state.epoch += 1
                state.position = 0
            validate = val_set is not None and (not epoch_done or state.epoch % cfg.checkpoint.val_every == 0
                                                or state.epoch >= cfg.epochs)
            too_many = ""
            if validate and self.main:  # rank 0 validates on the whole split while the others wait
                metrics, bad = evaluate(model, val_set, cfg, self.plan, device, self.precision)
                record.update(metrics)
                if bad:
                    record["val_skipped"] = len(bad)
                    for b in bad:
                        log.write({"kind": "skip", "split": "val", "step": state.step, "key": b.key,
                                   "reason": b.reason})
                    if len(bad) > cfg.data.max_bad_fraction * len(val_set):
                        too_many = (f"{len(bad)} of {len(val_set)} validation samples of {self.split.name} are "
                                    f"unreadable (limit data.max_bad_fraction={cfg.data.max_bad_fraction}); first: "
                                    + "; ".join(b.reason for b in bad[:5]))
            if validate and all_reduce(env, 1.0 if too_many else 0.0, "max", device) > 0:
                raise TooManyBadSamplesError(too_many or f"{self.split.name}: too many unreadable validation samples "
                                                         f"(see rank 0)")
            value = record.get(self.plan.best_metric)
            if self.main and value is not None and (validate or self.plan.best_metric == "train_loss"):
                if self._is_better(float(value), state.best_value):
                    state.best_value = float(value)
                    state.best_epoch = record["epoch"]
                    info = {**training_info, "epoch": record["epoch"], "step": state.step,
                            "metric": self.plan.best_metric, "value": float(value)}
                    exports.update(self._export(model, "best", info))
                record["best"] = state.best_value
            log.write(record)
            if self.main and "val_loss" in record:
                shown = ", ".join(f"{k} {record[k]:.4f}" for k in self.plan.metrics if k in record)
                self.display.message(f"{self.split.name} epoch {record['epoch']}: train_loss {train_loss:.4f}, {shown}")
            state.epoch_loss_sum, state.epoch_loss_n = 0.0, 0
            save_state()

        self.display.start(f"{cfg.stage} {self.split.name}", total_steps, state.step)
        stop = bool(cfg.max_steps and state.step >= cfg.max_steps)
        t_last = time.perf_counter()
        samples_since = 0
        last_good: dict[str, Any] | None = None
        try:
            while state.epoch < cfg.epochs and not stop:
                epoch = state.epoch
                train_set.set_epoch(epoch)
                sampler.set_epoch(epoch)
                sampler.set_start(state.position * cfg.batch_size)
                model.train()
                step_loss, step_n = 0.0, 0
                group_has_grad = False
                for batch in loader:
                    state.position += 1
                    group_start = (state.position - 1) // cfg.grad_accum * cfg.grad_accum
                    group_size = min(cfg.grad_accum, per_epoch - group_start)
                    boundary = state.position == group_start + group_size
                    for b in batch["bad"]:
                        if b.index not in state.bad:
                            state.bad[b.index] = b.reason
                            log.write({"kind": "skip", "split": "train", "step": state.step, "key": b.key,
                                       "reason": b.reason})
                    bad_total = all_reduce(env, float(len(state.bad)), "sum", device)
                    if bad_total > budget:
                        reasons = "; ".join(list(state.bad.values())[:5])
                        raise TooManyBadSamplesError(
                            f"{int(bad_total)} of {len(train_set)} training samples of {self.split.name} are "
                            f"unreadable, more than data.max_bad_fraction={cfg.data.max_bad_fraction} allows; "
                            f"first: {reasons}")
                    # A batch left with fewer than two readable samples cannot be trained on (BatchNorm,
                    # contrastive pairs). Alone, skip it; under DDP every rank must still run the same
                    # collectives, so such a rank repeats its last good batch with zero weight.
                    usable = batch["size"] >= 2
                    if usable:
                        last_good = batch
                    work = batch if usable else last_good
                    run_step = work is not None and (usable or env.enabled)
                    if env.enabled:
                        run_step = all_reduce(env, 1.0 if work is not None else 0.0, "min", device) > 0
                    if run_step:
                        generator.manual_seed(derive_seed(cfg.seed, env.rank, epoch, state.position))
                        work = _batch_to(work, device)
                        with torch.no_grad():
                            audio = to_model_scale(augmenter(work["audio"], work["lengths"], generator, train=True))
                        sync = boundary or not env.enabled
                        with contextlib.nullcontext() if sync else model.no_sync():  # type: ignore[operator]
                            with autocast(device, self.precision):
                                loss, _ = model(audio=audio, image=work.get("image"), tokens=work.get("tokens"),
                                                target=work.get("target"))
                            loss_value = float(loss.detach())
                            finite = all_reduce(env, 1.0 if np.isfinite(loss_value) else 0.0, "min", device)
                            if finite < 1:
                                self._non_finite(loss_value, epoch, state, log)
                            weight = 1.0 if usable else 0.0
                            scaler.scale(loss * (weight / group_size)).backward()
                        group_has_grad = True
                        if usable:
                            step_loss += loss_value * work["size"]
                            step_n += work["size"]
                            samples_since += work["size"]
                    if not boundary:
                        continue
                    if group_has_grad:
                        if cfg.optim.grad_clip > 0:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                    group_has_grad = False
                    state.step += 1
                    mean_loss = step_loss / step_n if step_n else float("nan")
                    if step_n:
                        state.epoch_loss_sum += mean_loss
                        state.epoch_loss_n += 1
                    step_loss, step_n = 0.0, 0
                    if state.step % cfg.log.every_steps == 0 or state.step == total_steps:
                        now = time.perf_counter()
                        samples = all_reduce(env, float(samples_since), "sum", device)
                        loss_mean = all_reduce(env, mean_loss, "sum", device) / env.world_size
                        state.elapsed += now - t_last
                        record = {"kind": "train", "epoch": epoch + 1, "step": state.step, "loss": loss_mean,
                                  "lr": lr_now(), "samples_per_s": samples / max(now - t_last, 1e-9),
                                  "skipped": len(state.bad), "elapsed_s": round(state.elapsed, 3)}
                        log.write(record)
                        self.display.update(state.step, total_steps, record)
                        t_last, samples_since = now, 0
                    if cfg.checkpoint.every_steps and state.step % cfg.checkpoint.every_steps == 0:
                        save_state()
                    if cfg.max_steps and state.step >= cfg.max_steps:
                        stop = True
                        break
                if stop and state.position < per_epoch:
                    end_of_epoch(epoch_done=False)
                else:
                    end_of_epoch(epoch_done=True)
            finished = state.epoch >= cfg.epochs or stop
            if finished and self.main:
                info = {**training_info, "epoch": state.epoch, "step": state.step}
                exports.update(self._export(model, "final", info))
                if state.best_value is None:  # no metric ever computed (e.g. stopped at once): final is best
                    exports.update(self._export(model, "best", {**info, "metric": "none"}))
                exports.update({k: str(self.folder / f"{k}.pt") for k in ("best", "best_audio_head")
                                if (self.folder / f"{k}.pt").is_file()})
        finally:
            self.display.stop()
            log.close()
        result = UnitResult(self.split.name, str(self.folder), self.split.fold, self.plan.best_metric,
                            state.best_value, state.best_epoch, state.epoch, state.step, len(state.bad), exports)
        if self.main:
            atomic_write_text(self.folder / "done.json", json.dumps(dataclasses.asdict(result), indent=2))
        barrier(env)
        return result

    def _non_finite(self, value: float, epoch: int, state: _State, log: MetricsLog) -> None:
        where = f"epoch {epoch + 1}, optimiser step {state.step + 1} (batch {state.position} of the epoch)"
        if self.last_path.is_file():
            kept = f"the last good checkpoint {self.last_path} was left as it was"
        else:
            kept = "no checkpoint had been written yet"
        message = (f"{self.split.name}: the loss became {value} at {where}; training stopped and {kept}. "
                   f"Lower optim.lr, use precision=fp32 or bf16, or check the input data.")
        log.write({"kind": "error", "step": state.step, "epoch": epoch + 1, "error": message})
        raise NonFiniteLossError(message)


# ---------------------------------------------------------------------------------------------
# entry point


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, display: Display | None = None
          ) -> RunResult:
    """Run the configured stage into ``out_dir``; every unit (fold) in turn. See the module docstring."""
    out_dir = Path(out_dir)
    try:
        preliminary = resolve_device(config.device)
        resolve_precision(config.precision, preliminary)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    env = init_distributed(preliminary.type)
    try:
        device = _device_for(config, env)
        precision = resolve_precision(config.precision, device)
        display = display or Display(config.log.display, enabled=env.is_main)
        if not env.is_main:
            display = Display("none", enabled=False)
        with _torch_settings(config, device):
            return _train(config, out_dir, resume, env, device, precision, display)
    finally:
        cleanup(env)


def _train(config: TrainConfig, out_dir: Path, resume: bool, env: DistEnv, device: torch.device, precision: str,
           display: Display) -> RunResult:
    source = load_source(config.data)
    missing, checked = find_missing(source.all_samples())
    if missing:
        report = out_dir / "missing_files.txt"
        if env.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            report.write_text("\n".join(map(str, missing)) + "\n", encoding="utf-8")
        raise MissingFilesError(missing, checked, report)
    splits = source.splits(config.data)
    plan = _plan(config, source, has_val=all(bool(s.val) for s in splits))
    _check_samples(config, source, plan)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume or not (out_dir / "config.yaml").is_file():
            atomic_write_text(out_dir / "config.yaml", dump_yaml(config))
        atomic_write_text(out_dir / "run.json", json.dumps({
            "stage": config.stage, "preset": config.preset, "world_size": env.world_size, "backend": env.backend,
            "device": str(device), "precision": precision, "torch": torch.__version__,
            "python": platform.python_version(), "data": source.name, "units": [s.name for s in splits],
            "train_samples": {s.name: len(s.train) for s in splits},
            "val_samples": {s.name: len(s.val) for s in splits},
            "best_metric": plan.best_metric, "metrics": plan.metrics,
        }, indent=2))
    display.message(f"{config.stage}: {source.name}, {len(splits)} unit(s), device {device} ({precision}), "
                    f"world size {env.world_size}, best by {plan.best_metric}")
    results: list[UnitResult] = []
    for split in splits:
        folder = out_dir if split.name == "main" else out_dir / split.name
        done = folder / "done.json"
        if resume and done.is_file():
            data = json.loads(done.read_text(encoding="utf-8"))
            results.append(UnitResult(**data))
            display.message(f"{split.name}: already finished, skipped")
            continue
        if env.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        barrier(env)
        unit = _Unit(config, source, split, folder, env, device, precision, plan, display, resume)
        results.append(unit.run())
    result = RunResult(str(out_dir), config.stage, results)
    if env.is_main:
        atomic_write_text(out_dir / "summary.json", json.dumps(dataclasses.asdict(result), indent=2))
    return result


def fold_pattern(out_dir: str | Path) -> str:
    """What ``acsearch eval --task finetuned --checkpoint-pattern`` takes for a cross-validated run."""
    return str(Path(out_dir) / "fold{fold}" / "best.pt")


__all__ += ["TrainingError", "evaluate", "fold_pattern"]
