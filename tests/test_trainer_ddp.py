"""DistributedDataParallel on CPU: two gloo processes train an epoch; only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from audioclip_search.trainer import TrainConfig, build_config, train
from tests.test_trainer_utils import FAST, train_losses, two_fold_esc50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: dict, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    result = train(TrainConfig.from_dict(config), out)
    with open(os.path.join(out, f"worker{rank}.json"), "w") as fh:
        json.dump({"steps": result.units[0].steps, "epochs": result.units[0].epochs_done}, fh)


@pytest.mark.skipif(not torch.distributed.is_available() or sys.platform == "win32", reason="needs torch.distributed")
def test_two_process_ddp_epoch(tmp_path):
    root = two_fold_esc50(tmp_path)
    out = tmp_path / "ddp"
    # Fine-tuning (audio + text, text head frozen): 8 training clips, 4 per rank, batches of 2.
    cfg = build_config("finetune", overrides=[*FAST, f"data.root={root}", "data.folds=[1]", "data.limit=8",
                                              "batch_size=2", "epochs=1", "threads=1", "model.train_fbsp=false"])
    mp.spawn(_worker, args=(2, _free_port(), cfg.to_dict(), str(out)), nprocs=2, join=True)
    workers = [json.loads((out / f"worker{r}.json").read_text()) for r in range(2)]
    assert workers == [{"steps": 2, "epochs": 1}] * 2  # each rank saw its half of the epoch
    fold = out / "fold1"
    losses = train_losses(fold)
    assert sorted(losses) == [1, 2] and all(v == v for v in losses.values())
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["backend"] == "gloo"
    vals = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert len(vals) == 1 and vals[0]["val_samples"] == 8  # validation on rank 0 over the whole fold
    from audioclip_search.checkpoints import load_model

    load_model(fold / "best.pt", device="cpu")
    assert not list(out.rglob(".*.tmp-*"))  # no torn or concurrent writes left behind
