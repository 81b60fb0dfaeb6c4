"""One training run's live objects: build them, then fit (evaluate before, train epoch by epoch, evaluate the best).

    session = Session(cfg, info, device)                         # data, model, objective, optimizer, schedule
    after, y_score, y_true, extras = session.fit(EpochOutput(checkpoints, log), resume=False)

Under torchrun every rank runs it. The session writes only checkpoints (rank 0, engine.snapshot); each finished
epoch's TrainState goes to `EpochOutput.log`, the job's writer of history.csv. Everything else is the job's
(dlstudy.jobs.train).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlstudy.config import RunConfig
from dlstudy.engine.build import (build_network, build_optimization, epoch_batches, init_from_training_images,
                                  load_data, seed_everything, set_deterministic, steps_per_epoch, train_subset,
                                  training_wrapper)
from dlstudy.engine.checkpoint import rng_state
from dlstudy.engine.distributed import DistInfo, all_gather_object, barrier, rank_seed
from dlstudy.engine.loop import AMP_DTYPES, amp_dtype_for, diverged, evaluate, run_lr, train_one_epoch
from dlstudy.engine.snapshot import restore, save_epoch
from dlstudy.engine.state import TrainState
from dlstudy.errors import ConfigError, ScoresNotFinite, TrainingDiverged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochOutput:
    """Where rank 0 puts a finished epoch: best.pt / last.pt in `checkpoints` (when train.checkpoint), then
    `log(state)` (the job writes history.csv / steps.csv from it)."""

    checkpoints: Path
    log: Callable[[TrainState], None] = lambda state: None


class Session:
    """Build with `Session(cfg, info, device)`; `fit(output, resume)` trains and evaluates."""

    def __init__(self, cfg: RunConfig, info: DistInfo, device: str):
        self.cfg, self.info, self.device = cfg, info, device
        if cfg.train.amp not in AMP_DTYPES:
            raise ConfigError(f"train.amp: expected one of {list(AMP_DTYPES)}, got {cfg.train.amp!r}")
        self.amp_dtype, why_not = amp_dtype_for(cfg.train.amp, device)
        if why_not:
            log.info("%s; training in float32 on %s", why_not, device)
        set_deterministic(cfg.train.deterministic, device)
        seed_everything(cfg.seed)
        self.data = load_data(cfg, device)
        self.model, self.objective = build_network(cfg, self.data, device)
        init_from_training_images(self.model, self.data, cfg)
        # Same initial weights on every rank (drawn above from cfg.seed); from here on each rank draws its own
        # dropout masks. Augmentation has its own per-rank seed (train_batches).
        self.rank_seed = rank_seed(cfg.seed, info.rank)
        torch.manual_seed(self.rank_seed)
        self.needs_pk = getattr(self.objective, "needs_pk_sampler", False)
        self.steps_per_epoch = steps_per_epoch(self.data.train.labels, cfg, info, self.needs_pk)
        self.optimizer, self.scheduler, self.scaler = build_optimization(self.model, cfg, self.steps_per_epoch,
                                                                         self.amp_dtype)
        self.train_eval = train_subset(self.data.train, cfg.train.train_eval_subset, cfg.seed)
        self.state, self.start_epoch = TrainState(), 0
        self.best_model = None  # CPU copy of the best weights (every rank holds it for the final evaluation)
        self.train_model, self._wrapped_frozen = None, None

    def train_batches(self, epoch: int):
        return epoch_batches(self.data, self.cfg, self.info, self.needs_pk, epoch, self.rank_seed, self.device)

    def evaluate(self, split, objective: bool = True, diverged_at: dict | None = None):
        """(metrics, y_score, y_true) of the classification head on `split` (engine.loop.evaluate); NaN/inf scores
        raise TrainingDiverged, saying where training stood when `diverged_at` ({"epoch", "step", "what"}) is
        given."""
        if diverged_at is not None:
            diverged_at = {"lr": run_lr(self.optimizer), "grad_clip": self.cfg.train.grad_clip, **diverged_at}
        return evaluate(self.model, split, mean=self.data.mean, std=self.data.std, device=self.device,
                        class_names=self.data.class_names, batch_size=self.cfg.train.eval_batch_size,
                        objective=self.objective if objective else None, info=self.info,
                        amp_dtype=self.amp_dtype, channels_last=self.cfg.train.channels_last,
                        diverged_at=diverged_at, tta=self.cfg.eval.tta)

    def evaluate_test(self) -> tuple[dict, np.ndarray, np.ndarray, dict]:
        """(metrics, y_score, y_true, extras) on test with eval.classifier: the head, or an svm / knn fitted on
        train embeddings (engine.evaluation). extras: "scores_val" (val scores of the same classifier, when val
        has images), "svm" (a fitted embedding LinearSVM, else None), "embeddings_test" / "labels_test"."""
        if self.cfg.eval.classifier != "head":
            return embedding_test(self)
        metrics, y_score, y_true = self.evaluate(self.data.test, diverged_at=trained_at(self.state, "test scores"))
        extras = {"svm": None}
        if len(self.data.val.labels):
            extras["scores_val"] = self.evaluate(self.data.val, objective=False,
                                                 diverged_at=trained_at(self.state, "val scores"))[1]
        return metrics, y_score, y_true, extras

    def _wrap(self, frozen: bool) -> None:
        """Freeze/unfreeze the backbone and (re)build the DDP/compile wrapper, which must see the new trainables."""
        if frozen != self._wrapped_frozen:
            self.model.set_backbone_frozen(frozen)
            self.train_model = training_wrapper(self.model, self.objective, self.info, self.device,
                                                self.cfg.train.compile)
            self._wrapped_frozen = frozen

    def run_epoch(self, epoch: int, output: EpochOutput) -> None:
        cfg, st = self.cfg, self.state
        frozen = epoch <= cfg.train.freeze_backbone_epochs
        self._wrap(frozen)
        try:  # a divergence is one error wherever it is first seen: the training loss, or val / train scores
            stats = train_one_epoch(
                self.train_model, self.objective, self.optimizer, self.train_batches(epoch), device=self.device,
                epoch=epoch, scheduler=self.scheduler, scaler=self.scaler, amp_dtype=self.amp_dtype,
                grad_clip=cfg.train.grad_clip, channels_last=cfg.train.channels_last,
                max_steps=cfg.train.max_steps_per_epoch, total=self.steps_per_epoch, info=self.info)
            at = {"epoch": epoch, "step": len(stats["step_losses"])}
            val, _, _ = self.evaluate(self.data.val, diverged_at={**at, "what": "val scores"})
            tr = (self.evaluate(self.train_eval, diverged_at={**at, "what": "train-subset scores"})[0]
                  if self.train_eval is not None else None)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{exc}; the last good checkpoint is kept: {kept_checkpoint(output)}") from None
        st.add_epoch(history_row(epoch, frozen, stats, val, tr, self.optimizer), stats)
        # An objective that never trains the head (triplet alone) cannot pick the best epoch by the head's val
        # accuracy: the last epoch's weights are kept instead.
        improved = val["accuracy"] > st.best_val_acc if self.objective.spec.trains_head else True
        if improved:
            st.best_val_acc, st.best_epoch = val["accuracy"], epoch
            self.best_model = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs, %.0f img/s%s", epoch,
                 cfg.train.epochs, stats["loss"], stats["acc"], val["loss"], val["accuracy"], stats["time_s"],
                 stats["images_per_s"], " *" if improved else "")
        # every rank's RNG states, taken at the same point of the epoch, so each rank resumes its own streams
        rng_ranks = all_gather_object(rng_state(), self.info) if self.info.enabled and cfg.train.checkpoint else None
        if self.info.is_main:
            if cfg.train.checkpoint:
                save_epoch(self, output.checkpoints, epoch, improved, rng_ranks)
            output.log(st)
        barrier(self.info)

    def fit(self, output: EpochOutput, resume: bool = False) -> tuple[dict, np.ndarray, np.ndarray, dict]:
        """Before-evaluation (into state.before), the epochs, then evaluate_test() of the best weights."""
        last = output.checkpoints / "last.pt"
        if resume and last.is_file():
            restore(self, last)
        elif resume:
            log.info("--resume: no checkpoint at %s, starting from epoch 1", last)
        if self.state.before is None and self.cfg.train.evaluate_before:
            before, _, _ = self.evaluate(self.data.test)
            self.state.before = metric_block(before)
            log.info("before training: test accuracy %.4f", before["accuracy"])
        for epoch in range(self.start_epoch + 1, self.cfg.train.epochs + 1):
            self.run_epoch(epoch, output)
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        after = self.evaluate_test()
        log.info("after training (best epoch %d): test accuracy %.4f", self.state.best_epoch, after[0]["accuracy"])
        return after


def trained_at(state: TrainState, what: str) -> dict | None:
    """The divergence context of an evaluation after training (the best epoch's weights, its last step)."""
    steps = [row["step"] for row in state.steps if row["epoch"] == state.best_epoch]
    return {"epoch": state.best_epoch, "step": steps[-1], "what": what} if steps else None


def embedding_test(session: Session) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """Session.evaluate_test with eval.classifier svm / knn: fitted on train embeddings (engine.evaluation)."""
    from dlstudy.engine.evaluation import evaluate_model_embeddings

    cfg, extras = session.cfg, {}
    try:
        metrics, y_score, y_true = evaluate_model_embeddings(
            session.model, session.data, cfg, session.device, cfg.train.eval_batch_size, extras,
            info=session.info, amp_dtype=session.amp_dtype)
    except ScoresNotFinite:
        at = trained_at(session.state, "test scores")
        if at is None:
            raise
        raise diverged(**at, value="nan", lr=run_lr(session.optimizer), grad_clip=cfg.train.grad_clip) from None
    return metrics, y_score, y_true, extras


def kept_checkpoint(output: EpochOutput) -> str:
    """What a divergence error says survives: the last epoch's checkpoint, if one was written."""
    kept = output.checkpoints / "last.pt"
    return str(kept) if kept.is_file() else "none (first epoch, or train.checkpoint is false)"


def history_row(epoch: int, frozen: bool, stats: dict, val: dict, tr: dict | None, optimizer) -> dict:
    """The history.csv row of an epoch: train_one_epoch's stats, val (and train-subset) evaluation, the lrs."""
    lrs = {g.get("name"): g["lr"] for g in optimizer.param_groups}
    return {"epoch": epoch, "train_loss": stats["loss"], "train_acc": stats["acc"], "val_loss": val["loss"],
            "val_acc": val["accuracy"], "train_eval_loss": tr["loss"] if tr else None,
            "train_eval_acc": tr["accuracy"] if tr else None, "lr": lrs.get("head"),
            "backbone_lr": 0.0 if frozen else lrs.get("backbone"), "backbone_frozen": int(frozen),
            "time_s": stats["time_s"], "images_per_s": stats["images_per_s"]}


def metric_block(metrics: dict) -> dict:
    """The metric keys every metrics.json block holds (+ loss when there) of an evaluation, in table order."""
    from dlstudy.metrics.table import metric_keys

    return {k: metrics[k] for k in (*metric_keys(), "loss") if k in metrics}
