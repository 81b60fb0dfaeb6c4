"""The train job: evaluate before, train epoch by epoch (checkpoints, history), evaluate the best model after.

    run_train_job(cfg, run_dir, resume=False) -> metrics dict
        metrics.json = {"before": {METRIC_KEYS}, "after": {METRIC_KEYS}, <after's keys>, "train_time_s", ...}

`Session` wires the pieces (data, model, objective, optimizer, schedule, DDP wrapper) and runs the epochs;
`train_one_epoch` / `evaluate` do the work. Under torchrun every rank runs this; only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import os
import random

import numpy as np
import torch
from torch import nn

from dlstudy.config import RunConfig, to_dict
from dlstudy.engine import outputs
from dlstudy.engine.checkpoint import load_checkpoint, rank_rng_state, rng_state, save_checkpoint, set_rng_state
from dlstudy.engine.distributed import (DistInfo, all_gather_object, barrier, global_index_batches, init_distributed,
                                        quiet_other_ranks, rank_seed, shard_batches, shutdown_distributed)
from dlstudy.engine.loop import AMP_DTYPES, amp_dtype_for, evaluate, train_one_epoch
from dlstudy.engine.state import TrainState
from dlstudy.engine.threads import choose_threads, forward_flops
from dlstudy.errors import ConfigError, TrainingDiverged
from dlstudy.report import finish_run
from dlstudy.runs import RunDir, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(deterministic: bool, device: str) -> None:
    """`train.deterministic`: PyTorch's deterministic kernels (slower); otherwise cuDNN autotuning on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = (not deterministic) and device.startswith("cuda")


def train_subset(split, size: int, seed: int):
    """A fixed, sorted random subset of the training split (same every epoch) for train loss/acc in eval mode."""
    n = len(split.labels)
    if size <= 0:
        return None
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, min(size, n), replace=False)))
    return split.subset(idx.to(split.images.device))


class Session:
    """One training run's live objects. Build with `Session(cfg, info, device)`, then `fit(run_dir, resume)`."""

    def __init__(self, cfg: RunConfig, info: DistInfo, device: str):
        from dlstudy.data import load_dataset
        from dlstudy.losses import build_objective
        from dlstudy.models import build_model

        self.cfg, self.info, self.device = cfg, info, device
        if cfg.train.amp not in AMP_DTYPES:
            raise ConfigError(f"train.amp: expected one of {list(AMP_DTYPES)}, got {cfg.train.amp!r}")
        self.amp_dtype, why_not = amp_dtype_for(cfg.train.amp, device)
        if why_not:
            log.info("%s; training in float32 on %s", why_not, device)
        set_deterministic(cfg.train.deterministic, device)
        seed_everything(cfg.seed)
        self.data = load_dataset(cfg.data)
        if device.startswith("cuda"):  # uint8 splits on the GPU: batches are indexed there, no host copies
            for name in ("train", "val", "test"):
                setattr(self.data, name, getattr(self.data, name).to(device))
        c, h, _ = self.data.image_shape
        self.model = build_model(cfg.model, self.data.num_classes, c, h, frozen_bn=cfg.train.frozen_bn).to(device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._check_batchnorm()
        self.objective = build_objective(cfg.loss, self.data.num_classes, self.model.feature_dim,
                                         cfg.model.embedding_dim, cfg.train.label_smoothing).to(device)
        self.objective.float_components = False  # the loop reads only "loss": no host sync per component per step
        # Same initial weights on every rank (drawn above from cfg.seed); from here on each rank draws its own
        # dropout masks. Augmentation has its own per-rank seed (train_batches).
        self.rank_seed = rank_seed(cfg.seed, info.rank)
        torch.manual_seed(self.rank_seed)
        self._build_optimizer()
        self.train_eval = train_subset(self.data.train, cfg.train.train_eval_subset, cfg.seed)
        self.state = TrainState()
        self.best_model = None  # CPU copy of the best weights (every rank holds it for the final evaluation)
        self.start_epoch = 0
        self.train_model, self._wrapped_frozen = None, None

    def _check_batchnorm(self) -> None:
        """ConfigError for BatchNorm at batch size 1 unless train.frozen_bn (the model then keeps BN fixed)."""
        from dlstudy.optim import check_batchnorm_batch_size

        check_batchnorm_batch_size(self.model, self.cfg.train.batch_size, self.cfg.train.frozen_bn)

    def _build_optimizer(self) -> None:
        from dlstudy.optim import build_optimizer, build_scheduler

        groups = [{"params": list(self.model.backbone_parameters()), "lr_mult": self.cfg.train.backbone_lr_mult,
                   "name": "backbone"},
                  {"params": list(self.model.head_parameters()), "lr_mult": 1.0, "name": "head"}]
        self.optimizer = build_optimizer([g for g in groups if g["params"]], self.cfg.optim)
        self.steps_per_epoch = self._steps_per_epoch()
        self.scheduler = build_scheduler(self.optimizer, self.cfg.train, self.steps_per_epoch)
        use_scaler = self.amp_dtype is torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    # ------------------------------------------------------------------------------------------------ batches

    def _pk_sampler(self):
        from dlstudy.losses import PKBatchSampler

        return PKBatchSampler(self.data.train.labels.cpu(), self.cfg.loss.classes_per_batch,
                              self.cfg.loss.samples_per_class, seed=self.cfg.seed)

    def _steps_per_epoch(self) -> int:
        n, b, w = len(self.data.train.labels), self.cfg.train.batch_size, self.info.world_size
        if getattr(self.objective, "needs_pk_sampler", False):
            steps = len(self._pk_sampler())
        elif self.info.enabled:
            steps = n // (b * w)  # DDP: full global batches only, so every rank takes the same number of steps
        else:
            steps = math.ceil(n / b)
        if steps < 1:
            raise ConfigError(f"train.batch_size={b} x {w} process(es) is larger than the training split ({n} images)")
        cap = self.cfg.train.max_steps_per_epoch
        return min(steps, cap) if cap else steps

    def train_batches(self, epoch: int):
        from dlstudy.data import batches

        cfg, info, train = self.cfg, self.info, self.data.train
        sampler = None
        if getattr(self.objective, "needs_pk_sampler", False):
            sampler = self._pk_sampler()
            sampler.set_epoch(epoch)
            if info.enabled:  # whole classes per rank, or no rank could form a triplet
                if cfg.loss.classes_per_batch % info.world_size:
                    raise ConfigError(f"loss.classes_per_batch={cfg.loss.classes_per_batch} must be a multiple of "
                                      f"the {info.world_size} processes, so each keeps whole classes")
                sampler = shard_batches(sampler, info, block=cfg.loss.samples_per_class)
        elif info.enabled:
            global_batches = global_index_batches(len(train.labels), cfg.train.batch_size * info.world_size,
                                                  cfg.seed, epoch, drop_last=True)
            sampler = shard_batches(global_batches, info)
        # The seed drives the shuffle of a single process and the augmentation draws: per rank under DDP, where
        # the shuffle comes from the shared global batches above (same seed on every rank).
        return batches(train, cfg.train.batch_size, shuffle=True, seed=self.rank_seed, epoch=epoch,
                       augment=cfg.data.augment, mean=self.data.mean, std=self.data.std, device=self.device,
                       sampler=sampler)

    # ------------------------------------------------------------------------------------------------ evaluation

    def evaluate(self, split, objective: bool = True):
        return evaluate(self.model, split, mean=self.data.mean, std=self.data.std, device=self.device,
                        class_names=self.data.class_names, batch_size=self.cfg.train.eval_batch_size,
                        objective=self.objective if objective else None, info=self.info,
                        amp_dtype=self.amp_dtype, channels_last=self.cfg.train.channels_last)

    def evaluate_test(self, run_dir: RunDir | None = None) -> tuple[dict, np.ndarray, np.ndarray, dict]:
        """(metrics, y_score, y_true, extras) on the test split with the configured classifier: the head, or an
        svm / knn fitted on train embeddings (dlstudy.engine.evaluation.evaluate_model_embeddings, the one embedding path).

        extras: "scores_val" (val scores of the same classifier, when val has images) and "svm" (a fitted
        embedding LinearSVM, else None). Embedding classifiers also save embeddings_test.pt for the PCA figure.
        """
        if self.cfg.eval.classifier == "head":
            metrics, y_score, y_true = self.evaluate(self.data.test)
            extras = {"svm": None}
            if len(self.data.val.labels):
                extras["scores_val"] = self.evaluate(self.data.val, objective=False)[1]
            return metrics, y_score, y_true, extras
        from dlstudy.engine.evaluation import evaluate_model_embeddings, save_test_embeddings

        extras: dict = {}
        metrics, y_score, y_true = evaluate_model_embeddings(
            self.model, self.data, self.cfg, self.device, self.cfg.train.eval_batch_size, extras, info=self.info,
            amp_dtype=self.amp_dtype)
        if run_dir is not None and self.info.is_main and self.cfg.eval.save_embeddings:
            save_test_embeddings(run_dir.path, extras["embeddings_test"], extras["labels_test"])
        return metrics, y_score, y_true, extras

    def set_threads(self, available: int, run_dir: RunDir) -> int:
        """Torch CPU threads for the training (engine.threads: train.num_threads, else by the work per step),
        recorded in env.json as torch_threads with the reason; returns the count."""
        cfg = self.cfg
        flops = None
        if not cfg.train.num_threads and self.device.startswith("cpu") and available > 1:
            batch = (cfg.loss.classes_per_batch * cfg.loss.samples_per_class
                     if getattr(self.objective, "needs_pk_sampler", False) else cfg.train.batch_size)
            flops = forward_flops(self.model, self.data.image_shape, batch, self.device)
        threads, why = choose_threads(cfg.train.num_threads, self.device, available, flops)
        torch.set_num_threads(threads)
        log.debug("torch threads: %d (%s)", threads, why)
        if self.info.is_main:
            run_dir.update_env(torch_threads=threads, torch_threads_rule=why)
        return threads

    def model_inputs(self) -> dict:
        """The preprocessing the model was trained with, for model.json (statistics of this run's train split)."""
        c, h, w = self.data.image_shape
        return {"image_size": [h, w], "channels": c, "mean": list(self.data.mean), "std": list(self.data.std)}

    # ------------------------------------------------------------------------------------------------ training

    def _wrap(self, frozen: bool) -> None:
        """Freeze/unfreeze the backbone and (re)build the DDP/compile wrapper, which must see the new trainables."""
        if frozen == self._wrapped_frozen:
            return
        self.model.set_backbone_frozen(frozen)
        net: nn.Module = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Heads the objective does not use (the head under triplet alone, an embedding under CE) get no gradient.
            spec = self.objective.spec
            unused = not spec.trains_head or (self.model.embedding is not None and not spec.uses_embedding)
            net = DistributedDataParallel(net, device_ids=[self.info.local_rank] if self.device.startswith("cuda")
                                          else None, find_unused_parameters=unused)
        self.train_model = torch.compile(net) if self.cfg.train.compile else net
        self._wrapped_frozen = frozen

    def resume_from(self, path) -> None:
        ckpt = load_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("objective"):
            self.objective.load_state_dict(ckpt["objective"])
        self.state = TrainState.from_dict(ckpt["state"])
        self.start_epoch = int(ckpt["epoch"])
        best_path = path.parent / "best.pt"
        if best_path.is_file():
            best = load_checkpoint(best_path)
            # best.pt is written before last.pt: after a crash between the two it can be one epoch ahead of the
            # state, and the rerun of that epoch rewrites it.
            if int(best.get("epoch", -1)) == self.state.best_epoch:
                self.best_model = best["model"]
        self._restore_rng(ckpt)  # last: nothing above may draw random numbers afterwards
        log.info("resumed from %s after epoch %d", path, self.start_epoch)

    def _restore_rng(self, ckpt: dict) -> None:
        """This rank's own RNG states; a checkpoint without them (older, or another number of processes) gives
        rank 0's to rank 0 and a fresh per-rank stream to the others, which then do not repeat rank 0's masks."""
        rng = rank_rng_state(ckpt, self.info.rank, self.info.world_size)
        set_rng_state(rng if rng is not None else ckpt["rng"])
        if rng is None:
            log.warning("rank %d: the checkpoint holds no RNG state of this rank (saved by another number of "
                        "processes or an older version): dropout continues from a new seed, so this run will not "
                        "repeat an uninterrupted one exactly", self.info.rank)
            torch.manual_seed(rank_seed(self.cfg.seed + self.start_epoch, self.info.rank))

    def _history_row(self, epoch: int, frozen: bool, stats: dict, val: dict, tr: dict | None) -> dict:
        lrs = {g.get("name"): g["lr"] for g in self.optimizer.param_groups}
        return {"epoch": epoch, "train_loss": stats["loss"], "train_acc": stats["acc"], "val_loss": val["loss"],
                "val_acc": val["accuracy"], "train_eval_loss": tr["loss"] if tr else None,
                "train_eval_acc": tr["accuracy"] if tr else None, "lr": lrs.get("head"),
                "backbone_lr": 0.0 if frozen else lrs.get("backbone"), "backbone_frozen": int(frozen),
                "time_s": stats["time_s"], "images_per_s": stats["images_per_s"]}

    def run_epoch(self, epoch: int, run_dir: RunDir) -> None:
        cfg, ckpt_dir = self.cfg, run_dir.path / "checkpoints"
        frozen = epoch <= cfg.train.freeze_backbone_epochs
        self._wrap(frozen)
        try:
            stats = train_one_epoch(
                self.train_model, self.objective, self.optimizer, self.train_batches(epoch), device=self.device,
                epoch=epoch, scheduler=self.scheduler, scaler=self.scaler, amp_dtype=self.amp_dtype,
                grad_clip=cfg.train.grad_clip, channels_last=cfg.train.channels_last,
                max_steps=cfg.train.max_steps_per_epoch, total=self.steps_per_epoch,
                info=self.info)
        except TrainingDiverged as exc:
            kept = ckpt_dir / "last.pt"
            raise TrainingDiverged(f"{exc}; the last good checkpoint is kept: "
                                   f"{kept if kept.is_file() else 'none (first epoch, or train.checkpoint is false)'}") from None
        val, _, _ = self.evaluate(self.data.val)
        tr = self.evaluate(self.train_eval)[0] if self.train_eval is not None else None
        st = self.state
        st.add_epoch(self._history_row(epoch, frozen, stats, val, tr), stats)
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
            self._write_epoch(run_dir, epoch, improved, rng_ranks)
        barrier(self.info)

    def _write_epoch(self, run_dir: RunDir, epoch: int, improved: bool, rng_ranks: list | None = None) -> None:
        """best.pt (weights only) then last.pt (everything), then the logs: a crash leaves a consistent pair."""
        ckpt_dir, config = run_dir.path / "checkpoints", to_dict(self.cfg)
        if self.cfg.train.checkpoint:
            if improved:
                save_checkpoint(ckpt_dir / "best.pt", model=self.model, epoch=epoch, config=config,
                                state={"val_acc": self.state.best_val_acc})
            save_checkpoint(ckpt_dir / "last.pt", model=self.model, optimizer=self.optimizer,
                            scheduler=self.scheduler, scaler=self.scaler, objective=self.objective, epoch=epoch,
                            config=config, state=self.state.to_dict(), rng_ranks=rng_ranks)
        outputs.write_logs(run_dir, self.state.history, self.state.steps)

    # ------------------------------------------------------------------------------------------------ the run

    def fit(self, run_dir: RunDir, resume: bool = False) -> dict:
        """Before-evaluation, the epochs, then the after-evaluation of the best weights; returns metrics.json."""
        last = run_dir.path / "checkpoints" / "last.pt"
        if self.info.is_main:  # first: a run that fails later can still be loaded from its best.pt
            self._write_model_card(run_dir)
        if resume and last.is_file():
            self.resume_from(last)
        elif resume:
            log.info("--resume: no checkpoint at %s, starting from epoch 1", last)
        if self.state.before is None and self.cfg.train.evaluate_before:
            before, _, _ = self.evaluate(self.data.test)
            self.state.before = outputs.metric_block(before)
            log.info("before training: test accuracy %.4f", before["accuracy"])
        for epoch in range(self.start_epoch + 1, self.cfg.train.epochs + 1):
            self.run_epoch(epoch, run_dir)
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        after, y_score, y_true, extras = self.evaluate_test(run_dir)
        log.info("after training (best epoch %d): test accuracy %.4f", self.state.best_epoch, after["accuracy"])
        metrics = self._metrics(after)
        if self.info.is_main:
            self._write_predictions(run_dir, y_score, y_true, after["score_kind"], extras)
            self._write_results(run_dir, metrics, y_score, y_true)
        return metrics

    def _write_model_card(self, run_dir: RunDir, svm: str | None = None) -> None:
        files = {"checkpoint": "checkpoints/best.pt"} if self.cfg.train.checkpoint else {}
        if svm:
            files["svm"] = svm
        run_dir.write_model_card("network", self.data.class_names, self.model_inputs(), **files)

    def _write_predictions(self, run_dir: RunDir, y_score, y_true, score_kind: str, extras: dict) -> None:
        """predictions.npz (test) and predictions_val.npz; an embedding SVM is saved beside them (model.json)."""
        from dlstudy.predictions import make_predictions, write_predictions

        names = self.data.class_names
        write_predictions(run_dir.file("predictions.npz"),
                          make_predictions(y_true, y_score, score_kind, names, self.data.test.sample_ids()))
        if extras.get("scores_val") is not None:
            write_predictions(run_dir.file("predictions_val.npz"),
                              make_predictions(self.data.val.labels.cpu().numpy(), extras["scores_val"], score_kind,
                                               names, self.data.val.sample_ids()))
        if extras.get("svm") is not None:
            extras["svm"].save(run_dir.file("svm_model.npz"))
            self._write_model_card(run_dir, svm="svm_model.npz")

    def _metrics(self, after: dict) -> dict:
        st = self.state
        metrics = {"before": st.before, "after": outputs.metric_block(after), **outputs.metric_block(after),
                   "best_epoch": st.best_epoch, "best_val_accuracy": st.best_val_acc,
                   "epochs": len(st.history), "train_time_s": st.elapsed_s, "images_per_s": st.images_per_s,
                   "world_size": self.info.world_size, "classifier": self.cfg.eval.classifier,
                   "score_kind": after["score_kind"],
                   "data": self.data.sizes()}
        for key in ("retrieval", "collapse"):  # embedding classifiers add these; the losses study reports them
            if key in after:
                metrics[key] = after[key]
        report = getattr(self.model, "weights_report", None)
        if report is not None:
            metrics["weights"] = {"source": report.source, "loaded": len(report.loaded),
                                  "missing": len(report.missing), "skipped": len(report.skipped)}
        return metrics

    def _write_results(self, run_dir: RunDir, metrics: dict, y_score, y_true) -> None:
        run_dir.write_metrics(metrics)
        outputs.write_logs(run_dir, self.state.history, self.state.steps)
        outputs.save_curves(run_dir, self.state.history)
        if metrics["before"]:
            outputs.save_confusion(run_dir, metrics["before"], "confusion_before", "before training (test)")
        outputs.save_confusion(run_dir, metrics["after"], "confusion_after", "after training (test)")
        if y_score is not None:
            outputs.save_roc(run_dir, y_true, y_score, self.data.class_names, "roc_after")
        run_dir.write_table("before_after", outputs.before_after_rows(metrics["before"], metrics["after"]),
                            ["metric", "before", "after"])


def run_train_job(cfg: RunConfig, run_dir: RunDir, resume: bool = False) -> dict:
    """Train `cfg` into `run_dir` (see the module docstring); under torchrun, one call per rank."""
    info, device = init_distributed(resolve_device(cfg.device))
    threads_before = torch.get_num_threads()
    try:
        _check_resumable(run_dir, resume)
        with quiet_other_ranks(info):
            if info.is_main:
                run_dir.start(cfg, device)
            available = threads_before
            if info.enabled and not device.startswith("cuda"):  # the machine's cores, shared by its processes
                available = max(1, (os.cpu_count() or 1) // info.local_world_size)
            torch.set_num_threads(cfg.train.num_threads or available)  # while the data loads
            session = Session(cfg, info, device)
            session.set_threads(available, run_dir)
            metrics = session.fit(run_dir, resume=resume)
            if info.is_main:
                finish_run(run_dir)
                if cfg.train.checkpoint and not cfg.train.keep_last_checkpoint:
                    # After DONE, never before: a run killed between the two steps is then a finished run with a
                    # spare last.pt, whereas removing it first would leave an unfinished run without its resume
                    # point, which the next `dlstudy run` would train again from epoch 1.
                    (run_dir.path / "checkpoints" / "last.pt").unlink(missing_ok=True)
            barrier(info)
            return metrics
    finally:
        torch.set_num_threads(threads_before)  # the next run of a study in this process gets the default back
        shutdown_distributed()


def _check_resumable(run_dir: RunDir, resume: bool) -> None:
    """ConfigError for --resume of a finished run that has no last.pt left: it would silently train from scratch."""
    last = run_dir.path / "checkpoints" / "last.pt"
    if resume and run_dir.is_done and not last.is_file():
        raise ConfigError(f"--resume {run_dir.path}: the run is finished and its checkpoints/last.pt was removed "
                          f"(train.keep_last_checkpoint: false, the default, or train.checkpoint: false), so there "
                          f"is nothing to continue from. Train on from its weights in a new run with --set "
                          f"model.weights={run_dir.path}, or keep last.pt next time with --set "
                          f"train.keep_last_checkpoint=true")
