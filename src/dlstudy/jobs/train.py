"""The train job: start -> Session.fit -> write the results -> report.finish_run.

    run_train_job(cfg, run_dir, resume=False) -> metrics dict      # run_dir: a RunDir, or jobs.NewRun(out)
        metrics.json = {"before": {METRIC_KEYS}, "after": {METRIC_KEYS}, <after's keys>, "train_time_s", ...}

Start joins DDP once (under torchrun; rank 0 names a NewRun's folder and tells the others), writes config.yaml /
env.json, sets the CPU threads and model.json. The engine's Session trains and saves checkpoints; this module
writes history.csv / steps.csv after every epoch and, at the end, predictions, metrics.json and the before/after
table. finish_run draws the figures from those files and writes the report. Only rank 0 writes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from dlstudy.config import RunConfig
from dlstudy.engine.distributed import DistInfo, barrier, init_distributed, quiet_other_ranks, shutdown_distributed
from dlstudy.engine.session import EpochOutput, Session, metric_block
from dlstudy.engine.state import TrainState
from dlstudy.errors import ConfigError
from dlstudy.io import atomic_write, atomic_write_csv, estimate_run_bytes, space_warning
from dlstudy.jobs import NewRun, place_run
from dlstudy.report import finish_run
from dlstudy.runs import RunDir, resolve_device
from dlstudy.tracking import NO_LOG, RunLog, run_log

log = logging.getLogger(__name__)

HISTORY_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_eval_loss", "train_eval_acc",
                  "lr", "backbone_lr", "backbone_frozen", "time_s", "images_per_s"]
STEP_FIELDS = ["epoch", "step", "global_step", "loss", "time_s"]


def run_train_job(cfg: RunConfig, run_dir: RunDir | NewRun, resume: bool = False) -> dict:
    """Train `cfg` into `run_dir` (see the module docstring); under torchrun, one call per rank."""
    info, device = init_distributed(resolve_device(cfg.device))  # the job's one DDP start
    threads_before = torch.get_num_threads()
    try:
        with quiet_other_ranks(info):
            run_dir = place_run(cfg, run_dir, info)
            _check_resumable(run_dir, resume)
            session = _start(cfg, run_dir, info, device)
            with run_log(cfg.train.log, run_dir, info.is_main) as tracking:  # TensorBoard / MLflow, when asked
                after, y_score, y_true, extras = session.fit(epoch_output(run_dir, tracking), resume=resume)
                metrics = train_metrics(session, after)
                if info.is_main:
                    _write_results(run_dir, session, metrics, y_score, y_true, extras)
                    _finish(run_dir, cfg)
                    tracking.finish()  # from the files just written: metrics.json, figures, report
            barrier(info)
            return metrics
    finally:
        torch.set_num_threads(threads_before)  # the next run of a study in this process gets the default back
        shutdown_distributed()


def _start(cfg: RunConfig, run_dir: RunDir, info: DistInfo, device: str) -> Session:
    """config.yaml / env.json (rank 0), the CPU threads, the session, then model.json first of the results (a run
    that fails later can still be loaded from its best.pt)."""
    if info.is_main:
        run_dir.start(cfg, device)
    available = torch.get_num_threads()
    if info.enabled and not device.startswith("cuda"):  # the machine's cores, shared by its processes
        available = max(1, (os.cpu_count() or 1) // info.local_world_size)
    torch.set_num_threads(cfg.train.num_threads or available)  # while the data loads
    session = Session(cfg, info, device)
    _set_threads(session, available, run_dir)
    if info.is_main:
        _warn_space(run_dir, session)
        _write_model_card(run_dir, session)
    return session


def _warn_space(run_dir: RunDir, session: Session) -> None:
    """A warning when the run folder's file system has less free space than the run will write (an estimate)."""
    data = session.data
    n_params = sum(p.numel() for module in (session.model, session.objective) for p in module.parameters())
    needed = estimate_run_bytes(n_params, n_scores=len(data.test.labels) + len(data.val.labels),
                                num_classes=data.num_classes, checkpoints=session.cfg.train.checkpoint)
    warning = space_warning(run_dir.path, needed)
    if warning:
        log.warning("%s", warning)


def _set_threads(session: Session, available: int, run_dir: RunDir) -> int:
    """Torch CPU threads for the training (engine.threads: train.num_threads, else by the work per step),
    recorded in env.json as torch_threads with the reason; returns the count."""
    from dlstudy.engine.threads import choose_threads, forward_flops

    cfg, device = session.cfg, session.device
    flops = None
    if not cfg.train.num_threads and device.startswith("cpu") and available > 1:
        batch = (cfg.loss.classes_per_batch * cfg.loss.samples_per_class if session.needs_pk
                 else cfg.train.batch_size)
        flops = forward_flops(session.model, session.data.image_shape, batch, device)
    threads, why = choose_threads(cfg.train.num_threads, device, available, flops)
    torch.set_num_threads(threads)
    log.debug("torch threads: %d (%s)", threads, why)
    if session.info.is_main:
        run_dir.update_env(torch_threads=threads, torch_threads_rule=why)
    return threads


def epoch_output(run_dir: RunDir, tracking: RunLog = NO_LOG) -> EpochOutput:
    """Checkpoints in run_dir/checkpoints; history.csv and steps.csv rewritten after every epoch, and their new
    rows handed to the run's trackers."""
    def log_epoch(state: TrainState) -> None:
        write_logs(run_dir, state)
        tracking.epochs(state.history, state.steps)

    return EpochOutput(run_dir.path / "checkpoints", log_epoch)


def write_logs(run_dir: RunDir, state: TrainState) -> None:
    """history.csv (one row per epoch) and steps.csv (one row per optimizer step), rewritten atomically."""
    atomic_write_csv(run_dir.file("history.csv"), state.history, HISTORY_FIELDS)
    atomic_write_csv(run_dir.file("steps.csv"), state.steps, STEP_FIELDS)


def train_metrics(session: Session, after: dict) -> dict:
    """metrics.json of a train run: the before / after blocks, the after block's keys again, and the run's facts."""
    st = session.state
    metrics = {"before": st.before, "after": metric_block(after), **metric_block(after),
               "best_epoch": st.best_epoch, "best_val_accuracy": st.best_val_acc,
               "epochs": len(st.history), "train_time_s": st.elapsed_s, "images_per_s": st.images_per_s,
               "world_size": session.info.world_size, "classifier": session.cfg.eval.classifier,
               "score_kind": after["score_kind"], "data": session.data.sizes()}
    for key in ("retrieval", "collapse"):  # embedding classifiers add these; the losses study reports them
        if key in after:
            metrics[key] = after[key]
    report = getattr(session.model, "weights_report", None)
    if report is not None:
        metrics["weights"] = {"source": report.source, "loaded": len(report.loaded),
                              "missing": len(report.missing), "skipped": len(report.skipped)}
    return metrics


def _write_model_card(run_dir: RunDir, session: Session, svm: str | None = None) -> None:
    """model.json: the network's class names, the preprocessing it was trained with (this run's train split
    statistics) and its files."""
    c, h, w = session.data.image_shape
    inputs = {"image_size": [h, w], "channels": c, "mean": list(session.data.mean), "std": list(session.data.std)}
    files = {"checkpoint": "checkpoints/best.pt"} if session.cfg.train.checkpoint else {}
    if svm:
        files["svm"] = svm
    run_dir.write_model_card("network", session.data.class_names, inputs, **files)


def _write_results(run_dir: RunDir, session: Session, metrics: dict, y_score, y_true, extras: dict) -> None:
    """embeddings_test.pt (embedding classifiers, eval.save_embeddings), predictions, metrics.json, the logs and
    tables/before_after.csv."""
    if session.cfg.eval.save_embeddings and "embeddings_test" in extras:  # for the losses study's PCA figure
        write_test_embeddings(run_dir.path, extras["embeddings_test"], extras["labels_test"])
    _write_predictions(run_dir, session, y_score, y_true, metrics["score_kind"], extras)
    run_dir.write_metrics(metrics)
    write_logs(run_dir, session.state)
    run_dir.write_table("before_after", before_after_rows(metrics["before"], metrics["after"]),
                        ["metric", "before", "after"])


def write_test_embeddings(run_dir_path, embeddings: torch.Tensor, labels: torch.Tensor,
                          name: str = "embeddings_test.pt") -> Path:
    """embeddings_test.pt: {"embeddings": (N, E) float32, "labels": (N,) int64}, written atomically into the run
    folder (the losses study's PCA figure); the engine returns them in Session.fit's extras."""
    obj = {"embeddings": torch.as_tensor(embeddings).detach().float().cpu(),
           "labels": torch.as_tensor(labels).detach().long().cpu()}
    return atomic_write(Path(run_dir_path) / name, lambda fh: torch.save(obj, fh))


def _write_predictions(run_dir: RunDir, session: Session, y_score, y_true, score_kind: str, extras: dict) -> None:
    """predictions.npz (test) and predictions_val.npz; an embedding SVM is saved beside them (model.json)."""
    from dlstudy.predictions import make_predictions, write_predictions

    data, names = session.data, session.data.class_names
    write_predictions(run_dir.file("predictions.npz"),
                      make_predictions(y_true, y_score, score_kind, names, data.test.sample_ids()))
    if extras.get("scores_val") is not None:
        write_predictions(run_dir.file("predictions_val.npz"),
                          make_predictions(data.val.labels.cpu().numpy(), extras["scores_val"], score_kind, names,
                                           data.val.sample_ids()))
    if extras.get("svm") is not None:
        extras["svm"].save(run_dir.file("svm_model.npz"))
        _write_model_card(run_dir, session, svm="svm_model.npz")


def before_after_rows(before: dict | None, after: dict) -> list[dict]:
    """The reference report's table: accuracy and class-wise accuracy, before vs after fine-tuning."""
    rows = [{"metric": "accuracy", "before": before["accuracy"] if before else None, "after": after["accuracy"]}]
    for key in ("f1_macro", "roc_auc_macro"):
        rows.append({"metric": key, "before": before.get(key) if before else None, "after": after.get(key)})
    for i, name in enumerate(after["class_names"]):
        rows.append({"metric": f"accuracy[{name}]",
                     "before": before["per_class_accuracy"][i] if before else None,
                     "after": after["per_class_accuracy"][i]})
    return rows


def _finish(run_dir: RunDir, cfg: RunConfig) -> None:
    """finish_run (figures, report, DONE), then last.pt dropped unless train.keep_last_checkpoint."""
    finish_run(run_dir)
    if cfg.train.checkpoint and not cfg.train.keep_last_checkpoint:
        # After DONE, never before: a run killed between the two steps is then a finished run with a spare
        # last.pt, whereas removing it first would leave an unfinished run without its resume point, which the
        # next `dlstudy run` would train again from epoch 1.
        (run_dir.path / "checkpoints" / "last.pt").unlink(missing_ok=True)


def _check_resumable(run_dir: RunDir, resume: bool) -> None:
    """ConfigError for --resume of a finished run that has no last.pt left: it would silently train from scratch."""
    last = run_dir.path / "checkpoints" / "last.pt"
    if resume and run_dir.is_done and not last.is_file():
        raise ConfigError(f"--resume {run_dir.path}: the run is finished and its checkpoints/last.pt was removed "
                          f"(train.keep_last_checkpoint: false, the default, or train.checkpoint: false), so there "
                          f"is nothing to continue from. Train on from its weights in a new run with --set "
                          f"model.weights={run_dir.path}, or keep last.pt next time with --set "
                          f"train.keep_last_checkpoint=true")
