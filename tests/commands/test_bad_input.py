"""Bad input, tried as a hostile but realistic user would (issue 16): every case exits with code 2 (1 where some runs
of a study failed but its report was written), prints one message naming the value or file and what was expected,
no traceback, and leaves the folders it was pointed at byte for byte as they were.

The study cases use the fake nearest-centroid job (tests/helpers.py); the data and training cases the embedded digits
data or a tiny image tree, so each case takes at most a few seconds.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from dlstudy.cli import main
from dlstudy.config import build_run_config, dump_yaml
from dlstudy.errors import ConfigError, WeightsError
from dlstudy.runs import check_folder_name
from dlstudy.studies.running.runner import load_study, plan_study
from helpers import TRAIN, calls, fake_study, make_image_tree, state

pytestmark = pytest.mark.usefixtures("own_cache")  # conftest.py


def cli(argv: list, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def study_file(folder: Path, **changes) -> Path:
    study = {"name": "s", "kind": "generic", "seeds": [0], "base": {"task": "fake", "data": {"name": "digits"}},
             "arms": [{"name": "a", "set": {"optim.weight_decay": 0.0}},
                      {"name": "b", "set": {"optim.weight_decay": 0.5}}]}
    study.update(changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def read_only(folder: Path, monkeypatch) -> None:
    """chmod a-w; as root (who may write anyway) os.access also reports the folder read-only, as it would be."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK
                            else real(p, mode, **kw))


@pytest.fixture(autouse=True)
def _writable_again(tmp_path):
    yield
    for p in tmp_path.rglob("*"):  # pytest must be able to delete tmp_path
        if p.is_dir():
            p.chmod(0o755)


# ------------------------------------------------------------------------------------------------ 1. names


@pytest.mark.parametrize("name", [".", ".."])
@pytest.mark.parametrize("where", ["study", "arm"])
def test_study_and_arm_named_dot_or_dotdot_are_refused(work, fake, capsys, where, name):
    (work / "clob" / "inner").mkdir(parents=True)
    (work / "clob" / "report.md").write_text("the user's report\n")  # a study named '..' once replaced this
    if where == "study":
        path = study_file(work, name=name)
    else:
        path = study_file(work, arms=[{"name": name, "set": {}}])
    before = state(work)
    code, err = cli(["run", path, "--out", work / "clob" / "inner"], capsys)
    assert code == 2
    assert f"{'study.name' if where == 'study' else 'arm name'} {name!r} is used as a folder name" in err
    assert state(work) == before


@pytest.mark.parametrize("command", ["train", "svm"])
@pytest.mark.parametrize("name", [".", ".."])
def test_run_named_dot_or_dotdot_is_refused(work, capsys, command, name):
    before = state(work)
    code, err = cli([command, "--name", name, "--out", work / "inner"], capsys)
    assert code == 2 and f"--name / name {name!r} is used as a folder name" in err
    assert state(work) == before


def test_every_folder_name_stays_inside_its_parent(work, fake):
    for bad in ["", ".", "..", "a/b", "../x", "a b"]:
        with pytest.raises(ConfigError, match="is used as a folder name"):
            check_folder_name(bad, "arm name")
    # grid-generated names (values that look like paths) stay inside the study folder
    path = study_file(work, arms=[{"name": "x", "set": {}}], grid={"data.root": ["..", "../..", "."]})
    out = work / "out"
    tasks = plan_study(load_study(path), out)
    assert len(tasks) == 3
    for task in tasks:
        assert task.path.resolve().parent.parent == (out / "s").resolve()


# ------------------------------------------------------------------------------------------------ 2, 3. ranges


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--epochs", "-2"], "config.train.epochs: expected >= 1, got -2"),
    (["train", "--set", "train.epochs=-1"], "config.train.epochs: expected >= 1, got -1"),
    (["train", "--set", "train.batch_size=0"], "config.train.batch_size: expected >= 1, got 0"),
    (["train", "--batch-size", "-4"], "config.train.batch_size: expected >= 1, got -4"),
    (["train", "--lr", "0"], "config.optim.lr: expected > 0, got 0.0"),
    (["svm", "--C", "1", "-1"], "config.svm.C: expected every value > 0, got [1.0, -1.0]"),
    (["svm", "--set", "data.val_fraction=1"], "config.data.val_fraction: expected in [0, 1), got 1.0"),
])
def test_out_of_range_flags_and_overrides(work, capsys, argv, fragment):
    before = state(work)
    code, err = cli([*argv, "--out", work / "runs"], capsys)
    assert code == 2 and fragment in err
    assert state(work) == before


def test_out_of_range_value_in_a_resumed_runs_config(work, capsys):
    run = work / "run"
    run.mkdir()
    text = dump_yaml(build_run_config({"task": "train", "train": {"epochs": 2}})).replace("epochs: 2", "epochs: -3")
    (run / "config.yaml").write_text(text)
    before = state(work)
    code, err = cli(["train", "--resume", run], capsys)
    assert code == 2 and f"{run / 'config.yaml'}.train.epochs: expected >= 1, got -3" in err
    assert state(work) == before


def test_out_of_range_value_in_a_study_fails_before_any_run(work, fake, capsys):
    path = study_file(work, base={"task": "fake", "train": {"epochs": -1}})
    before = state(work)
    code, err = cli(["run", path, "--out", work / "out"], capsys)
    assert code == 2 and "arm 'a': config.train.epochs: expected >= 1, got -1" in err
    assert state(work) == before and calls(fake) == []


# ------------------------------------------------------------------------------------------------ 4. output folders


def _argv(command: str, work: Path, out: Path) -> list:
    if command == "train":
        return [*TRAIN, "--out", out]
    if command == "svm":
        return ["svm", "--out", out]
    if command == "run":
        return ["run", study_file(work), "--out", out]
    return ["reproduce", "--quick", "--budget", "tiny", "--out", out]


COMMANDS = ["train", "svm", "run", "reproduce"]


@pytest.mark.parametrize("command", COMMANDS)
def test_out_naming_an_existing_file(work, fake, capsys, command):
    argv = _argv(command, work, work / "keep.txt")
    before = state(work)
    code, err = cli(argv, capsys)
    assert code == 2 and f"--out {work / 'keep.txt'}: is a file, not a folder" in err
    assert state(work) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_out_below_an_existing_file(work, fake, capsys, command):
    argv = _argv(command, work, work / "keep.txt" / "runs")
    before = state(work)
    code, err = cli(argv, capsys)
    assert code == 2 and f"cannot be created: {work / 'keep.txt'} is a file" in err
    assert state(work) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_out_inside_a_read_only_folder(work, fake, capsys, monkeypatch, command):
    argv = _argv(command, work, work / "locked" / "runs")
    (work / "locked").mkdir()
    (work / "locked" / "old.txt").write_text("old\n")
    before = state(work)
    read_only(work / "locked", monkeypatch)
    code, err = cli(argv, capsys)
    assert code == 2 and f"--out {work / 'locked' / 'runs'}: cannot write there (inside {work / 'locked'})" in err
    assert state(work) == before


@pytest.mark.parametrize("command", ["train", "svm"])
def test_name_equal_to_an_existing_file(work, capsys, command):
    argv = [*_argv(command, work, work), "--name", "keep.txt"]
    before = state(work)
    code, err = cli(argv, capsys)
    assert code == 2 and f"--name keep.txt: {work / 'keep.txt'} is a file, not a run folder" in err
    assert state(work) == before


@pytest.mark.parametrize("command", ["run", "reproduce"])
def test_study_folder_name_taken_by_a_file(work, fake, capsys, command):
    argv = _argv(command, work, work / "out")
    taken = work / "out" / ("s" if command == "run" else "svm-quick")
    taken.parent.mkdir()
    taken.write_text("not a folder\n")
    before = state(work)
    code, err = cli(argv, capsys)
    assert code == 2 and f"study folder {taken}: is a file, not a folder" in err
    assert state(work) == before


# ------------------------------------------------------------------------------------------------ 5. damaged results


def test_damaged_metrics_json_of_a_finished_study_run(work, fake, capsys, caplog):
    path = study_file(work)
    assert cli(["run", path, "--out", work / "out"], capsys)[0] == 0
    study_dir = work / "out" / "s"
    damaged = study_dir / "a" / "seed-0" / "metrics.json"
    damaged.write_text(damaged.read_text()[:40])

    # report: built, the run marked unreadable, the file named
    with caplog.at_level(logging.WARNING):
        code, _ = cli(["report", study_dir], capsys)
    assert code == 0 and f"{damaged}: not valid JSON" in caplog.text
    report = (study_dir / "report.md").read_text()
    assert "Unreadable runs" in report and "a/seed-0" in report and "| a | 0 | unreadable |" in report
    code, err = cli(["report", damaged.parent], capsys)  # the run folder on its own: its report cannot be built
    assert code == 2 and str(damaged) in err

    # run: the damaged run is not finished, so it is run again (and only it)
    fake.unlink()
    assert cli(["run", path, "--out", work / "out"], capsys)[0] == 0
    assert calls(fake) == ["a/seed-0 resume=True"]
    assert json.loads(damaged.read_text())["accuracy"] > 0.5
    assert "Unreadable" not in (study_dir / "report.md").read_text()


# ------------------------------------------------------------------------------------------------ 6. one class


def test_imagefolder_with_a_single_class(work, capsys):
    make_image_tree(work / "tree", classes=("cat",))
    before = state(work)
    code, err = cli(["svm", "--data", "imagefolder", "--data-root", work / "tree", "--out", work / "runs"], capsys)
    assert code == 2
    assert f"{work / 'tree' / 'train'}: a classification dataset needs at least two classes" in err
    assert state(work) == before


# ------------------------------------------------------------------------------------------------ 7. reproduce


def test_a_study_whose_runs_all_failed_is_shown_in_the_combined_report(tmp_path, fake_studies, capsys):
    study = fake_study("losses", bad=True)
    study["arms"][1]["set"]["optim.weight_decay"] = 3.0  # both arms fail
    study["reference"]["accuracy"] = 0.478  # a number without an arm: once max() of no runs
    study["reference"]["after"] = {"accuracy": 0.5}
    (fake_studies / "losses-quick.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / "out"
    code, _ = cli(["reproduce", "--quick", "--budget", "tiny", "--out", out], capsys)
    assert code == 1
    md = (out / "report.md").read_text()
    section = md[md.index("## Q2. Loss functions"):md.index("## Q3. Optimizers")]
    assert "0 of 2 runs finished. Failed: a/seed-0: ValueError: fake job: shrink above 1; b/seed-0: " in section
    assert "No finished runs yet." in section
    assert "| accuracy | 0.478 | — |" in section


# ------------------------------------------------------------------------------------------------ 8. smaller ones


def test_empty_class_folder_is_named_in_a_warning(work, caplog):
    from dlstudy.config import DataConfig
    from dlstudy.data import load_dataset

    make_image_tree(work / "tree")
    (work / "tree" / "train" / "yak").mkdir()
    (work / "tree" / "train" / "zebra").mkdir()
    (work / "tree" / "train" / "zebra" / "notes.txt").write_text("no images here\n")
    with zipfile.ZipFile(work / "tree.zip", "w") as zf:
        zf.writestr("train/cat/0.png", (work / "tree" / "train" / "cat" / "000.png").read_bytes())
        zf.writestr("train/dog/0.png", (work / "tree" / "train" / "dog" / "000.png").read_bytes())
        zf.writestr("train/gnu/", "")
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(DataConfig(name="imagefolder", root=str(work / "tree"), cache=False))
        load_dataset(DataConfig(name="imagefolder", root=str(work / "tree.zip"), cache=False, test_fraction=0.0,
                                val_fraction=0.0))
    assert splits.class_names == ["cat", "dog", "emu"]
    train = work / "tree" / "train"
    for folder in (train / "yak", train / "zebra", f"{work / 'tree.zip'}!train/gnu"):
        assert f"{folder}: class folder has no images" in caplog.text


@pytest.mark.parametrize("image", ["cat/000.png", "dog/001.jpg"])  # the first image is probed, the others decoded
def test_zero_byte_image_names_the_file(work, capsys, image):
    make_image_tree(work / "tree")
    (work / "tree" / "train" / image).write_bytes(b"")
    before = state(work)
    code, err = cli(["svm", "--data", "imagefolder", "--data-root", work / "tree", "--out", work / "runs",
                     "--set", "data.cache=false"], capsys)
    assert code == 2 and f"{work / 'tree' / 'train' / image}: cannot decode image: empty file (0 bytes)" in err
    assert "BytesIO" not in err
    assert state(work) == before


def test_text_file_as_weights(work, capsys):
    (work / "notes.txt").write_text("these are not weights\n")
    before = state(work)
    code, err = cli([*TRAIN, "--weights", work / "notes.txt", "--out", work / "runs"], capsys)
    assert code == 2
    assert f"weights file {work / 'notes.txt'} is not a file written by torch.save (it starts with b'thes')" in err
    assert state(work) == before


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_weights_or_checkpoint_are_refused_without_advising_weights_only_false(work, tmp_path, capsys):
    from dlstudy.engine.checkpoint import load_checkpoint

    marker = tmp_path / "code-ran"
    torch.save({"backbone.0.weight": torch.zeros(2), "x": _Evil(marker)}, work / "evil.pt")
    (work / "evil.pkl").write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    before = state(work)
    for name in ("evil.pt", "evil.pkl"):
        code, err = cli([*TRAIN, "--weights", work / name, "--out", work / "runs"], capsys)
        assert code == 2 and f"weights file {work / name} is not a plain state dict or checkpoint" in err
        assert "cannot be loaded safely" in err and "weights_only" not in err
    with pytest.raises(WeightsError) as info:
        load_checkpoint(work / "evil.pt")
    assert "cannot be loaded safely" in str(info.value) and "weights_only" not in str(info.value)
    assert not marker.exists() and state(work) == before


def test_ctrl_c_says_how_to_resume_and_the_finished_resume_drops_error_txt(work, capsys, monkeypatch):
    from dlstudy.engine.session import Session

    run_epoch = Session.run_epoch

    def interrupted(self, epoch, run_dir):
        if epoch == 2:
            raise KeyboardInterrupt
        return run_epoch(self, epoch, run_dir)

    monkeypatch.setattr(Session, "run_epoch", interrupted)
    code, err = cli([*TRAIN, "--out", work, "--name", "r"], capsys)
    assert code == 130 and f"interrupted; to continue from the last finished epoch: dlstudy train --resume " \
                           f"{work / 'r'}" in err
    assert (work / "r" / "error.txt").is_file() and not (work / "r" / "DONE").exists()
    monkeypatch.setattr(Session, "run_epoch", run_epoch)
    assert cli(["train", "--resume", work / "r"], capsys)[0] == 0
    assert (work / "r" / "DONE").is_file() and not (work / "r" / "error.txt").exists()


def test_report_into_a_read_only_run_folder(work, capsys, monkeypatch):
    run = work / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: svm\ndata: {name: digits}\n")
    (run / "metrics.json").write_text('{"accuracy": 0.5}\n')
    before = state(work)
    read_only(run, monkeypatch)
    code, err = cli(["report", run], capsys)
    assert code == 2 and f"DIR {run}: cannot write there: permission denied" in err
    assert state(work) == before


def test_a_write_refused_by_the_file_system_names_the_file(work, monkeypatch):
    """The one writer turns a PermissionError (a folder made read-only mid-run, a read-only mount) into an error
    naming the file; the previous file is left as it was."""
    from dlstudy import io
    from dlstudy.errors import DlstudyError

    def refuse(**kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    before = state(work)
    with pytest.raises(DlstudyError, match=f"{work / 'keep.txt'}: cannot be written: permission denied in {work}"):
        io.atomic_write_text(work / "keep.txt", "new\n")
    assert state(work) == before


def test_a_study_of_more_than_1000_runs_asks_for_confirmation_before_validating(work):
    """A grid of 1,000 x 1,000 values is refused at once (counted, not expanded); --yes or confirm_runs lets a
    large study through."""
    import subprocess
    import sys
    import time

    study = {"name": "big", "seeds": [0, 1], "base": {"task": "train", "data": {"name": "digits"}},
             "grid": {"optim.lr": [10.0 ** -i for i in range(1000)], "optim.weight_decay": list(range(1000))}}
    (work / "big.yaml").write_text(yaml.safe_dump(study))
    before = state(work)
    start = time.time()
    env = {**os.environ, "DLSTUDY_NO_PROGRESS": "1"}
    done = subprocess.run([sys.executable, "-m", "dlstudy", "run", str(work / "big.yaml"), "--out", str(work / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (f"dlstudy run: error: {work / 'big.yaml'}: the study expands to 2,000,000 runs (1,000,000 arm(s) x 2 "
            f"seed(s)), more than 1,000: check its arms and grid, then confirm with --yes or `confirm_runs: 2000000` "
            f"in the study file") in done.stderr
    assert time.time() - start < 60  # seconds of startup, not minutes of validation
    assert state(work) == before
    small = {**study, "grid": {}, "arms": [{"name": f"a{i}"} for i in range(600)]}  # 1,200 runs
    (work / "small.yaml").write_text(yaml.safe_dump(small))
    with pytest.raises(ConfigError, match=r"small.yaml: the study expands to 1,200 runs \(600 arm\(s\) x 2 seed"):
        load_study(work / "small.yaml")
    assert len(load_study(work / "small.yaml", yes=True).arms) == 600
    assert len(load_study(work / "small.yaml", seeds=[0]).arms) == 600  # 600 runs: no question asked
    (work / "small.yaml").write_text(yaml.safe_dump({**small, "confirm_runs": 1200}))
    assert load_study(work / "small.yaml").confirm_runs == 1200
