"""Helpers shared by several test modules (the fixtures built on them are in conftest.py), so that no test module
imports another.

`fake_job` is registered as the job "fake" by the `fake` and `fake_studies` fixtures under the target
"helpers:fake_job": the study runner's spawned workers import it by that name (tests/ is on their sys.path as on
the parent's).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

CALL_LOG = "DLSTUDY_TEST_CALL_LOG"  # env var: the file fake_job appends one line per call to
FAKE_JOB = "helpers:fake_job"
# the reference report's accuracy per study, as the fake studies of `fake_study` quote it
REFERENCE = {"svm": 0.697, "finetune": 0.90, "losses": 0.478, "optimizers": 0.885}


def fake_job(cfg, run_dir, resume=False):
    """Nearest-centroid on digits; `optim.weight_decay` shrinks the centroids to their mean (above 1 fails the run),
    `seed` picks train."""
    from sklearn.datasets import load_digits
    from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    from dlstudy.io import atomic_write_csv
    from dlstudy.report import finish_run

    if os.environ.get(CALL_LOG):
        with open(os.environ[CALL_LOG], "a") as fh:
            fh.write(f"{run_dir.path.parent.name}/{run_dir.path.name} resume={resume}\n")
    shrink = cfg.optim.weight_decay
    if shrink > 1:
        raise ValueError("fake job: shrink above 1")
    run_dir.start(cfg, "cpu")
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(y))
    train, test = order[:300], order[-400:]
    centroids = np.stack([X[train][y[train] == k].mean(0) for k in range(10)])  # (10, 64)
    centroids = (1 - shrink) * centroids + shrink * centroids.mean(0)
    y_score = -((X[test][:, None, :] - centroids[None]) ** 2).sum(-1)  # (N, 10) negative squared distance
    y_pred, y_true = y_score.argmax(1), y[test]
    cm = confusion_matrix(y_true, y_pred, labels=range(10))
    prob = np.exp(y_score / 100 - (y_score / 100).max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    metrics = {"accuracy": float((y_pred == y_true).mean()),
               "per_class_accuracy": (cm.diagonal() / cm.sum(1)).tolist(),
               "precision_macro": precision_score(y_true, y_pred, average="macro", zero_division=0),
               "recall_macro": recall_score(y_true, y_pred, average="macro"),
               "f1_macro": f1_score(y_true, y_pred, average="macro"), "confusion_matrix": cm.tolist(),
               "roc_auc_macro": roc_auc_score(y_true, prob, multi_class="ovr"), "roc_auc_micro": None,
               "roc_auc_per_class": [], "num_classes": 10, "class_names": [str(k) for k in range(10)],
               "n_samples": len(test)}
    # a history whose val accuracy peaks at lr = 0.1, for the learning-rate search test
    atomic_rows = [{"epoch": 1, "val_acc": 1 - abs(math.log10(cfg.optim.lr) + 1) / 10, "train_loss": 1.0}]
    atomic_write_csv(run_dir.file("history.csv"), atomic_rows)
    run_dir.write_metrics(metrics)
    finish_run(run_dir)
    return metrics


SLOW_FAKE_JOB = "helpers:slow_fake_job"  # the cluster tests' job
DIVERGING_FAKE_JOB = "helpers:diverging_fake_job"
STARTED = "started"  # the file slow_fake_job writes into its run folder before its pause (a killed run leaves it)


def slow_fake_job(cfg, run_dir, resume=False):
    """fake_job after sleeping `train.warmup_epochs` seconds (a field fake_job does not read), so a study's runs
    overlap on a cluster's nodes long enough for a test to kill a node or the driver in the middle."""
    import time

    run_dir.path.mkdir(parents=True, exist_ok=True)
    (run_dir.path / STARTED).write_text("")
    time.sleep(cfg.train.warmup_epochs)
    return fake_job(cfg, run_dir, resume)


def diverging_fake_job(cfg, run_dir, resume=False):
    """fake_job, except that a learning rate of 10 or more diverges (TrainingDiverged, as the train job raises)."""
    from dlstudy.errors import TrainingDiverged

    if cfg.optim.lr >= 10:
        raise TrainingDiverged(f"loss is nan at lr {cfg.optim.lr}")
    return fake_job(cfg, run_dir, resume)


def calls(log: Path) -> list[str]:
    """The sorted "<arm>/seed-<s> resume=<bool>" lines fake_job wrote to `log` (the `fake` fixture's value)."""
    return sorted(log.read_text().split("\n")[:-1]) if log.exists() else []


def fake_study(name: str, bad: bool = False) -> dict:
    """A tiny `<name>-quick` study of two arms of the fake job; `bad`: arm a fails (shrink above 1)."""
    return {"name": f"{name}-quick", "kind": "generic", "seeds": [0, 1], "description": f"fake {name}",
            "base": {"task": "fake", "data": {"name": "digits"}, "train": {"epochs": 9}},
            "arms": [{"name": "a", "set": {"optim.weight_decay": 2.0 if bad else 0.0}},
                     {"name": "b", "set": {"optim.weight_decay": 0.5}}],
            "reference": {"source": f"reference {name}",
                          "arms": {"b": {"accuracy": REFERENCE[name.split("-")[0]], "label": "x"}}}}


# ------------------------------------------------------------------------------------------------ image trees


def encode(array: np.ndarray, fmt: str) -> bytes:
    """`array` (H, W) or (H, W, 3) uint8 as PNG or JPEG (quality 95) bytes."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_image_tree(root: Path, classes=("cat", "dog", "emu"), per_class=4, size=(12, 10), gray=False,
                    splits=("train",), seed=0) -> dict:
    """root/<split>/<class>/<i>.png|jpg, alternating PNG and JPEG; returns the PNG pixel arrays by path."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
                array = rng.integers(0, 256, shape, dtype=np.uint8)
                fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
                path = root / split / cls / f"{i:03d}.{ext}"
                path.write_bytes(encode(array, fmt))
                arrays[path] = array
    (root / "train" / "README.txt").write_text("not an image, ignored")
    return arrays


# ------------------------------------------------------------------------------------------------ fake arm runs

ARM_N, ARM_K = 400, 4  # test images and classes of fake_arm_run


def fake_arm_run(folder: Path, accuracy: float, seed: int = 0, rng_seed: int = 0, ids=None, train_acc=None,
                 gap=None, steps=None, train_time_s=None, epochs=None, n_train=None) -> Path:
    """A finished run folder with predictions.npz of ARM_N test images at about `accuracy`; optionally a train
    accuracy (`train_acc`, or the realised test accuracy + `gap`), a steps.csv ending at global step `steps`, and
    metrics.json's train_time_s / epochs / data.n_train (what the claims ledger's footing reads)."""
    import json

    import yaml

    from dlstudy.predictions import make_predictions, write_predictions

    rng = np.random.default_rng(rng_seed)
    y = np.arange(ARM_N) % ARM_K
    right = rng.random(ARM_N) < accuracy
    pred = np.where(right, y, (y + 1 + rng.integers(0, ARM_K - 1, ARM_N)) % ARM_K)
    scores = rng.random((ARM_N, ARM_K)).astype(np.float32) * 0.5
    scores[np.arange(ARM_N), pred] += 1.0
    preds = make_predictions(y, scores, "margins", list("abcd"), ids)
    folder.mkdir(parents=True)
    write_predictions(folder / "predictions.npz", preds)
    metrics = {k: v for k, v in preds.metrics().items() if not isinstance(v, float) or math.isfinite(v)}
    extra = {"train_time_s": train_time_s, "epochs": epochs, "data": {"n_train": n_train} if n_train else None}
    metrics.update({k: v for k, v in extra.items() if v is not None})
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "train": {"train_eval_subset": 500}}))
    if gap is not None:
        train_acc = metrics["accuracy"] + gap
    if train_acc is not None:  # what summary.records.train_accuracy reads
        (folder / "history.csv").write_text(f"epoch,train_eval_acc\n1,{train_acc}\n")
    if steps is not None:
        rows = "".join(f"1,{s},{s},0.5,{s * 0.01}\n" for s in range(max(steps - 50, 1), steps + 1))
        (folder / "steps.csv").write_text("epoch,step,global_step,loss,time_s\n" + rows)
    (folder / "DONE").write_text("")
    return folder


def fake_arm_runs(folder: Path, arm: str, accuracy: float, seeds=(0,), **kw) -> list:
    """ArmRuns of one arm at `folder/<arm>/seed-<s>` (fake_arm_run's keywords), predictions drawn per arm and seed."""
    import zlib

    from dlstudy.studies.summary.records import load_arm_run

    # crc32, not hash(): str hashes change with PYTHONHASHSEED, so each CI run drew other predictions
    return [load_arm_run(fake_arm_run(folder / arm / f"seed-{s}", accuracy, s,
                                      rng_seed=zlib.crc32(f"{arm}/{s}".encode()), **kw), arm, s) for s in seeds]


# ------------------------------------------------------------------------------------------------ commands

# a two-epoch digits MLP run of `dlstudy train`, small enough for tests that compare folders before and after
TRAIN = ["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--device", "cpu",
         "--set", "data.max_train=200", "--set", "data.max_eval=100", "--set", "train.train_eval_subset=50",
         "--set", "train.evaluate_before=false"]


def state(root: Path) -> dict[str, bytes | None]:
    """Every path below `root` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}
