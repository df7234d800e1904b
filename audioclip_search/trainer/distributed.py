"""DistributedDataParallel plumbing: process group from torchrun's environment, a resumable sampler,
and the few collectives the loop needs. A single process is the world of size 1 (no process group).

Launch several processes with torchrun (one per GPU, any number of nodes)::

    torchrun --nproc_per_node 8 -m audioclip_search.trainer --preset full ... --out DIR
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m audioclip_search.trainer ...

NCCL on CUDA, gloo on CPU. Only rank 0 writes files; every rank reads the same data and sees
its own shard of each epoch's order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

__all__ = ["DistEnv", "ResumableDistributedSampler", "all_gather_object", "all_reduce", "barrier", "cleanup",
           "derive_seed", "init_distributed"]


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this module created the process group and tears it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu") -> DistEnv:
    """Join the process group torchrun describes (WORLD_SIZE > 1), else a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend(), owns_group=False)
    backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(rank, world, local_rank, backend, owns_group=True)


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def all_reduce(env: DistEnv, value: float, op: str = "sum", device: torch.device | None = None) -> float:
    """A Python number reduced over ranks (sum, min or max); the number itself in a world of one."""
    if not env.enabled:
        return value
    dev = device if device is not None and env.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return float(t.item())


def all_gather_object(env: DistEnv, obj: Any) -> list[Any]:
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, rank, epoch, step...): stable across runs and platforms."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (seeded shuffle per epoch, one shard per rank) that can start part-way
    through an epoch: ``set_start(n)`` skips this rank's first ``n`` indices of the epoch, which
    is how a resumed run continues with exactly the batches the interrupted one had not seen."""

    def __init__(self, dataset: Any, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = max(0, int(start))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """(epoch, index) pairs: the dataset reads the epoch from the index (persistent workers)."""
        indices = list(super().__iter__())
        return iter([(self.epoch, i) for i in indices[self.start:]])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)

    def batches_per_epoch(self, batch_size: int, drop_last: bool = True) -> int:
        return self.num_samples // batch_size if drop_last else math.ceil(self.num_samples / batch_size)
