"""Every shipped study file names only registered datasets, models, optimizers, objectives and schedules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlstudy.data import DATASETS
from dlstudy.losses.objectives import OBJECTIVES
from dlstudy.models import MODELS
from dlstudy.optim import OPTIMIZERS, SCHEDULES
from dlstudy.studies import KINDS
from dlstudy.studies.running.runner import load_study, plan_study

STUDY_DIR = Path(__file__).resolve().parents[2] / "src" / "dlstudy" / "studies" / "files"
STUDY_FILES = sorted(STUDY_DIR.glob("*.yaml"))


def test_the_four_studies_ship_full_and_quick():
    names = {p.stem for p in STUDY_FILES}
    for study in ("svm", "finetune", "losses", "optimizers"):
        assert {study, f"{study}-quick"} <= names


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_every_arm_names_registered_entries(path, tmp_path):
    study = load_study(path)
    assert study.kind in KINDS
    for task in plan_study(study, tmp_path, source=path.name):
        cfg = task.cfg
        where = f"{path.name} arm {task.arm}"
        assert cfg.data.name in DATASETS, where
        assert cfg.task in ("svm", "train"), where
        if cfg.task == "svm":
            assert cfg.svm.features == "raw" or cfg.svm.features in MODELS, where
            continue
        assert cfg.model.name in MODELS, where
        assert cfg.optim.name in OPTIMIZERS, where
        assert cfg.loss.name in OBJECTIVES, where
        assert cfg.train.schedule in SCHEDULES, where
        assert cfg.eval.classifier in ("head", "svm", "knn"), where
