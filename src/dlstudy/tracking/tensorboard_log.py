"""TensorBoard: event files in RUN/tensorboard/ (torch.utils.tensorboard.SummaryWriter), and a study's HParams.

    RUN/tensorboard/     step/loss (global step), epoch/<history.csv column> (epoch), test/..., test_before/...,
                         <block>/... of metrics.json (step: the last epoch), figures/<png> as images (the
                         confusion matrices, ROC, curves), the config as text
    STUDY/hparams/<arm>/seed-<s>/   one HParams session per run: the config keys that differ between the study's
                         runs (and the arm) as hparams, its test/ and retrieval/ metrics as metrics

`tensorboard --logdir STUDY` shows every run's curves and compares the arms in the HPARAMS tab.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from dlstudy.config import dump_yaml
from dlstudy.tracking.files import RunContext, epoch_scalars, figure_paths, result_scalars, step_scalars

FOLDER = "tensorboard"  # in the run folder
HPARAMS_FOLDER = "hparams"  # in the study folder


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (tracking.require checks)

    return SummaryWriter(log_dir=str(folder))


class TensorBoardTracker:
    """Event files of one run; a new tracker starts the folder afresh (the files hold what the run wrote)."""

    name = "tensorboard"

    def __init__(self, ctx: RunContext, uri: str | None = None) -> None:
        self.folder = ctx.path / FOLDER
        shutil.rmtree(self.folder, ignore_errors=True)  # a resumed or re-exported run: replayed whole
        self.writer = _writer(self.folder)
        self.last_epoch = 0

    def start(self, config: dict, env: dict) -> None:
        if config:
            self.writer.add_text("config", "```\n" + dump_yaml(config) + "```", 0)

    def log_epochs(self, history: list[dict], steps: list[dict]) -> None:
        for row in steps:
            for tag, value in step_scalars(row).items():
                self.writer.add_scalar(tag, value, int(row["global_step"]))
        for row in history:
            self.last_epoch = int(row["epoch"])
            for tag, value in epoch_scalars(row).items():
                self.writer.add_scalar(tag, value, self.last_epoch)
        self.writer.flush()  # watched live: each epoch visible at once

    def finish(self, run_dir: Path, metrics: dict) -> None:
        for tag, value in result_scalars(metrics).items():
            self.writer.add_scalar(tag, value, self.last_epoch)
        for png in figure_paths(run_dir):  # drawn by dlstudy.figures; read back as (H, W, 3) uint8
            self.writer.add_image(f"figures/{png.stem}", read_png(png), self.last_epoch, dataformats="HWC")

    def close(self, failed: bool = False) -> None:
        self.writer.close()


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def write_hparams(study_dir: Path, sessions: list[tuple[str, dict, dict]]) -> Path:
    """One HParams session per (key "arm/seed-s", hparams, metrics) under STUDY/hparams/<key>/ (started afresh)."""
    folder = study_dir / HPARAMS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    domains = {}  # every value a string hparam takes in the study: the dashboard's filter lists them all
    for _, hparams, _ in sessions:
        for k, v in hparams.items():
            if isinstance(v, str):
                domains.setdefault(k, [])
                if v not in domains[k]:
                    domains[k].append(v)
    writer = _writer(folder)
    try:
        for key, hparams, metrics in sessions:
            writer.add_hparams(hparams, metrics, hparam_domain_discrete=domains or None, run_name=key)
    finally:
        writer.close()
    return folder
