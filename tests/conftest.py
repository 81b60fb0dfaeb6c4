"""Shared fixtures: the optional ../shared/data folder, the --runslow switch, and the fake job and fake studies
(tests/helpers.py) that the study, reproduce, results-page and bad-input tests run on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from helpers import CALL_LOG, FAKE_JOB, fake_study

os.environ.setdefault("DLSTUDY_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DLSTUDY_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    """Tests using the shared_data fixture are marked shared_data (`-m "not shared_data"` leaves them out); tests
    marked slow are skipped unless --runslow."""
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MNIST, CIFAR-10 jpg tar, Tiny ImageNet subset zip); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch intra-op thread in every test: the tensors are tiny and, on a shared 2-core machine, two OpenMP
    threads spin-wait on each other (10-50x slower). A test about threads sets its own; the count is restored."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_cfg():
    """A factory of tiny train configs: digits, a few steps per epoch, seconds on a busy 2-core CPU.
    `tiny_cfg(model=..., max_train=..., max_eval=..., **train)`: train keys override the defaults below."""
    from dlstudy.config import build_run_config

    def make(model: str = "smallcnn", max_train: int = 240, max_eval: int = 60, **train):
        train = {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 6, "train_eval_subset": 64, **train}
        return build_run_config({"seed": 0, "device": "cpu", "model": {"name": model},
                                 "data": {"name": "digits", "max_train": max_train, "max_eval": max_eval},
                                 "train": train})

    return make


@pytest.fixture
def fake(monkeypatch, tmp_path) -> Path:
    """The job "fake" (helpers.fake_job) registered; returns the call log (read it with helpers.calls)."""
    from dlstudy import jobs

    monkeypatch.setitem(jobs.JOBS, "fake", jobs.Job(FAKE_JOB, "test job"))
    log = tmp_path / "calls.log"
    monkeypatch.setenv(CALL_LOG, str(log))
    return log


@pytest.fixture
def fake_studies(tmp_path, monkeypatch) -> Path:
    """A folder of fake `<study>-quick.yaml` files (helpers.fake_study; the losses study has a failing arm) that
    `dlstudy reproduce --quick` reads instead of the shipped ones; the job "fake" registered."""
    from dlstudy import jobs
    from dlstudy.studies.running import reproduce
    from dlstudy.studies.summary import sections

    monkeypatch.setitem(jobs.JOBS, "fake", jobs.Job(FAKE_JOB, "test job"))
    monkeypatch.setenv(CALL_LOG, str(tmp_path / "calls.log"))
    folder = tmp_path / "studies"
    folder.mkdir()
    for section in reproduce.SECTIONS:
        for stem in section.files:  # every study file of a section (Q3 runs several)
            study = fake_study(stem, bad=stem == "losses")
            (folder / f"{stem}-quick.yaml").write_text(yaml.safe_dump(study))
    monkeypatch.setattr(sections, "PACKAGE_STUDIES", folder)
    return folder
