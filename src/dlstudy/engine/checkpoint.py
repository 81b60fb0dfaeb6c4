"""Checkpoints: everything needed to continue a run exactly, saved atomically and loaded with weights_only=True.

    {"model", "optimizer", "scheduler", "scaler", "objective": state dicts (objective holds e.g. the centres),
     "rng": {"torch", "cuda", "numpy", "python"} of the writing process (rank 0),
     "rng_ranks": [rng of rank 0, rank 1, ...] under DDP (each rank draws its own dropout masks), else None,
     "epoch": last finished epoch, "config": RunConfig as a dict,
     "state": TrainState.to_dict(): {"history": [...], "steps": [...], "before": {...}, "best_val_acc",
              "best_epoch", "elapsed_s"}}

RNG states are stored as tensors, lists and numbers only, so the weights-only unpickler accepts them.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from dlstudy.errors import WeightsError
from dlstudy.models.weights import load_torch_file
from dlstudy.io import atomic_write


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)  # {'bit_generator', 'state': {'key', 'pos'}, 'has_gauss', 'gauss'}
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": np_state["state"]["pos"],
                  "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]},
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def rank_rng_state(ckpt: dict, rank: int, world_size: int) -> dict | None:
    """The RNG states `rank` saved in `ckpt`; None when the checkpoint lacks them (written before per-rank states
    were kept, or by a different number of processes), except rank 0, which gets the writer's own."""
    ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
    if len(ranks) == world_size:
        return ranks[rank]
    return ckpt["rng"] if rank == 0 else None


def save_checkpoint(path: str | Path, *, model, optimizer=None, scheduler=None, scaler=None, objective=None,
                    epoch: int, config: dict, state: dict | None = None, rng_ranks: list[dict] | None = None) -> Path:
    """Write the checkpoint atomically (a crash mid-save leaves the previous file intact); a full disk raises
    DiskFullError naming the file and the free space, and the previous (complete) checkpoint is what a resume reads.

    rng_ranks: every DDP rank's `rng_state()` in rank order (distributed.all_gather_object), so each rank resumes
    its own random streams; None for a single process.
    """
    ckpt = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "objective": objective.state_dict() if objective is not None else None,
        "rng": rng_state(),
        "rng_ranks": rng_ranks,
        "epoch": epoch,
        "config": config,
        "state": state or {},
    }
    return atomic_write(path, lambda fh: torch.save(ckpt, fh))  # streamed: never a second copy in memory


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    return load_torch_file(path, "checkpoint")
