"""The equal-effort lr search (studies/running/lr_search.py): candidates that differ only in lr, and the pure choice
`best_lr(rows)` over the rows `candidate_row` scores from finished candidates' records."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dlstudy.config import RunConfig, build_run_config
from dlstudy.errors import ConfigError, TrainingDiverged
from dlstudy.studies.running.lr_search import best_lr, candidate_row, plan_search, validate_grid
from dlstudy.studies.running.tasks import RunTask


def test_best_lr_picks_best_val_accuracy_over_history_rows():
    histories = {0.01: [{"val_acc": 0.2, "val_loss": 2.0}, {"val_acc": 0.5, "val_loss": 1.0}],
                 0.1: [{"val_acc": 0.2, "val_loss": 2.0}, {"val_acc": 0.8, "val_loss": 1.0}]}
    rows = [candidate_row(lr, h) for lr, h in histories.items()] + [candidate_row(1.0, None, diverged=True)]
    assert best_lr(rows) == 0.1
    assert [r["lr"] for r in rows] == [0.01, 0.1, 1.0]
    assert [r["diverged"] for r in rows] == [False, False, True]
    assert rows[1] == {"lr": 0.1, "val_accuracy": 0.8, "val_loss": 1.0, "diverged": False}  # the best-val epoch
    assert math.isnan(rows[2]["val_accuracy"]) and math.isnan(rows[2]["val_loss"])


def test_candidates_differ_only_in_lr_and_do_not_search_again(tmp_path):
    cfg = build_run_config({"optim": {"name": "sgd", "lr_grid": [0.01, 0.1, 1.0]}, "train": {"epochs": 2}})
    search = plan_search(RunTask("a", 0, cfg, tmp_path / "a" / "seed-0"))
    assert [c.cfg.optim.lr for c in search.candidates] == [0.01, 0.1, 1.0]
    assert [c.path for c in search.candidates] == [tmp_path / "a" / "lr-search" / f"lr-{lr:g}" for lr in (0.01, 0.1, 1)]
    for c in search.candidates:  # equal effort: only optim.lr differs, and no candidate searches again
        assert c.cfg.optim.lr_grid is None
        assert dataclasses.replace(c.cfg, optim=cfg.optim) == cfg


def test_best_lr_ties_and_errors():
    rows = [candidate_row(0.1, {"val_accuracy": 0.5, "val_loss": 1.0}),
            candidate_row(0.01, {"val_accuracy": 0.5, "val_loss": 2.0})]
    assert best_lr(rows) == 0.1  # ties: the lower val loss
    assert best_lr([candidate_row(0.1, {"val_accuracy": 0.5}), candidate_row(0.01, {"val_accuracy": 0.5})]) == 0.01
    with pytest.raises(ConfigError, match="non-empty"):
        validate_grid([])
    with pytest.raises(ConfigError, match="positive"):
        validate_grid([0.1, -1])
    with pytest.raises(ConfigError, match="never test"):
        candidate_row(0.1, {"accuracy": 0.9})
    with pytest.raises(ConfigError, match="empty history"):
        candidate_row(0.1, [])
    nan_row = candidate_row(0.1, {"val_accuracy": float("nan")})
    assert nan_row["diverged"]
    with pytest.raises(TrainingDiverged, match=r"optimizer 'adam': every learning rate of \[0.1\] diverged"):
        best_lr([nan_row], RunConfig().optim.name)
