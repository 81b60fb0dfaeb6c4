"""Faults a long study meets sooner or later (issue 26): a run that diverges, a full disk, an impossible image size,
an empty input, a symlinked image tree. Each ends in one message naming what happened and what to do, the exit
code (2: bad input or environment, 1: a failed run), no traceback, and the folders as they were (or, for a run,
resumable from its last complete checkpoint).

The CLI cases run as real processes (`python -m dlstudy ...`) on the embedded digits data or a tiny image tree.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from dlstudy import io
from dlstudy.errors import ConfigError, DiskFullError, TrainingDiverged
from helpers import TRAIN, make_image_tree, state

pytestmark = pytest.mark.usefixtures("own_cache")  # conftest.py


def dlstudy(*argv, cwd: Path | None = None, timeout: int = 120) -> tuple[int, str]:
    """(exit code, stderr) of `python -m dlstudy ARGV` in a process of its own; never a traceback."""
    env = {**os.environ, "DLSTUDY_NO_PROGRESS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "dlstudy", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr


# ------------------------------------------------------------------------------------------------ 1. divergence


def _tiny_problem(lr: float):
    from dlstudy.losses import build_objective
    from dlstudy.config import LossConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    wrapped = _Logits(model)
    objective = build_objective(LossConfig(), 3, 3, None, 0.0)
    optimizer = torch.optim.SGD([{"params": model.parameters(), "lr_mult": 1.0, "lr": lr}], lr=lr)
    x = torch.randn(8, 1, 4, 4) * 100
    y = torch.arange(8) % 3
    return wrapped, objective, optimizer, [(x, y)] * 3


class _Logits(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        return {"logits": logits, "features": logits, "embedding": None}


def test_a_nan_loss_names_epoch_step_and_the_remedies():
    from dlstudy.engine.loop import train_one_epoch

    model, objective, optimizer, batches = _tiny_problem(1e8)
    batches = batches[:1] + [(torch.full_like(batches[0][0], float("nan")), batches[0][1])]
    with pytest.raises(TrainingDiverged) as info:
        train_one_epoch(model, objective, optimizer, batches, epoch=3)
    assert str(info.value) == ("training diverged at epoch 3 step 2 (loss nan); lower optim.lr (now 1e8) or set "
                               "train.grad_clip")
    assert info.value.exit_code == 1


def test_weights_that_became_inf_after_the_last_finite_loss_are_caught_at_the_epoch_end():
    from dlstudy.engine.loop import train_one_epoch

    model, objective, optimizer, batches = _tiny_problem(0.1)

    class Blowup(torch.optim.SGD):
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.fill_(float("inf"))

    blowup = Blowup(optimizer.param_groups, lr=0.1)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1 step 1 \(weights inf\); lower "
                                               r"optim.lr \(now 0.1\) or lower train.grad_clip \(now 5\)$"):
        train_one_epoch(model, objective, blowup, batches[:1], grad_clip=5.0)


def test_scores_that_overflow_are_a_divergence_where_they_are_seen():
    from dlstudy.data import Split
    from dlstudy.engine.loop import evaluate

    model, *_ = _tiny_problem(0.1)
    with torch.no_grad():
        model.net[1].weight.fill_(3e38)
    split = Split(torch.full((4, 1, 4, 4), 200, dtype=torch.uint8), torch.arange(4) % 3)
    kwargs = dict(mean=[0.0], std=[1.0], device="cpu", class_names=["a", "b", "c"])
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the model's scores are inf on 4 of 4 images"):
        evaluate(model, split, **kwargs)
    at = {"epoch": 2, "step": 7, "what": "val scores", "lr": 1e8, "grad_clip": None}
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 2 step 7 \(val scores inf\); lower "
                                               r"optim.lr \(now 1e8\) or set train.grad_clip$"):
        evaluate(model, split, **kwargs, diverged_at=at)


def test_the_evaluator_calls_nan_scores_a_divergence():
    from dlstudy.metrics import Evaluator

    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        Evaluator(2).update(np.array([[np.nan, 0.5]]), np.array([0]))


def test_a_diverged_train_run_exits_1_with_one_message(work):
    code, err = dlstudy(*TRAIN, "--set", "optim.name=sgd", "--set", "optim.lr=1e8", "--out", work / "runs",
                        "--name", "r")
    assert code == 1
    assert "dlstudy train: error: training diverged at epoch 1 step " in err
    assert "; lower optim.lr (now 1e8) or set train.grad_clip" in err
    assert not (work / "runs" / "r" / "DONE").exists()


def test_a_finite_loss_that_blew_up_is_a_divergence_too(work):
    """Adam at lr 1e8 keeps the loss finite (~1e28 here) while the weights are garbage: above the loss ceiling it is
    the same divergence error, not a finished run at chance accuracy."""
    code, err = dlstudy(*TRAIN, "--set", "optim.name=adam", "--set", "optim.lr=1e8", "--out", work / "runs",
                        "--name", "r")
    assert code == 1 and "Traceback" not in err
    assert "dlstudy train: error: training diverged at epoch 1 step " in err
    assert ", above the ceiling 1e+06); lower optim.lr (now 1e8) or set train.grad_clip" in err
    assert not (work / "runs" / "r" / "DONE").exists() and (work / "runs" / "r" / "error.txt").is_file()


# ------------------------------------------------------------------------------------------------ 2. a full disk


class _Writer:
    """A stand-in for the temporary file's writer: every call but `write` goes to the real file."""

    def __init__(self, fh):
        self._fh = fh

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


class _FullAfter(_Writer):
    """Refuses with ENOSPC once `limit` bytes were written (as a full disk does)."""

    def __init__(self, fh, limit: int):
        super().__init__(fh)
        self._left = limit

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self._left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= size
        return self._fh.write(data)


def full_disk(monkeypatch, limit: int = 100, only: str = "") -> None:
    """Every atomic write (of a path containing `only`) meets a full disk after `limit` bytes."""
    real = io._open_temp
    opened = []

    def open_temp(fd):
        fh = real(fd)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        opened.append(name)
        return _FullAfter(fh, limit) if only in name else fh

    monkeypatch.setattr(io, "_open_temp", open_temp)


def _writers(folder: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlstudy.data.cache import save_torch
    from dlstudy.engine.checkpoint import save_checkpoint

    def figure(path):
        from dlstudy.figures.plots import save_figure

        fig, ax = plt.subplots()
        ax.plot(np.arange(1000.0))
        return save_figure(fig, path)

    return {
        "text": lambda p: io.atomic_write_text(p, "x" * 10_000),
        "checkpoint": lambda p: save_checkpoint(p, model=nn.Linear(100, 100), epoch=1, config={}),
        "npz": lambda p: io.atomic_write(p, lambda fh: np.savez(fh, scores=np.zeros((100, 10)))),
        "figure": figure,
        "cache": lambda p: save_torch({"images": torch.zeros(10_000, dtype=torch.uint8)}, p),
    }


@pytest.mark.parametrize("kind", ["text", "checkpoint", "npz", "figure", "cache"])
def test_a_write_meeting_a_full_disk_names_the_file_and_the_free_space(work, monkeypatch, kind):
    target = work / "keep.txt"
    before = state(work)
    full_disk(monkeypatch)
    with pytest.raises(DiskFullError) as info:
        _writers(work)[kind](target)
    message = str(info.value)
    assert message.startswith(f"{target}: cannot be written: ")
    assert "no space left on the device" in message or "the write stopped short" in message
    assert f" free in {work}); it was not written and its previous version, if any, is intact" in message
    assert isinstance(info.value, OSError)  # code that tolerates a failed optional write (a cache) still does
    assert state(work) == before  # no temporary file left, the previous file intact


def test_a_short_write_is_a_full_disk(work, monkeypatch):
    class Short(_Writer):
        def write(self, data):  # half of what it was given, as a full disk's last write
            return max(0, self._fh.write(bytes(data)[: len(data) // 2]))

    real = io._open_temp
    monkeypatch.setattr(io, "_open_temp", lambda fd: Short(real(fd)))
    before = state(work)
    with pytest.raises(DiskFullError, match=r"keep.txt: cannot be written: the write stopped short \(short write: "):
        io.atomic_write_text(work / "keep.txt", "new content\n")
    assert state(work) == before


def test_torch_saves_unexpected_pos_is_recognised_without_the_errno(work, monkeypatch):
    """torch.save's C++ writer reports a failed write as 'unexpected pos': with the free space, it is a full disk."""
    def write(fh):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(DiskFullError, match=r"the write stopped short \(\[enforce fail .*unexpected pos"):
        io.atomic_write(work / "x.pt", write)
    with pytest.raises(RuntimeError, match="CUDA error"):  # any other RuntimeError is left alone
        io.atomic_write(work / "x.pt", lambda fh: (_ for _ in ()).throw(RuntimeError("CUDA error")))
    assert sorted(os.listdir(work)) == ["keep.txt"]


def test_a_cache_that_does_not_fit_is_a_warning_and_leaves_no_file(tmp_path, monkeypatch, caplog):
    from dlstudy.data.cache import cached_decode

    full_disk(monkeypatch, only=".pt.")
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        raw, hit = cached_decode("digits", Path(__file__), 8, lambda: _raw(), str(cache))
    assert not hit and len(raw.pool) == 4
    assert "could not write cache" in caplog.text and "no space left on the device" in caplog.text
    assert list(cache.iterdir()) == []


def _raw():
    from dlstudy.data.splits import RawData, Split

    return RawData(["a", "b"], Split(torch.zeros((4, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 0, 1])))


def test_a_run_stopped_by_a_full_disk_resumes_from_its_last_complete_checkpoint(work, monkeypatch, capsys):
    """Epoch 2's last.pt meets a full disk: exit 2 naming it; epoch 1's checkpoint is intact, and once space is
    freed `--resume` finishes the run."""
    from dlstudy.cli import main

    real = io._open_temp
    saves = []

    def open_temp(fd):
        fh = real(fd)
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".last.pt." in name:
            saves.append(name)
            if len(saves) == 2:
                return _FullAfter(fh, 1000)
        return fh

    monkeypatch.setattr(io, "_open_temp", open_temp)
    code = main([*map(str, TRAIN), "--out", str(work), "--name", "r", "--set", "train.keep_last_checkpoint=true"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{work / 'r' / 'checkpoints' / 'last.pt'}: cannot be written: no space left on the device (" in err
    run = work / "r"
    assert not (run / "DONE").exists() and not list(run.rglob("*.tmp"))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(io, "_open_temp", real)
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "DONE").is_file()


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KB tmpfs (root only; skipped where mounting is not permitted): room for the run's small files and
    best.pt of the digits MLP, not for last.pt beside it."""
    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_real_full_disk_ends_in_one_message_and_no_partial_file(tmpfs):
    code, err = dlstudy(*TRAIN, "--out", tmpfs, "--name", "r")
    assert code == 2
    assert "cannot be written: no space left on the device (" in err and f" free in {tmpfs / 'r'}" in err
    assert not [p for p in tmpfs.rglob("*") if p.name.endswith(".tmp")]


def test_the_space_a_run_will_write_is_estimated_and_warned_about(tmp_path, monkeypatch):
    needed = io.estimate_run_bytes(1_000_000, n_scores=10_000, num_classes=10, optimizer_slots=1)
    assert needed == 4_000_000 + 8_000_000 + 10_000 * 48 + 2**20
    assert io.estimate_run_bytes(1_000_000, n_scores=0, num_classes=10, checkpoints=False) == 2**20
    assert io.space_warning(tmp_path, 1) is None
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: type("U", (), {"free": 2 * 2**20})())
    warning = io.space_warning(tmp_path / "new" / "out", needed)
    assert warning == (f"{tmp_path / 'new' / 'out'}: 2.0 MB free, less than the ~12.9 MB this run will write "
                       f"(checkpoints, predictions, figures; an estimate): it may stop on a full disk")


# ------------------------------------------------------------------------------------------------ 3. impossible size


def test_an_image_size_above_the_cap_is_refused_before_anything_runs(work):
    before = state(work)
    code, err = dlstudy("train", "--data", "digits", "--model", "smallcnn", "--set", "data.image_size=60000",
                        "--out", work / "runs")
    assert code == 2
    assert "dlstudy train: error: config.data.image_size: expected in [1, 4096] (pixels a side), got 60000" in err
    assert state(work) == before


def test_a_dataset_larger_than_memory_is_refused_before_decoding(work, monkeypatch):
    from dlstudy.config import DataConfig
    from dlstudy.data import registry

    monkeypatch.setattr(registry, "available_memory", lambda: 100 * 2**20)
    monkeypatch.setattr(registry, "decode", lambda *a: pytest.fail("decoded anyway"))
    with pytest.raises(ConfigError) as info:
        registry.load_dataset(DataConfig(name="digits", image_size=256, cache=False), batch_size=64)
    assert str(info.value) == (
        "data.image_size=256: digits needs about 673.9 MB of memory at that size (1797 images x 1 x 256 x 256 "
        "bytes, decoded and split) and a batch of train.batch_size=64 about 48.0 MB more; this machine has "
        "100.0 MB available. Lower data.image_size (or use a machine with more memory)")
    make_image_tree(work / "tree")
    with pytest.raises(ConfigError, match=r"^data.image_size=2048: imagefolder needs about .* \(12 images x 3 x "
                                          r"2048 x 2048 bytes"):
        registry.load_dataset(DataConfig(name="imagefolder", root=str(work / "tree"), image_size=2048, cache=False))
    monkeypatch.setattr(registry, "available_memory", lambda: None)  # unknown: no check
    monkeypatch.undo()
    assert len(registry.load_dataset(DataConfig(name="digits", image_size=16, cache=False), batch_size=64).train)


# ------------------------------------------------------------------------------------------------ 4. empty input


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from dlstudy.cli import main

    out = tmp_path_factory.mktemp("trained")
    argv = [a if a != "2" else "1" for a in TRAIN]
    assert main([*argv, "--out", str(out), "--name", "r"]) == 0
    return out / "r"


def test_predict_on_an_empty_folder_writes_nothing_and_exits_2(work, trained):
    (work / "empty").mkdir()
    (work / "notes").mkdir()
    (work / "notes" / "a.txt").write_text("not an image\n")
    before = state(work)
    code, err = dlstudy("predict", trained, work / "empty", work / "notes", "--out", work / "labels.csv")
    assert code == 2
    assert (f"dlstudy predict: error: nothing to predict in {work / 'empty'}, {work / 'notes'}: no image files found "
            f"(folders are searched recursively for .jpg, .jpeg, .png, .bmp, .gif, ...); nothing was written") in err
    assert state(work) == before


def test_predict_with_no_readable_image_writes_nothing_and_exits_2(work, trained):
    (work / "bad.png").write_bytes(b"not a png")
    before = state(work)
    code, err = dlstudy("predict", trained, work / "bad.png", work / "gone.jpg", "--out", work / "labels.csv")
    assert code == 2
    assert (f"nothing to predict in {work / 'bad.png'}, {work / 'gone.jpg'}: none of the 1 image file(s) found "
            f"could be read ({work / 'gone.jpg'}: no such file or folder; {work / 'bad.png'}: cannot decode image") \
        in err
    assert state(work) == before


def test_evaluate_on_a_tree_without_readable_images_writes_nothing_and_exits_2(work, trained):
    (work / "tree" / "test" / "0").mkdir(parents=True)
    (work / "tree" / "test" / "1").mkdir(parents=True)
    before, run_before = state(work), state(trained)
    code, err = dlstudy("evaluate", trained, "--data", "imagefolder", "--data-root", work / "tree")
    assert code == 2
    assert f"dlstudy evaluate: error: {work / 'tree'}: no images found as train/<class>/<image>" in err
    assert state(work) == before and state(trained) == run_before


# ------------------------------------------------------------------------------------------------ 5. symlinks


def test_symlinked_split_and_class_folders_are_read_and_a_loop_once(work, caplog):
    from dlstudy.config import DataConfig
    from dlstudy.data import load_dataset
    from dlstudy.data.registry import load_evaluation_split

    make_image_tree(work / "real", splits=("train", "test"))
    tree = work / "tree"
    (tree / "train").mkdir(parents=True)
    for cls in ("cat", "dog"):
        (tree / "train" / cls).symlink_to(work / "real" / "train" / cls, target_is_directory=True)
    (tree / "train" / "emu").mkdir()
    for image in (work / "real" / "train" / "emu").iterdir():
        (tree / "train" / "emu" / image.name).symlink_to(image)
    (tree / "train" / "emu" / "loop").symlink_to(tree, target_is_directory=True)
    (tree / "test").symlink_to(work / "real" / "test", target_is_directory=True)
    (tree / "train" / "emu" / "notes.txt").write_text("not an image\n")
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(DataConfig(name="imagefolder", root=str(tree), cache=False, val_fraction=0.0))
        images, names, _, notes = load_evaluation_split(
            DataConfig(name="imagefolder", root=str(tree), cache=False, val_fraction=0.0), "test")
    assert splits.class_names == names == ["cat", "dog", "emu"]
    assert len(splits.train) == 12 and len(images) == 12
    emu = tree / "train" / "emu"
    assert (f"{emu / 'loop'}: left out: the same folder as the tree's top folder (a symlink loop or a second link "
            f"to it), read once there") in caplog.text
    assert f"{emu}: 1 file(s) left out, not image files (by extension): notes.txt" in caplog.text
    assert "class folder has no images" not in caplog.text


def test_an_unreadable_class_folder_is_named_with_its_reason(work, caplog):
    if os.geteuid() == 0:
        pytest.skip("root reads a folder whatever its mode")
    from dlstudy.data.folders import load_image_tree
    from dlstudy.data.sources import open_tree

    make_image_tree(work / "tree", classes=("cat", "dog", "emu"))
    (work / "tree" / "train" / "emu").chmod(0)
    try:
        with caplog.at_level(logging.WARNING):
            raw = load_image_tree(open_tree(work / "tree"), None)
    finally:
        (work / "tree" / "train" / "emu").chmod(0o755)
    assert raw.class_names == ["cat", "dog"]
    assert f"{work / 'tree' / 'train' / 'emu'}: left out: folder cannot be read (Permission denied)" in caplog.text
    assert "class folder has no images" not in caplog.text


# ------------------------------------------------------------------------------------------------ 1b. divergence, wired


def _nan_on_call(monkeypatch, n: int) -> None:
    """engine.loop.predict returns NaN logits from its n-th call on (1-based): weights that overflow the forward
    pass while the training loss stayed finite."""
    from dlstudy.engine import loop

    real, count = loop.predict, [0]

    def predict(*args, **kwargs):
        count[0] += 1
        scores, y_true, loss = real(*args, **kwargs)
        return (torch.full_like(scores, float("nan")) if count[0] >= n else scores), y_true, loss

    monkeypatch.setattr(loop, "predict", predict)


@pytest.mark.parametrize("epochs, nth, what", [("2", 1, "val scores"), ("1", 3, "test scores")])
def test_a_divergence_first_seen_in_val_or_test_scores_says_epoch_step_and_lr(work, monkeypatch, capsys, epochs, nth,
                                                                              what):
    """Epoch 1's val evaluation (the 1st predict: evaluate_before is off), or the test evaluation after one epoch
    (after val and the train subset): one message with the epoch, its last step and the lr; the run folder is kept
    with error.txt though it has no checkpoint yet, and without DONE."""
    from dlstudy.cli import main

    _nan_on_call(monkeypatch, nth)
    argv = [a if a != "2" else epochs for a in map(str, TRAIN)]
    code = main([*argv, "--set", "optim.lr=0.01", "--set", "train.batch_size=50", "--out", str(work / "runs"),
                 "--name", "r"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert (f"dlstudy train: error: training diverged at epoch 1 step 4 ({what} nan); lower optim.lr (now 0.01) or "
            f"set train.grad_clip") in err
    if what == "val scores":  # the epoch's own check: where the last good checkpoint is
        assert "set train.grad_clip; the last good checkpoint is kept: none (first epoch, or " in err
    run = work / "runs" / "r"
    assert (run / "error.txt").is_file() and (run / "config.yaml").is_file()
    assert not (run / "DONE").exists() and not (run / ".lock").exists()


def test_an_error_txt_that_does_not_fit_on_the_disk_leaves_the_runs_own_error(work, monkeypatch, caplog):
    """A run failing on a full disk: error.txt cannot be written either; the error raised is still the run's."""
    from dlstudy.config import build_run_config
    from dlstudy.jobs import run_job
    from dlstudy.runs import RunDir

    run = RunDir(work / "r")
    (run.path / "checkpoints").mkdir(parents=True)  # a result: the folder is kept and error.txt written
    full_disk(monkeypatch, only="error.txt")
    cfg = build_run_config({"task": "train", "model": {"name": "no-such-model"}, "device": "cpu",
                            "data": {"name": "digits", "max_train": 50, "max_eval": 20}})
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError, match="no-such-model"):
        run_job(cfg, run)
    assert f"could not write {run.path / 'error.txt'}: " in caplog.text and "no space left" in caplog.text
    assert not (run.path / "error.txt").exists() and not list(run.path.glob(".error.txt.*"))


def test_a_full_disk_says_how_to_resume_the_run(work, monkeypatch, capsys):
    from dlstudy.cli import main

    real, saves = io._open_temp, []

    def open_temp(fd):
        fh = real(fd)
        if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            saves.append(fd)
            return _FullAfter(fh, 1000) if len(saves) == 2 else fh
        return fh

    monkeypatch.setattr(io, "_open_temp", open_temp)
    assert main([*map(str, TRAIN), "--out", str(work), "--name", "r"]) == 2
    err = capsys.readouterr().err
    assert (f"Free some space or write to another folder, then run again. The run keeps its last complete "
            f"checkpoint: once space is freed, continue it with `dlstudy train --resume {work / 'r'}`") in err


def test_too_little_free_space_is_warned_about_before_the_run(work, monkeypatch, caplog):
    from dlstudy.cli import main

    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: type("U", (), {"free": 10_000})())
    with caplog.at_level(logging.WARNING):
        assert main([*map(str, TRAIN), "--set", "train.epochs=1", "--out", str(work), "--name", "r"]) == 0
    assert f"{work / 'r'}: 9.8 KB free, less than the ~" in caplog.text
    assert "this run will write (checkpoints, predictions, figures; an estimate): it may stop on a full disk" \
        in caplog.text


def test_the_memory_check_of_a_train_run_counts_its_batch(work, monkeypatch, capsys):
    from dlstudy.cli import main
    from dlstudy.data import registry

    monkeypatch.setattr(registry, "available_memory", lambda: 200_000)
    before = state(work)
    assert main([*map(str, TRAIN), "--set", "train.batch_size=1024", "--out", str(work / "runs")]) == 2
    err = capsys.readouterr().err
    assert "and a batch of train.batch_size=1024 about " in err and "this machine has 195.3 KB available" in err
    assert state(work) == before


def test_a_diverged_run_is_a_failure_with_its_reason_in_the_study_report(tmp_path, monkeypatch):
    """Any TrainingDiverged (ScoresNotFinite too, by the class hierarchy) is a divergence for the runner; the study
    report lists the run as failed with the first line of its error."""
    from dlstudy import jobs
    from dlstudy.config import build_run_config
    from dlstudy.errors import ScoresNotFinite
    from dlstudy.studies.running.tasks import RunTask, run_one
    from dlstudy.studies.summary.study_report import failure_reason
    from helpers import DIVERGING_FAKE_JOB

    monkeypatch.setitem(jobs.JOBS, "fake", jobs.Job(DIVERGING_FAKE_JOB, "test job"))
    cfg = build_run_config({"task": "fake", "optim": {"lr": 10.0}})
    result = run_one(RunTask("a", 0, cfg, tmp_path / "s" / "a" / "seed-0"))
    assert not result.ok and result.diverged and result.error_type == "TrainingDiverged"
    assert failure_reason(result.path / "error.txt") == "loss is nan at lr 10.0"
    assert not (result.path / ".lock").exists()

    def raises(cfg, run_dir, resume=False):
        raise ScoresNotFinite("y_score contains NaN or inf")

    monkeypatch.setattr("helpers.diverging_fake_job", raises)
    result = run_one(RunTask("a", 1, cfg, tmp_path / "s" / "a" / "seed-1"))
    assert result.diverged and result.error_type == "ScoresNotFinite"
    (tmp_path / "plain.txt").write_text("RuntimeError: waits for x, which failed\n")
    assert failure_reason(tmp_path / "plain.txt") == "RuntimeError: waits for x, which failed"


def test_the_study_report_lists_a_diverged_run_with_its_reason(tmp_path, monkeypatch, fake):
    from dlstudy import jobs
    from dlstudy.cli import main
    from helpers import DIVERGING_FAKE_JOB

    monkeypatch.setitem(jobs.JOBS, "fake", jobs.Job(DIVERGING_FAKE_JOB, "test job"))
    study = {"name": "s", "seeds": [0], "base": {"task": "fake"},
             "arms": [{"name": "ok", "set": {"optim.lr": 0.1}}, {"name": "hot", "set": {"optim.lr": 100.0}}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out")]) == 1
    report = (tmp_path / "out" / "s" / "report.md").read_text()
    assert "Failed runs" in report and "| hot/seed-0 | loss is nan at lr 100.0 |" in report
    assert (tmp_path / "out" / "s" / "ok" / "seed-0" / "DONE").is_file()


# ------------------------------------------------------------------------------------------------ 6. two processes

STUDY = {"name": "two", "seeds": [0, 1],
         "base": {"task": "train", "device": "cpu", "data": {"name": "digits", "max_train": 300, "max_eval": 100},
                  "model": {"name": "mlp"}, "train": {"epochs": 3, "evaluate_before": False, "train_eval_subset": 50}},
         "arms": [{"name": "a", "set": {"optim.lr": 0.001}}, {"name": "b", "set": {"optim.lr": 0.003}}]}


def _env() -> dict:
    return {**os.environ, "DLSTUDY_NO_PROGRESS": "1", "MPLBACKEND": "Agg"}


class _Holder:
    """Another process holding a run folder's lock (dlstudy.runs.lock_run) until it ends or is killed."""

    def __init__(self, folder: Path, until: Path | None = None, linger: float = 0.0):
        """Held until the file `until` exists and `linger` seconds more (or for two minutes)."""
        code = ("import os, sys, time; from dlstudy.runs import lock_run; lock = lock_run(sys.argv[1]); "
                "print('locked', flush=True); end = time.time() + 120\n"
                "while time.time() < end and not os.path.exists(sys.argv[2]): time.sleep(0.05)\n"
                "time.sleep(float(sys.argv[3])); lock.release()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(folder), str(until or ""), str(linger)],
                                     stdout=subprocess.PIPE, text=True, env=_env())
        assert self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: the kernel releases the lock, the lock file stays
        self.proc.wait()


def _study(folder: Path, **changes) -> Path:
    path = folder / "two.yaml"
    path.write_text(yaml.safe_dump({**STUDY, **changes}))
    return path


def test_a_run_lock_is_exclusive_released_and_taken_over_from_a_killed_process(tmp_path):
    from dlstudy.errors import RunLocked
    from dlstudy.runs import lock_run, run_holder

    run = tmp_path / "run"
    holder = _Holder(run)
    try:
        assert run_holder(run) == f"process {holder.pid}"
        with pytest.raises(RunLocked, match=rf"^{run}: in progress in process {holder.pid} \(it holds {run}/.lock\)"):
            lock_run(run)
    finally:
        holder.kill()
    assert (run / ".lock").read_text().split()[0] == str(holder.pid)  # a stale lock file: its process is gone
    assert run_holder(run) is None
    with lock_run(run):  # taken over
        assert (run / ".lock").read_text().split()[0] == str(os.getpid())
    assert sorted(os.listdir(run)) == []  # released: the lock file is removed


def test_resume_of_a_run_another_process_trains_is_refused_naming_it(trained):
    holder = _Holder(trained)
    try:
        before = state(trained)
        code, err = dlstudy("train", "--resume", trained)
        assert code == 2
        assert (f"dlstudy train: error: --resume {trained}: the run is being trained by process {holder.pid} (it "
                f"holds {trained / '.lock'}); wait for that process to end, or stop it, then resume") in err
        assert state(trained) == before
    finally:
        holder.proc.terminate()
        holder.proc.wait()


def test_a_study_skips_a_run_another_process_holds_then_no_wait_stops_and_a_stale_lock_is_taken_over(tmp_path):
    study = _study(tmp_path, seeds=[0])
    out = tmp_path / "out"
    holder = _Holder(out / "two" / "a" / "seed-0")
    try:
        code, err = dlstudy("run", study, "--out", out, "--no-wait", "--jobs", "2", cwd=tmp_path)  # in workers
        assert code == 1
        assert f"a/seed-0: in progress in process {holder.pid}, skipped" in err
        assert (f"dlstudy run: error: 1 run(s) of study two are in progress in other processes (a/seed-0 in process "
                f"{holder.pid}): the study report was not written; run the same command again once they end "
                f"(without --no-wait it waits for them)") in err
        assert not (out / "two" / "report.md").exists() and (out / "two" / "b" / "seed-0" / "DONE").is_file()
    finally:
        holder.kill()  # kill -9: the lock file stays behind, its process gone
    assert (out / "two" / "a" / "seed-0" / ".lock").is_file()
    code, err = dlstudy("run", study, "--out", out, cwd=tmp_path)
    assert code == 0 and "skipped" not in err
    assert (out / "two" / "a" / "seed-0" / "DONE").is_file() and (out / "two" / "report.md").is_file()
    assert not list(out.rglob(".lock"))


def test_reproduce_no_wait_leaves_a_held_study_unreported_and_says_so(tmp_path):
    """`dlstudy reproduce --no-wait`: the study with a run held by another process is not waited for (no report,
    the failure names it, exit 1); nothing of the held run is touched."""
    out = tmp_path / "out"
    held = out / "svm-quick" / "ovr" / "seed-0"
    holder = _Holder(held)
    try:
        code, err = dlstudy("reproduce", "--quick", "--only", "svm", "--budget", "tiny", "--out", out, "--no-wait",
                            cwd=tmp_path, timeout=300)
        assert code == 1
        assert f"ovr/seed-0: in progress in process {holder.pid}, skipped" in err
        assert "svm: study failed: 1 run(s) of study svm-quick are in progress in other processes" in err
        assert not (out / "svm-quick" / "report.md").exists()
        assert (out / "svm-quick" / "crammer_singer" / "seed-0" / "DONE").is_file()
        assert sorted(os.listdir(held)) == [".lock"]
    finally:
        holder.kill()


def test_a_study_waits_for_a_run_in_progress_elsewhere_before_its_report(tmp_path):
    """The holder lets go once the study has run b/seed-0 (after skipping a/seed-0), without training a/seed-0 (as
    a killed process would): the waiting process says what it waits for, then trains the run itself."""
    study = _study(tmp_path, seeds=[0])
    out = tmp_path / "out"
    # held 2 s past b's DONE: the study has finished b and found a still held (released sooner, it need not wait)
    holder = _Holder(out / "two" / "a" / "seed-0", until=out / "two" / "b" / "seed-0" / "DONE", linger=2.0)
    code, err = dlstudy("run", study, "--out", out, cwd=tmp_path)
    holder.proc.wait()
    assert code == 0
    assert f"a/seed-0: in progress in process {holder.pid}, skipped" in err
    assert (f"waiting for 1 run(s) in progress in other processes before writing the study report: a/seed-0 "
            f"(process {holder.pid})") in err
    assert (out / "two" / "a" / "seed-0" / "DONE").is_file() and (out / "two" / "report.md").is_file()


def test_two_processes_on_one_study_train_every_run_exactly_once(tmp_path):
    """Two `dlstudy run` of one study into one --out, the second started once the first holds its first run: both
    exit 0, each run is trained by one of them (steps.csv has each epoch once), and the second names what it
    skipped."""
    import csv
    import re
    import time

    study = _study(tmp_path, arms=[*STUDY["arms"], {"name": "c", "set": {"optim.lr": 0.002}}])
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "dlstudy", "run", str(study), "--out", str(out)]
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    deadline = time.time() + 60
    while not (out / "two" / "a" / "seed-0" / ".lock").exists():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_env())
    errs = [p.communicate(timeout=300)[1] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], errs
    assert all("Traceback" not in e for e in errs)
    trained = [{m for m in re.findall(r"done   (\w/seed-\d) accuracy \S+ \((\d+\.\d) s\)", e) if float(m[1]) > 0}
               for e in errs]
    trained = [{run for run, _ in t} for t in trained]
    runs = {f"{arm}/seed-{s}" for arm in "abc" for s in (0, 1)}
    assert trained[0] | trained[1] == runs and not trained[0] & trained[1], errs
    skipped = set(re.findall(r"(\w/seed-\d): in progress in process (\d+), skipped", errs[1]))
    assert skipped and {pid for _, pid in skipped} == {str(first.pid)}, errs[1]
    assert {run for run, _ in skipped} <= trained[0]
    for run in runs:
        rows = list(csv.DictReader(open(out / "two" / run / "steps.csv")))
        keys = [(r["epoch"], r["step"]) for r in rows]
        assert len(keys) == len(set(keys)) and sorted({int(r["epoch"]) for r in rows}) == [1, 2, 3]
        assert (out / "two" / run / "DONE").is_file()
    assert not list(out.rglob(".lock")) and (out / "two" / "report.md").is_file()


def test_a_run_folder_sent_as_a_tar_leaves_its_lock_file_behind(tmp_path):
    import tarfile
    from io import BytesIO

    from dlstudy.studies.running.tasks import pack_folder

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"x")
    (tmp_path / "run" / ".lock").write_text("1234 host\n")
    with tarfile.open(fileobj=BytesIO(pack_folder(tmp_path / "run"))) as tar:
        assert sorted(tar.getnames()) == [".", "./checkpoints", "./checkpoints/last.pt"]
