"""Progress when stderr is not a terminal: a plain line every DLSTUDY_PROGRESS_INTERVAL seconds (step k/n, it/s,
ETA, the caller's postfix such as the loss), and nothing under DLSTUDY_NO_PROGRESS (which conftest sets)."""

from __future__ import annotations

import io
import logging
import re
import sys
import time

import pytest
import torch

from dlstudy.cli import main
from dlstudy.progress import LogProgress, log_interval, progress

LINE = re.compile(r"^epoch 1: step (\d+)/(\d+) \((\d+)%\), [\d.e+]+ it/s, elapsed \d+s, ETA \d+s(, .*)?$")


@pytest.fixture
def log_file_output(monkeypatch):
    """stderr is a log file (not a terminal), progress allowed, one line every millisecond."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv("DLSTUDY_NO_PROGRESS", raising=False)
    monkeypatch.setenv("DLSTUDY_PROGRESS_INTERVAL", "0.001")


def _slow(n: int):
    for i in range(n):
        time.sleep(0.003)  # longer than the interval: every step is due a line
        yield i


def test_lines_at_the_interval_with_step_rate_eta_and_postfix(log_file_output, caplog):
    bar = progress(_slow(4), desc="epoch 1", total=4)
    assert isinstance(bar, LogProgress) and not bar.disable
    with caplog.at_level(logging.INFO, logger="dlstudy.progress"):
        for i in bar:
            bar.set_postfix(loss=f"{1 / (i + 1):.4f}")
    lines = [r.getMessage() for r in caplog.records if r.name == "dlstudy.progress"]
    assert len(lines) == 4 and all(LINE.match(line) for line in lines), lines
    assert [LINE.match(line).group(1, 3) for line in lines] == [("1", "25"), ("2", "50"), ("3", "75"), ("4", "100")]
    assert lines[0].endswith(", loss=1.0000") and lines[3].endswith(", loss=0.2500")  # set by that step's body


def test_no_line_before_the_interval_and_without_a_total(log_file_output, monkeypatch, caplog):
    monkeypatch.setenv("DLSTUDY_PROGRESS_INTERVAL", "3600")
    with caplog.at_level(logging.INFO, logger="dlstudy.progress"):
        assert list(progress(range(100), desc="fast")) == list(range(100))  # a short loop logs nothing
    assert not caplog.records
    bar = LogProgress(iter(range(3)), desc="", interval=3600)
    list(bar)
    assert bar.line(2.0) == "step 3, 1.5 it/s, elapsed 2s"  # unknown length: no percentage, no ETA


def test_durations_read_as_minutes_and_hours():
    bar = LogProgress(range(10_000), desc="features", interval=60)
    bar.n = 100
    assert bar.line(120.0) == "features: step 100/10000 (1%), 0.833 it/s, elapsed 2m00s, ETA 3h18m"


def test_no_progress_env_means_silent(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("DLSTUDY_NO_PROGRESS", "1")
    monkeypatch.setenv("DLSTUDY_PROGRESS_INTERVAL", "0.001")
    assert log_interval() is None
    with caplog.at_level(logging.INFO, logger="dlstudy.progress"):
        bar = progress(_slow(3), desc="epoch 1", total=3)
        assert bar.disable and list(bar) == [0, 1, 2]
    assert not caplog.records


@pytest.mark.parametrize("value", ["", "abc", "0", "-5"])
def test_bad_or_missing_interval_falls_back_to_a_minute(monkeypatch, value):
    monkeypatch.delenv("DLSTUDY_NO_PROGRESS", raising=False)
    monkeypatch.setenv("DLSTUDY_PROGRESS_INTERVAL", value)
    assert log_interval() == 60.0


def test_training_epoch_logs_step_lines_with_the_loss(log_file_output, tmp_path, caplog):
    """The real train command with its output going to a file: epoch lines come with the training loss."""
    args = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
            "--out", str(tmp_path), "--set", "data.max_train=200", "--set", "data.max_eval=100",
            "--set", "train.train_eval_subset=100", "--set", "train.evaluate_before=false",
            "--set", "train.checkpoint=false"]
    torch.set_num_threads(1)  # tiny MLP steps: one thread (conftest restores the count)
    with caplog.at_level(logging.INFO, logger="dlstudy.progress"):
        assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "dlstudy.progress" and r.getMessage()
             .startswith("epoch 1: ")]
    assert lines and all(LINE.match(line) for line in lines), lines[:3]
    assert re.search(r", loss=\d+\.\d{4}, img_s=\d+$", lines[-1])  # the loop's postfix after its first check
