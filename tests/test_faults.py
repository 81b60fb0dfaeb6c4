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
from torch import nn

from dlstudy import io
from dlstudy.errors import ConfigError, DataError, DiskFullError, TrainingDiverged
from helpers import make_image_tree

TRAIN = ["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--device", "cpu",
         "--set", "data.max_train=200", "--set", "data.max_eval=100", "--set", "train.train_eval_subset=50",
         "--set", "train.evaluate_before=false"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))  # outside the folders whose state is compared


@pytest.fixture
def work(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "keep.txt").write_text("a file of the user's\n")
    return folder


def state(root: Path) -> dict[str, bytes | None]:
    """Every path below `root` with its bytes (None for a folder)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


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


# ------------------------------------------------------------------------------------------------ 2. a full disk


class _FullAfter:
    """The temporary file's writer, refusing with ENOSPC once `limit` bytes were written (as a full disk does)."""

    def __init__(self, fh, limit: int):
        self._fh, self._left = fh, limit

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if size > self._left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= size
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


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
    class Short:
        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            return max(0, self._fh.write(bytes(data)[: len(data) // 2]))

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

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
