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

Reading guide: ``train`` (below) checks the data and plans the stage, then runs a ``Trainer`` per
unit. ``Trainer.train_step`` computes the loss and scales it for AMP, ``Trainer.optimizer_step``
applies it, ``Trainer.save`` writes ``last.pt`` and ``Trainer.resume`` reads it back. Losses and
bad-sample counts are resolved once per logging interval (``Trainer.log``), not per micro-batch.

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
from ..crashpoints import crash_point
from ..devices import autocast, resolve_device, resolve_precision
from ..fileio import atomic_write_text
from .augment import Augmenter
from .checkpointing import (
    atomic_save,
    capture_rng,
    export_audio_head,
    export_audioclip,
    load_state,
    restore_rng,
)
from .config import ConfigError, TrainConfig, dump_yaml
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
from .plan import StagePlan, check_samples, plan_stage
from .resuming import prepare_config
from .tasks import ClassifierTask, build_task
from .validation import batch_to, evaluate, unwrap

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "Trainer", "TrainingError", "UnitResult", "evaluate", "fold_pattern", "prepare_config",
           "train"]

HIGHER_IS_BETTER = {"accuracy": True, "map": True, "a2t_r1": True, "val_loss": False, "train_loss": False}


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
    """Check the data and the stage, write the run's files, then train each unit not yet done."""
    source = load_source(config.data)
    missing, checked = find_missing(source.all_samples())
    if missing:
        report = out_dir / "missing_files.txt"
        if env.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(report, "\n".join(map(str, missing)) + "\n")
        raise MissingFilesError(missing, checked, report)
    splits = source.splits(config.data)
    plan = plan_stage(config, source, has_val=all(bool(s.val) for s in splits))
    check_samples(config, source, plan)
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
        results.append(Trainer(config, source, split, folder, env, device, precision, plan, display, resume).run())
    result = RunResult(str(out_dir), config.stage, results)
    if env.is_main:
        atomic_write_text(out_dir / "summary.json", json.dumps(dataclasses.asdict(result), indent=2))
    return result


def fold_pattern(out_dir: str | Path) -> str:
    """What ``acsearch eval --task finetuned --checkpoint-pattern`` takes for a cross-validated run."""
    return str(Path(out_dir) / "fold{fold}" / "best.pt")


# ---------------------------------------------------------------------------------------------
# one unit (the whole run or one fold)


class Trainer:
    """Trains one split into one folder. Reading order: ``run`` -> ``train_epoch`` -> ``train_step``
    (the loss, and where AMP scales it) -> ``optimizer_step`` -> ``log`` / ``save`` (where the
    checkpoint is written) -> ``end_epoch`` -> ``validate``; ``resume`` reads ``save``'s file back."""

    def __init__(self, config: TrainConfig, source: DataSource, split: Split, folder: Path, env: DistEnv,
                 device: torch.device, precision: str, plan: StagePlan, display: Display, resume: bool):
        self.config, self.source, self.split, self.folder = config, source, split, folder
        self.env, self.device, self.precision, self.plan = env, device, precision, plan
        self.display = display
        self.resuming = resume
        self.main = env.is_main
        self.last_path = folder / "last.pt"
        _seed_everything(config.seed)  # before building: the initial weights come from the seed
        self._build_model()
        self._build_data()
        self.state = TrainState()
        self.interval = _Interval()
        self.exports: dict[str, str] = {}
        self.training_info = {"stage": config.stage, "fold": split.fold, "preset": config.preset}
        self.metrics: MetricsLog | None = None
        self._stop = False
        self._group_has_grad = False
        self._last_good: dict[str, Any] | None = None
        self._all_ranks_have_work = False
        self._t_last = time.perf_counter()

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> UnitResult:
        """Resume if asked, train epoch by epoch until ``epochs`` or ``max_steps``, export the final weights."""
        self.resume()  # may replace self.state
        cfg, state = self.config, self.state
        self.metrics = MetricsLog(self.folder, self.plan.metrics, enabled=self.main,
                                  resume_step=state.step if self.resuming else None, tensorboard=cfg.log.tensorboard)
        self.display.start(f"{cfg.stage} {self.split.name}", self.total_steps, state.step)
        self._stop = bool(cfg.max_steps and state.step >= cfg.max_steps)
        self._t_last = time.perf_counter()
        try:
            while state.epoch < cfg.epochs and not self._stop:
                self.train_epoch()
            if self.main:
                self._export_final()
        finally:
            self.display.stop()
            self.metrics.close()
        result = UnitResult(self.split.name, str(self.folder), self.split.fold, self.plan.best_metric,
                            state.best_value, state.best_epoch, state.epoch, state.step, len(state.bad), self.exports)
        if self.main:
            atomic_write_text(self.folder / "done.json", json.dumps(dataclasses.asdict(result), indent=2))
        barrier(self.env)
        return result

    def train_epoch(self) -> None:
        """One pass over this rank's share of the split, from the position a resumed run stopped at."""
        cfg, state = self.config, self.state
        self.train_set.set_epoch(state.epoch)
        self.sampler.set_epoch(state.epoch)
        self.sampler.set_start(state.position * cfg.batch_size)
        self.model.train()
        for batch in self.loader:
            state.position += 1
            self._note_bad(batch)
            group_size, boundary = self._group()
            self.train_step(batch, group_size, boundary)
            if boundary:
                self.optimizer_step()
                if self._stop:
                    break
        self.end_epoch(epoch_done=not (self._stop and state.position < self.per_epoch))

    def train_step(self, batch: dict[str, Any], group_size: int, boundary: bool) -> None:
        """Forward and backward of one micro-batch; gradients accumulate until the group's last one.

        A batch left with fewer than two readable samples cannot be trained on (BatchNorm,
        contrastive pairs). Alone, it is skipped; under DDP every rank must still run the same
        collectives, so such a rank repeats its last good batch with zero weight.
        """
        cfg, env, state = self.config, self.env, self.state
        usable = batch["size"] >= 2
        if usable:
            self._last_good = batch
        work = batch if usable else self._last_good
        run = work is not None and (usable or env.enabled)
        if env.enabled and not self._all_ranks_have_work:  # once every rank has a good batch, it always will
            run = all_reduce(env, 1.0 if work is not None else 0.0, "min", self.device) > 0
            self._all_ranks_have_work = run
        if not run or work is None:
            return
        self.generator.manual_seed(derive_seed(cfg.seed, env.rank, state.epoch, state.position))
        work = batch_to(work, self.device)
        with torch.no_grad():
            audio = to_model_scale(self.augmenter(work["audio"], work["lengths"], self.generator, train=True))
        sync = boundary or not env.enabled
        with contextlib.nullcontext() if sync else self.model.no_sync():  # type: ignore[operator]
            with autocast(self.device, self.precision):
                loss, _ = self.model(audio=audio, image=work.get("image"), tokens=work.get("tokens"),
                                     target=work.get("target"))
            weight = 1.0 if usable else 0.0
            self.scaler.scale(loss * (weight / group_size)).backward()  # AMP: scaled loss, unscaled in the step
        self._group_has_grad = True
        # The loss stays on the device until the interval is resolved (no host sync per micro-batch).
        self.interval.add(loss.detach(), work["size"] if usable else 0, (state.epoch, state.step + 1, state.position))

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients (unscaled and clipped under AMP), then log, save, check the stop."""
        cfg, state = self.config, self.state
        if self._group_has_grad:
            if cfg.optim.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        self._group_has_grad = False
        state.step += 1
        self.interval.close_step()
        if state.step % cfg.log.every_steps == 0 or state.step == self.total_steps:
            self.log()
        if cfg.checkpoint.every_steps and state.step % cfg.checkpoint.every_steps == 0:
            self.save()
        crash_point("trainer.step")
        if cfg.max_steps and state.step >= cfg.max_steps:
            self._stop = True

    def log(self) -> None:
        """A ``train`` record for the interval just ended (loss, lr, samples/s) and the display update."""
        env, state = self.env, self.state
        mean_loss = self._resolve_interval()
        now = time.perf_counter()
        samples = all_reduce(env, float(self.interval.samples), "sum", self.device)
        loss_mean = all_reduce(env, mean_loss, "sum", self.device) / env.world_size
        state.elapsed += now - self._t_last
        record = {"kind": "train", "epoch": state.epoch + 1, "step": state.step, "loss": loss_mean,
                  "lr": self._lr(), "samples_per_s": samples / max(now - self._t_last, 1e-9),
                  "skipped": len(state.bad), "elapsed_s": round(state.elapsed, 3)}
        self._metrics().write(record)
        self.display.update(state.step, self.total_steps, record)
        self._t_last = now
        self.interval.samples = 0

    def save(self) -> None:
        """Write the resumable state to ``last.pt`` (atomically, on rank 0, with every rank's RNG states)."""
        self._resolve_interval()  # a checkpoint never holds weights a non-finite loss has already touched
        env = self.env
        rng = capture_rng({"augment": self.generator})
        rngs = None
        if env.enabled:
            from .distributed import all_gather_object

            rngs = all_gather_object(env, rng)
        if self.main:
            atomic_save({
                "format": "audioclip-search-train-state", "version": 1, "config": self.config.to_dict(),
                "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs if rngs is not None else rng, "state": self.state.to_dict(),
                "world_size": env.world_size,
            }, self.last_path)

    def resume(self) -> None:
        """When resuming, load what ``save`` wrote: weights, optimiser, scheduler, scaler, RNGs, position."""
        if not self.resuming:
            return
        if not self.last_path.is_file():
            self.display.message(f"{self.split.name}: no checkpoint to resume from, starting from the beginning")
            return
        saved = load_state(self.last_path)
        unwrap(self.model).load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        rng = saved["rng"]
        restore_rng(rng[self.env.rank] if isinstance(rng, list) else rng, {"augment": self.generator})
        self.state = TrainState.from_dict(saved["state"])
        self.display.message(f"{self.split.name}: resumed from {self.last_path} at epoch {self.state.epoch + 1}, "
                             f"step {self.state.step}")

    def end_epoch(self, epoch_done: bool) -> None:
        """Validation, best export and the state checkpoint (at an epoch end, or at ``max_steps``)."""
        cfg, state = self.config, self.state
        self._resolve_interval()
        train_loss = state.epoch_loss_sum / state.epoch_loss_n if state.epoch_loss_n else float("nan")
        record: dict[str, Any] = {"kind": "val", "epoch": state.epoch + 1,
                                  "step": state.step, "train_loss": train_loss, "lr": self._lr()}
        if epoch_done:
            self.scheduler.step()
            state.epoch += 1
            state.position = 0
        due = self.val_set is not None and (not epoch_done or state.epoch % cfg.checkpoint.val_every == 0
                                            or state.epoch >= cfg.epochs)
        if due:
            record.update(self.validate())
        self._keep_best(record, validated=due)
        self._metrics().write(record)
        if self.main and "val_loss" in record:
            shown = ", ".join(f"{k} {record[k]:.4f}" for k in self.plan.metrics if k in record)
            self.display.message(f"{self.split.name} epoch {record['epoch']}: train_loss {train_loss:.4f}, {shown}")
        state.epoch_loss_sum, state.epoch_loss_n = 0.0, 0
        self.save()

    def validate(self) -> dict[str, Any]:
        """Rank 0 validates on the whole split while the others wait; too many unreadable samples stop all."""
        assert self.val_set is not None
        metrics: dict[str, Any] = {}
        too_many = ""
        if self.main:
            metrics, bad = evaluate(self.model, self.val_set, self.config, self.plan, self.device, self.precision)
            if bad:
                metrics["val_skipped"] = len(bad)
                for b in bad:
                    self._metrics().write({"kind": "skip", "split": "val", "step": self.state.step, "key": b.key,
                                           "reason": b.reason})
                limit = self.config.data.max_bad_fraction
                if len(bad) > limit * len(self.val_set):
                    too_many = (f"{len(bad)} of {len(self.val_set)} validation samples of {self.split.name} are "
                                f"unreadable (limit data.max_bad_fraction={limit}); first: "
                                + "; ".join(b.reason for b in bad[:5]))
        if all_reduce(self.env, 1.0 if too_many else 0.0, "max", self.device) > 0:
            raise TooManyBadSamplesError(too_many or f"{self.split.name}: too many unreadable validation samples "
                                                     f"(see rank 0)")
        return metrics

    # -- bookkeeping ---------------------------------------------------------------------------

    def _group(self) -> tuple[int, bool]:
        """The size of the accumulation group of the current micro-batch, and whether it is the last one."""
        accum = self.config.grad_accum
        group_start = (self.state.position - 1) // accum * accum
        group_size = min(accum, self.per_epoch - group_start)
        return group_size, self.state.position == group_start + group_size

    def _note_bad(self, batch: dict[str, Any]) -> None:
        """Remember the unreadable samples of a batch (counted against the budget at the interval's end)."""
        for b in batch["bad"]:
            if b.index not in self.state.bad:
                self.state.bad[b.index] = b.reason
                self._metrics().write({"kind": "skip", "split": "train", "step": self.state.step, "key": b.key,
                                       "reason": b.reason})

    def _resolve_interval(self) -> float:
        """Bring the interval's losses to the host in one sync and check the limits across ranks.

        Called where every rank is at the same optimiser step (log, checkpoint, epoch end): two
        collectives per interval instead of three per micro-batch. Returns the last step's mean loss.
        """
        interval, state, env = self.interval, self.state, self.env
        if not interval.step_ends:
            return interval.last_mean
        values = interval.take()
        bad_total = all_reduce(env, float(len(state.bad)), "sum", self.device)
        if bad_total > self.bad_budget:
            reasons = "; ".join(list(state.bad.values())[:5])
            raise TooManyBadSamplesError(
                f"{int(bad_total)} of {len(self.train_set)} training samples of {self.split.name} are "
                f"unreadable, more than data.max_bad_fraction={self.config.data.max_bad_fraction} allows; "
                f"first: {reasons}")
        first_bad = next((i for i, v in enumerate(values) if not np.isfinite(v)), None)
        if all_reduce(env, 0.0 if first_bad is not None else 1.0, "min", self.device) < 1:
            if first_bad is None:
                where = interval.where[0] if interval.where else (state.epoch, state.step, state.position)
                self._non_finite(float("nan"), where, other_rank=True)
            self._non_finite(values[first_bad], interval.where[first_bad])
        for mean in interval.step_means(values):
            if mean is not None:
                state.epoch_loss_sum += mean
                state.epoch_loss_n += 1
        interval.clear()
        return interval.last_mean

    def _keep_best(self, record: dict[str, Any], validated: bool) -> None:
        """Export ``best`` when the record's best metric beats the best so far (rank 0)."""
        state = self.state
        value = record.get(self.plan.best_metric)
        if self.main and value is not None and (validated or self.plan.best_metric == "train_loss"):
            if self._is_better(float(value), state.best_value):
                state.best_value = float(value)
                state.best_epoch = record["epoch"]
                info = {**self.training_info, "epoch": record["epoch"], "step": state.step,
                        "metric": self.plan.best_metric, "value": float(value)}
                self.exports.update(self._export("best", info))
            record["best"] = state.best_value

    def _export_final(self) -> None:
        info = {**self.training_info, "epoch": self.state.epoch, "step": self.state.step}
        self.exports.update(self._export("final", info))
        if self.state.best_value is None:  # no metric ever computed (e.g. stopped at once): final is best
            self.exports.update(self._export("best", {**info, "metric": "none"}))
        self.exports.update({k: str(self.folder / f"{k}.pt") for k in ("best", "best_audio_head")
                             if (self.folder / f"{k}.pt").is_file()})

    def _export(self, tag: str, training: dict[str, Any]) -> dict[str, str]:
        task = unwrap(self.model)
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

    def _non_finite(self, value: float, where: tuple[int, int, int], other_rank: bool = False) -> None:
        epoch, step, position = where
        at = f"epoch {epoch + 1}, optimiser step {step} (batch {position} of the epoch)"
        if self.last_path.is_file():
            kept = f"the last good checkpoint {self.last_path} was left as it was"
        else:
            kept = "no checkpoint had been written yet"
        became = "became non-finite on another rank" if other_rank else f"became {value}"
        message = (f"{self.split.name}: the loss {became} at {at}; training stopped and {kept}. "
                   f"Lower optim.lr, use precision=fp32 or bf16, or check the input data.")
        self._metrics().write({"kind": "error", "step": step - 1, "epoch": epoch + 1, "error": message})
        raise NonFiniteLossError(message)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _metrics(self) -> MetricsLog:
        assert self.metrics is not None, "run() opens the metrics log"
        return self.metrics

    # -- setup ---------------------------------------------------------------------------------

    def _build_model(self) -> None:
        """The stage's task, its optimiser (SGD), LR schedule, GradScaler, and the DDP wrapper."""
        cfg, env, device = self.config, self.env, self.device
        task = build_task(cfg, self.source.class_names, self.plan.multilabel, self.plan.use_image,
                          self.plan.use_text).to(device)
        if cfg.model.sync_bn and env.enabled:
            task = torch.nn.SyncBatchNorm.convert_sync_batchnorm(task)
        self.params = [p for p in task.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("nothing to train: every parameter is frozen")
        opt = cfg.optim
        self.optimizer = torch.optim.SGD(self.params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                                         weight_decay=opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=opt.gamma)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.model: torch.nn.Module = task
        if env.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(task, device_ids=[device.index] if device.type == "cuda" else None,
                             find_unused_parameters=False)

    def _build_data(self) -> None:
        """Datasets, the resumable sampler, the loader, the augmentation and its generator."""
        cfg, env, device = self.config, self.env, self.device
        self.train_set, self.val_set = self._datasets()
        self.sampler = ResumableDistributedSampler(self.train_set, num_replicas=env.world_size, rank=env.rank,
                                                   shuffle=True, seed=cfg.seed)
        self.per_epoch = self.sampler.batches_per_epoch(cfg.batch_size)
        if self.per_epoch < 1:
            raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {self.sampler.num_samples} training "
                              f"samples per process of {self.split.name}; lower batch_size")
        steps_per_epoch = -(-self.per_epoch // cfg.grad_accum)
        self.total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.bad_budget = cfg.data.max_bad_fraction * len(self.train_set)
        self.augmenter = Augmenter(cfg.augment, self.source.clip_samples)
        self.loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True, collate_fn=collate,
            num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0, generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.generator = torch.Generator(device=device)

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


@dataclass
class TrainState:
    """Where a unit stands; saved in ``last.pt`` and read back by ``Trainer.resume``."""

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
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        s = cls(**{k: d[k] for k in ("epoch", "position", "step", "best_value", "best_epoch", "epoch_loss_sum",
                                     "epoch_loss_n", "elapsed") if k in d})
        s.bad = {int(k): v for k, v in d.get("bad", {}).items()}
        return s


@dataclass
class _Interval:
    """The micro-batch losses since the last resolution, kept on the device until ``take``.

    ``sizes`` are the readable samples each loss averages (0 for a zero-weight repeat, which is
    checked for finiteness but not counted); ``step_ends`` closes each optimiser step's group.
    """

    losses: list[torch.Tensor] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    where: list[tuple[int, int, int]] = field(default_factory=list)  # (epoch, step, batch position)
    step_ends: list[int] = field(default_factory=list)
    samples: int = 0  # readable samples trained on since the last train record
    last_mean: float = float("nan")

    def add(self, loss: torch.Tensor, size: int, where: tuple[int, int, int]) -> None:
        self.losses.append(loss.reshape(()))
        self.sizes.append(size)
        self.where.append(where)
        self.samples += size

    def close_step(self) -> None:
        self.step_ends.append(len(self.losses))

    def take(self) -> list[float]:
        """The losses as Python floats: one device-to-host copy for the whole interval."""
        return torch.stack(self.losses).tolist() if self.losses else []

    def step_means(self, values: list[float]) -> list[float | None]:
        """Each step's sample-weighted mean loss (None for a step without a readable sample)."""
        means: list[float | None] = []
        start = 0
        for end in self.step_ends:
            total, n = 0.0, 0
            for value, size in zip(values[start:end], self.sizes[start:end], strict=True):
                if size:
                    total += value * size
                    n += size
            means.append(total / n if n else None)
            start = end
        self.last_mean = means[-1] if means and means[-1] is not None else float("nan")
        return means

    def clear(self) -> None:
        self.losses.clear()
        self.sizes.clear()
        self.where.clear()
        self.step_ends.clear()


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
