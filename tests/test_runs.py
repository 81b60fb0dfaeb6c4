"""The run-folder contract: atomic writes, env.json, DONE marker, run naming."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest


from dlstudy.config import RunConfig, build_run_config
from dlstudy.report import finish_run
from dlstudy.runs import DONE_MARKER, RunDir, environment_info, new_run_dir, resolve_device
from dlstudy.io import atomic_write_csv, atomic_write_json, atomic_write_text, read_csv, read_json


def test_atomic_write_leaves_no_temp_files_and_replaces(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"accuracy": 0.5})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"accuracy": Unserialisable()})
    assert read_json(path) == {"accuracy": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_json_maps_nan_to_null_and_numpy_to_python(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"auc": [0.5, float("nan")], "cm": np.eye(2, dtype=np.int64), "x": np.float32(1.5)})
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data == {"auc": [0.5, None], "cm": [[1, 0], [0, 1]], "x": 1.5}


def test_csv_round_trip(tmp_path):
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "extra": "x"}]
    atomic_write_csv(tmp_path / "h.csv", rows)
    back = read_csv(tmp_path / "h.csv")
    assert [r["epoch"] for r in back] == ["1", "2"]
    assert back[1]["extra"] == "x" and back[0]["extra"] == ""
    assert math.isclose(float(back[1]["loss"]), 0.25)


def test_run_dir_start_and_finish(tmp_path):
    cfg = build_run_config({"task": "svm", "seed": 7})
    run = RunDir(tmp_path / "r").start(cfg, "cpu")
    env = read_json(run.file("env.json"))
    for key in ("python", "torch", "torchvision", "numpy", "device", "git_commit", "seed", "start_time"):
        assert key in env
    assert env["seed"] == 7 and env["end_time"] is None
    assert "seed: 7" in run.file("config.yaml").read_text()
    assert not run.is_done
    run.write_metrics({"accuracy": 1.0})
    finish_run(run)
    assert run.is_done and read_json(run.file("env.json"))["end_time"]
    run.file("metrics.json").write_text('{"accuracy": 1.0')  # damaged after it finished: not a finished run
    assert not run.is_done
    # restarting a run clears DONE until it finishes again
    run.start(cfg, "cpu")
    assert not (run.path / DONE_MARKER).exists()


def test_done_is_written_after_the_report(tmp_path, monkeypatch):
    """A report that crashes leaves the run unmarked, so a study reruns it instead of skipping it as finished."""
    import dlstudy.report

    cfg = build_run_config({"task": "svm"})
    run = RunDir(tmp_path / "r").start(cfg, "cpu")

    def broken_report(path):
        assert not (path / DONE_MARKER).exists()  # DONE comes after every other file
        raise RuntimeError("report failed")

    monkeypatch.setattr(dlstudy.report.run_report, "write_run_report", broken_report)
    with pytest.raises(RuntimeError, match="report failed"):
        finish_run(run)
    assert not run.is_done


def test_new_run_dir_does_not_overwrite(tmp_path):
    cfg = RunConfig(name="exp")
    first = new_run_dir(tmp_path, cfg)
    first.start(cfg, "cpu")
    second = new_run_dir(tmp_path, cfg)
    assert first.path.name == "exp" and second.path.name == "exp-2"
    assert new_run_dir(tmp_path, cfg, exist_ok=True).path == first.path


def test_environment_info_has_versions():
    info = environment_info("cpu", seed=3)
    assert info["torch"].startswith("2.") and info["seed"] == 3


def test_resolve_device_rejects_missing_cuda():
    import torch

    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def _fake_job_module(monkeypatch, func):
    import sys
    import types

    from dlstudy import jobs

    module = types.ModuleType("fake_dlstudy_jobs")
    module.job = func
    monkeypatch.setitem(sys.modules, "fake_dlstudy_jobs", module)
    monkeypatch.setitem(jobs.JOBS, "fake", jobs.Job("fake_dlstudy_jobs:job", "a job for tests"))


def test_failed_job_without_results_leaves_no_folder(tmp_path, monkeypatch):
    from dlstudy.jobs import run_job

    def job(cfg, run_dir, resume=False):
        run_dir.start(cfg, "cpu")
        raise ValueError("bad input")

    _fake_job_module(monkeypatch, job)
    run = RunDir(tmp_path / "r")
    with pytest.raises(ValueError, match="bad input"):
        run_job(build_run_config({"task": "fake"}), run)
    assert not run.path.exists()


def test_failed_job_keeps_checkpoint_and_writes_error(tmp_path, monkeypatch):
    from dlstudy.jobs import run_job

    def job(cfg, run_dir, resume=False):
        run_dir.start(cfg, "cpu")
        atomic_write_text(run_dir.path / "checkpoints" / "last.pt", "checkpoint")
        raise RuntimeError("diverged at epoch 2")

    _fake_job_module(monkeypatch, job)
    run = RunDir(tmp_path / "r")
    with pytest.raises(RuntimeError):
        run_job(build_run_config({"task": "fake"}), run)
    assert (run.path / "checkpoints" / "last.pt").read_text() == "checkpoint"
    assert "diverged at epoch 2" in (run.path / "error.txt").read_text()
    assert not run.is_done


def test_a_new_run_is_named_once_by_the_job_and_numbered_when_taken(tmp_path, monkeypatch):
    from dlstudy.jobs import NewRun, run_job

    def job(cfg, run_dir, resume=False):
        from dlstudy.jobs import place_run

        run_dir = place_run(cfg, run_dir)
        assert place_run(cfg, NewRun(tmp_path / "out", run_dir)) is run_dir  # named once, then kept
        run_dir.start(cfg, "cpu")
        atomic_write_text(run_dir.file("metrics.json"), "{}")
        return {"path": run_dir.path}

    _fake_job_module(monkeypatch, job)
    cfg = build_run_config({"task": "fake", "name": "r"})
    first, second = NewRun(tmp_path / "out"), NewRun(tmp_path / "out")
    assert run_job(cfg, first)["path"] == first.run_dir.path == tmp_path / "out" / "r"
    assert run_job(cfg, second)["path"] == second.run_dir.path == tmp_path / "out" / "r-2"


def test_a_failed_new_run_removes_the_folders_it_created(tmp_path, monkeypatch):
    from dlstudy.jobs import NewRun, place_run, run_job

    def job(cfg, run_dir, resume=False):
        place_run(cfg, run_dir).start(cfg, "cpu")
        raise ValueError("bad input")

    _fake_job_module(monkeypatch, job)
    where = NewRun(tmp_path / "new" / "out")
    with pytest.raises(ValueError, match="bad input"):
        run_job(build_run_config({"task": "fake", "name": "r"}), where)
    assert where.run_dir.path == tmp_path / "new" / "out" / "r" and not (tmp_path / "new").exists()


def test_unknown_task_lists_valid_ones(tmp_path):
    from dlstudy.jobs import run_job

    with pytest.raises(ValueError, match=r"valid tasks are \['svm', 'train'\]"):
        run_job(build_run_config({"task": "nope"}), RunDir(tmp_path / "r"))


def test_exponent_floats_without_a_dot_are_numbers():
    from dlstudy.config import parse_overrides

    cfg = build_run_config(parse_overrides(["optim.lr=1e-4", "svm.C=[1e-3, 1E2]"]))
    assert cfg.optim.lr == 1e-4 and cfg.svm.C == [1e-3, 100.0]
    with pytest.raises(ValueError, match="optim.lr: expected float"):
        build_run_config(parse_overrides(["optim.lr=fast"]))


def test_run_files_are_readable_by_others(tmp_path):
    import os
    import stat

    path = atomic_write_text(tmp_path / "report.md", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
