"""DistributedDataParallel plumbing, driven by the environment variables `torchrun` sets.

One process per device. `train.batch_size` is per process (torchvision's convention); each global batch of
`batch_size * world_size` shuffled indices is dealt out rank by rank, so every rank sees a disjoint shard.
Only rank 0 writes files. Evaluation shards the split into contiguous chunks and gathers the scores back in order,
so the metrics equal those of one process evaluating the whole split.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this machine (to split the CPU threads between them)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[DistInfo, str]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns (info, this process's device).

    Backend: nccl on CUDA, gloo on CPU. A single process returns DistInfo() and `device` unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                    int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if device.startswith("cuda"):
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return info, device


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of `rank`'s own random streams (dropout masks, augmentation draws): `seed` itself on rank 0, so a
    single process and DDP rank 0 draw alike, and an unrelated seed on every other rank (not seed + rank, which
    would make rank 1 of seed 0 replay rank 0 of seed 1)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint32)[0])


@contextlib.contextmanager
def quiet_other_ranks(info: DistInfo, logger: str = "dlstudy"):
    """Only rank 0 logs progress (INFO) under DDP, so torchrun's output holds each line once; warnings and errors
    still come from every rank, and `dlstudy -v` (DEBUG) keeps every rank talking."""
    log = logging.getLogger(logger)
    if not info.enabled or info.is_main or log.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def global_index_batches(n: int, batch_size: int, seed: int, epoch: int, drop_last: bool) -> Iterator[list[int]]:
    """Shuffled batches of indices into 0..n-1, one permutation per (seed, epoch) so a resumed run repeats it."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start:start + batch_size].tolist()


def shard_batches(index_batches: Iterable[list[int]], info: DistInfo, block: int = 1) -> Iterator[list[int]]:
    """Rank r's part of each global batch: blocks r, r + W, r + 2W, ... of `block` consecutive indices.

    block=1 deals single indices; a P x K batch uses block=K so each rank keeps whole classes (K images each) and
    can still form triplets. Empty parts are skipped, so use full batches.
    """
    for batch in index_batches:
        blocks = [batch[i:i + block] for i in range(0, len(batch), block)]
        part = [index for chunk in blocks[info.rank::info.world_size] for index in chunk]
        if part:
            yield part


def all_reduce_sum(values: list[float], info: DistInfo, device: str) -> list[float]:
    """Element-wise sum of `values` over ranks (identity without DDP)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def shard_range(n: int, info: DistInfo) -> tuple[int, int]:
    """[start, stop) of rank's contiguous chunk of n items (chunks differ in size by at most one)."""
    per, extra = divmod(n, info.world_size)
    start = info.rank * per + min(info.rank, extra)
    return start, start + per + (1 if info.rank < extra else 0)


def gather_rows(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's (n_r, ...) tensor in rank order; ranks may hold different n_r."""
    if not info.enabled:
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)  # all_gather needs equal shapes
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


def all_gather_object(obj, info: DistInfo) -> list:
    """[rank 0's obj, rank 1's obj, ...] on every rank ([obj] without DDP); e.g. every rank's RNG states."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every rank (e.g. the run folder path)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
