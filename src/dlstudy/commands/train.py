"""`dlstudy train`: train or fine-tune a model, evaluated on test before and after training.

    dlstudy train --data digits --model smallcnn --epochs 3
    dlstudy train --data cifar10 --model resnet50 --weights imagenet --epochs 5 --out runs/
    dlstudy train --resume runs/train-digits-smallcnn-ce-adam          # continue a killed run exactly
    torchrun --nproc-per-node 2 -m dlstudy train --data cifar10 ...    # DistributedDataParallel
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dlstudy.commands.flags import add_run_arguments, resolve_config
from dlstudy.config import build_run_config, drop_retired_keys, load_yaml_mapping, parse_overrides
from dlstudy.errors import ConfigError, DiskFullError, RunLocked
from dlstudy.runs import check_output_folder

log = logging.getLogger(__name__)

TRAIN_FLAGS = {"model": "model.name", "weights": "model.weights", "epochs": "train.epochs",
               "optimizer": "optim.name", "lr": "optim.lr", "batch_size": "train.batch_size",
               "deterministic": "train.deterministic"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--model", default=None,
                        help="backbone: ours (smallcnn, mlp, airbench, resnet10/18/50, densenet-small/121), "
                        "tv:<torchvision name> or timm:<timm name> (`dlstudy models` lists them)")
    parser.add_argument("--weights", default=None, help="none | imagenet | PATH (state dict / checkpoint) | RUN_DIR")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs")
    parser.add_argument("--optimizer", default=None, help="sgd | momentum | nesterov | adam | adamw | rmsprop")
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch size (per process under DDP)")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="deterministic PyTorch kernels (slower)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint (its config.yaml; --set applies)")


def _resume_config(args: argparse.Namespace):
    from dlstudy.commands.flags import COMMON_FLAGS, LOG_FLAGS, flag_layer, use_log_flags

    given = [f"--{dest.replace('_', '-')}" for dest in {**COMMON_FLAGS, **TRAIN_FLAGS} if getattr(args, dest, None)
             is not None]
    if given:
        raise ConfigError(f"--resume takes the run's own config.yaml; {', '.join(given)} would be ignored: "
                          f"use --set key=value to change a setting (e.g. --set train.epochs=20)")
    run_path = Path(args.resume)
    config_file = run_path / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"--resume {run_path}: not a run folder (no {config_file})")
    check_output_folder(run_path, "--resume")
    saved = drop_retired_keys(load_yaml_mapping(config_file))  # a run folder written by an earlier version
    cfg = build_run_config(saved, flag_layer(args, LOG_FLAGS), parse_overrides(args.overrides),
                           where=str(config_file))  # --log may be added to a resumed run
    use_log_flags(args, cfg.train.log)
    return run_path, cfg


def run(args: argparse.Namespace) -> int:
    from dlstudy.jobs import NewRun, run_job
    from dlstudy.runs import RunDir

    lock = None
    if args.resume:
        run_path, cfg = _resume_config(args)
        where: RunDir | NewRun = RunDir(run_path)
        lock = _lock_resumed(run_path) if _is_main() else None
    else:
        cfg = resolve_config(args, "train", TRAIN_FLAGS)
        where = NewRun(Path(args.out))  # named by the job's start: rank 0 picks it once, under torchrun too
    try:
        metrics = run_job(cfg, where, resume=bool(args.resume))
    except KeyboardInterrupt:
        run_dir = where if isinstance(where, RunDir) else where.run_dir
        if run_dir is not None and _is_main() and (run_dir.path / "checkpoints" / "last.pt").is_file():
            args.interrupt_hint = f"to continue from the last finished epoch: dlstudy train --resume {run_dir.path}"
        raise
    except DiskFullError as exc:
        run_dir = where if isinstance(where, RunDir) else where.run_dir
        if run_dir is not None and (run_dir.path / "checkpoints" / "last.pt").is_file():
            raise DiskFullError(f"{exc}. The run keeps its last complete checkpoint: once space is freed, continue "
                                f"it with `dlstudy train --resume {run_dir.path}`") from None
        raise
    finally:
        if lock is not None:
            lock.release()
    run_path = where.path if isinstance(where, RunDir) else where.run_dir.path
    if _is_main():
        before = metrics["before"]["accuracy"] if metrics.get("before") else float("nan")
        print(f"{run_path}: test accuracy {before:.4f} before -> {metrics['accuracy']:.4f} after "
              f"({metrics['epochs']} epochs, {metrics['train_time_s']:.1f}s, {metrics['images_per_s'] or 0:.0f} img/s)")
    return 0


def _lock_resumed(run_path: Path):
    """The run folder's lock (dlstudy.runs.lock_run), held while this process resumes it; RunLocked naming the
    process already training it."""
    from dlstudy.runs import LOCK_FILE, lock_run

    try:
        return lock_run(run_path)
    except RunLocked as exc:
        raise RunLocked(f"--resume {run_path}: the run is being trained by {exc.holder} (it holds "
                        f"{run_path / LOCK_FILE}); wait for that process to end, or stop it, then resume",
                        holder=exc.holder) from None


def _is_main() -> bool:
    """Rank 0 of a torchrun launch (or the only process): the one that prints."""
    import os

    return os.environ.get("RANK", "0") == "0"
