"""DDP on CPU: `torchrun --nproc-per-node 2 -m dlstudy train` (gloo) trains, rank 0 alone writes, and the gathered
test metrics equal one process evaluating the same best checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dlstudy.config import build_run_config, load_yaml_mapping
from dlstudy.engine.checkpoint import load_checkpoint
from dlstudy.engine.distributed import DistInfo
from dlstudy.engine.job import Session
from dlstudy.io import read_csv, read_json


def test_torchrun_two_processes_gloo(tmp_path):
    torch.set_num_threads(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DLSTUDY_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dlstudy", "train", "--data", "digits", "--model", "smallcnn", "--epochs", "1", "--device", "cpu",
           "--out", str(tmp_path), "--batch-size", "16", "--set", "data.max_train=320", "--set", "data.max_eval=101",
           "--set", "train.train_eval_subset=50"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
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
