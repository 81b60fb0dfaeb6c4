"""A session's checkpoints: best.pt / last.pt after an epoch, and everything restored from last.pt on resume.

    save_epoch(session, folder, epoch, improved, rng_ranks)   # best.pt (weights only, when improved), then last.pt
    restore(session, folder / "last.pt")                       # weights, optimizer, schedule, state, RNG streams
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dlstudy.config import to_dict
from dlstudy.engine.checkpoint import load_checkpoint, rank_rng_state, save_checkpoint, set_rng_state
from dlstudy.engine.distributed import rank_seed
from dlstudy.engine.state import TrainState

log = logging.getLogger(__name__)


def save_epoch(session, folder: Path, epoch: int, improved: bool, rng_ranks: list | None = None) -> None:
    """best.pt (weights only) then last.pt (everything): a crash between the two leaves a consistent pair."""
    config = to_dict(session.cfg)
    if improved:
        save_checkpoint(folder / "best.pt", model=session.model, epoch=epoch, config=config,
                        state={"val_acc": session.state.best_val_acc})
    save_checkpoint(folder / "last.pt", model=session.model, optimizer=session.optimizer,
                    scheduler=session.scheduler, scaler=session.scaler, objective=session.objective, epoch=epoch,
                    config=config, state=session.state.to_dict(), rng_ranks=rng_ranks)


def restore(session, path: Path) -> None:
    """Continue `session` from last.pt at `path`: weights, optimizer, schedule, scaler, objective, TrainState, the
    best weights (best.pt beside it) and this rank's RNG streams."""
    ckpt = load_checkpoint(path)
    session.model.load_state_dict(ckpt["model"])
    session.optimizer.load_state_dict(ckpt["optimizer"])
    session.scheduler.load_state_dict(ckpt["scheduler"])
    if session.scaler is not None and ckpt.get("scaler"):
        session.scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("objective"):
        session.objective.load_state_dict(ckpt["objective"])
    session.state = TrainState.from_dict(ckpt["state"])
    session.start_epoch = int(ckpt["epoch"])
    best_path = path.parent / "best.pt"
    if best_path.is_file():
        best = load_checkpoint(best_path)
        # best.pt is written before last.pt: after a crash between the two it can be one epoch ahead of the
        # state, and the rerun of that epoch rewrites it.
        if int(best.get("epoch", -1)) == session.state.best_epoch:
            session.best_model = best["model"]
    _restore_rng(session, ckpt)  # last: nothing above may draw random numbers afterwards
    log.info("resumed from %s after epoch %d", path, session.start_epoch)


def _restore_rng(session, ckpt: dict) -> None:
    """This rank's own RNG states; a checkpoint without them (older, or another number of processes) gives
    rank 0's to rank 0 and a fresh per-rank stream to the others, which then do not repeat rank 0's masks."""
    info = session.info
    rng = rank_rng_state(ckpt, info.rank, info.world_size)
    set_rng_state(rng if rng is not None else ckpt["rng"])
    if rng is None:
        log.warning("rank %d: the checkpoint holds no RNG state of this rank (saved by another number of "
                    "processes or an older version): dropout continues from a new seed, so this run will not "
                    "repeat an uninterrupted one exactly", info.rank)
        torch.manual_seed(rank_seed(session.cfg.seed + session.start_epoch, info.rank))
