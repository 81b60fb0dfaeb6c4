"""`dlstudy train --resume`: a run SIGKILLed after epoch 1 and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlstudy.io import read_csv, read_json

TIMED = {"time_s", "images_per_s"}  # wall-clock columns: the only ones allowed to differ


def _env() -> dict:
    # One thread: identical kernels in every process (and no spin-waiting on the shared 2-core machine).
    return {**os.environ, "OMP_NUM_THREADS": "1", "DLSTUDY_NO_PROGRESS": "1", "PYTHONHASHSEED": "0"}


def _train(out: Path, name: str) -> list[str]:
    # dropout + augmentation + label smoothing + a cosine schedule: every piece of state a resume must restore
    return [sys.executable, "-m", "dlstudy", "train", "--data", "digits", "--model", "smallcnn", "--epochs", "2",
            "--device", "cpu", "--seed", "3", "--out", str(out), "--name", name, "--optimizer", "momentum",
            "--lr", "0.05", "--batch-size", "16",
            "--set", "data.max_train=240", "--set", "data.max_eval=60", "--set", "model.dropout=0.3",
            "--set", "train.schedule=cosine", "--set", "train.label_smoothing=0.1",
            "--set", "train.train_eval_subset=60", "--set", "data.augment=crop"]


def _wait_for_epoch(run: Path, proc: subprocess.Popen, epochs: int, timeout: float = 90) -> None:
    history = run / "history.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if history.is_file() and len(read_csv(history)) >= epochs:
            return
        if proc.poll() is not None:
            pytest.fail(f"training exited early with code {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail(f"no history row {epochs} after {timeout}s")


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    from dlstudy.data import AUGMENT_PRESETS

    assert "crop" in AUGMENT_PRESETS, f"augment preset 'crop' not registered ({list(AUGMENT_PRESETS)})"
    full = subprocess.Popen(_train(tmp_path, "full"), env=_env(), stderr=subprocess.PIPE, text=True)
    killed = subprocess.Popen(_train(tmp_path, "killed"), env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for_epoch(tmp_path / "killed", killed, 1)
    os.kill(killed.pid, signal.SIGKILL)  # mid-run: epoch 2 is in progress (or its files half written)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "DONE").exists()
    resumed = subprocess.run([sys.executable, "-m", "dlstudy", "train", "--resume", str(tmp_path / "killed")],
                             env=_env(), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert full.wait(timeout=120) == 0, full.stderr.read()

    a, b = read_json(tmp_path / "full" / "metrics.json"), read_json(tmp_path / "killed" / "metrics.json")
    assert b["after"] == a["after"] and b["before"] == a["before"]
    assert b["best_epoch"] == a["best_epoch"] and b["epochs"] == a["epochs"] == 2
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMED} for r in rows]  # noqa: E731
    for name in ("history.csv", "steps.csv"):
        rows_a, rows_b = read_csv(tmp_path / "full" / name), read_csv(tmp_path / "killed" / name)
        assert strip(rows_b) == strip(rows_a), name
