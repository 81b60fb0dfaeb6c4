"""DDP on CPU: `torchrun --nproc-per-node 2 -m dlstudy train` (gloo) trains, rank 0 alone writes and talks, the
gathered test metrics equal one process evaluating the same best checkpoint, ranks draw their own augmentation and
dropout, and a resumed DDP run equals an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dlstudy.config import build_run_config, load_yaml_mapping
from dlstudy.engine.checkpoint import load_checkpoint
from dlstudy.engine.distributed import DistInfo
from dlstudy.engine.session import Session
from dlstudy.io import read_csv, read_json

TIMED = {"time_s", "images_per_s"}  # wall-clock columns: the only ones allowed to differ


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DLSTUDY_NO_PROGRESS": "1", "PYTHONHASHSEED": "0"}


def _torchrun(*args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dlstudy",
           "train", *args]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_torchrun_two_processes_gloo(tmp_path):
    torch.set_num_threads(1)
    done = _torchrun("--data", "digits", "--model", "smallcnn", "--epochs", "1", "--device", "cpu",
                     "--out", str(tmp_path), "--batch-size", "16", "--set", "data.max_train=320",
                     "--set", "data.max_eval=101", "--set", "train.train_eval_subset=50")
    log = done.stdout + done.stderr
    assert log.count("epoch 1/1") == 1 and log.count("after training") == 1, log  # rank 0 alone talks
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # one folder: rank 1 wrote nothing of its own
    run = runs[0]
    metrics = read_json(run / "metrics.json")
    assert metrics["world_size"] == 2 and (run / "DONE").is_file()
    assert metrics["after"]["n_samples"] == 101  # odd size: uneven shards gathered without loss or duplicates
    steps = read_csv(run / "steps.csv")
    assert len(steps) == 320 // (16 * 2)  # full global batches of 16 per rank
    assert metrics["accuracy"] > 0.3  # it trained (chance is 0.1)

    cfg = build_run_config(load_yaml_mapping(run / "config.yaml"))
    session = Session(cfg, DistInfo(), "cpu")  # one process, whole split
    session.model.load_state_dict(load_checkpoint(run / "checkpoints" / "best.pt")["model"])
    single, _, _ = session.evaluate(session.data.test)
    after = metrics["after"]
    assert single["accuracy"] == after["accuracy"]
    assert np.array_equal(single["confusion_matrix"], after["confusion_matrix"])
    assert single["roc_auc_macro"] == pytest.approx(after["roc_auc_macro"], abs=1e-6)
    assert single["loss"] == pytest.approx(after["loss"], rel=1e-5)


def _first_batch_and_dropout(rank: int, pg_file: str, out: str) -> None:
    """One DDP rank (spawned): its first augmented training batch of a split of identical images, its first
    dropout draw and its initial weights."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{pg_file}", rank=rank, world_size=2)
    try:
        cfg = build_run_config({"device": "cpu", "seed": 5, "data": {"name": "digits", "max_train": 64,
                                "max_eval": 20, "augment": "crop"}, "model": {"name": "mlp", "dropout": 0.5},
                                "train": {"batch_size": 8, "train_eval_subset": 0}})
        session = Session(cfg, DistInfo(rank, 2, rank, 2), "cpu")
        train = session.data.train
        train.images = train.images[:1].expand_as(train.images).contiguous()  # every image the same: only the
        images, _ = next(iter(session.train_batches(epoch=1)))  # augmentation can tell two batches apart
        mask = session.model.dropout(torch.ones(64))  # the model is in train mode: a dropout mask
        torch.save({"images": images, "mask": mask, "weights": session.model.head.weight.detach()},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_draw_their_own_augmentation_and_dropout(tmp_path):
    mp.spawn(_first_batch_and_dropout, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(r0["weights"], r1["weights"])  # one initialisation for every rank
    assert not torch.equal(r0["images"], r1["images"])  # same pixels in, different crops out
    assert not torch.equal(r0["mask"], r1["mask"])


def _compare_runs(a: Path, b: Path) -> None:
    ma, mb = read_json(a / "metrics.json"), read_json(b / "metrics.json")
    assert mb["after"] == ma["after"] and mb["before"] == ma["before"] and mb["best_epoch"] == ma["best_epoch"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMED} for r in rows]  # noqa: E731
    for name in ("history.csv", "steps.csv"):
        assert strip(read_csv(b / name)) == strip(read_csv(a / name)), name


def test_resumed_ddp_run_equals_an_uninterrupted_one(tmp_path):
    """2 epochs in one go vs 1 epoch, then `--resume` for the second: dropout and augmentation draw on every rank,
    so rank 1 must get its own RNG states back from rank 0's last.pt."""
    common = ["--data", "digits", "--model", "mlp", "--device", "cpu", "--out", str(tmp_path), "--seed", "2",
              "--batch-size", "8", "--optimizer", "momentum", "--lr", "0.05", "--set", "data.max_train=160",
              "--set", "data.max_eval=40", "--set", "model.dropout=0.5", "--set", "data.augment=crop",
              "--set", "train.train_eval_subset=0"]
    _torchrun(*common, "--epochs", "2", "--name", "full")
    _torchrun(*common, "--epochs", "1", "--name", "part", "--set", "train.keep_last_checkpoint=true")
    resumed = _torchrun("--resume", str(tmp_path / "part"), "--set", "train.epochs=2")
    assert "resumed from" in resumed.stderr
    _compare_runs(tmp_path / "full", tmp_path / "part")
