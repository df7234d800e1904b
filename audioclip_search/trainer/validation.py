"""Validation of a training task: the loss and the stage's metrics on a held-out split.

Rank 0 runs it on the whole split (centre-fitted clips, central frames) while other ranks wait.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..audio import to_model_scale
from ..devices import autocast
from .config import TrainConfig
from .data import TrainingSet, collate
from .plan import StagePlan
from .tasks import ClassifierTask

__all__ = ["batch_to", "evaluate", "unwrap"]


def batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated batch with its tensors on ``device`` (non-blocking from pinned memory on CUDA)."""
    non_blocking = device.type == "cuda"
    return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The task inside a DistributedDataParallel wrapper (or the task itself)."""
    return module.module if hasattr(module, "module") else module



@torch.no_grad()
def evaluate(task: torch.nn.Module, dataset: TrainingSet, config: TrainConfig, plan: StagePlan,
             device: torch.device, precision: str) -> tuple[dict[str, float], list[Any]]:
    """Validation metrics of ``task`` on ``dataset`` (centre-fitted clips, central frames)."""
    from ..evaluation.metrics import class_average_precision, retrieval_metrics, topk_hits
    from ..model import contrastive_loss
    from ..text import format_labels, tokenize

    task = unwrap(task)
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
            batch = batch_to(batch, device)
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

