"""Shared fixtures: tiny real data, the optional ../shared/data folder, and the --runslow switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DLSTUDY_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DLSTUDY_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MNIST, CIFAR-10 jpg tar, Tiny ImageNet subset zip); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _torch_threads():
    """Two cores: keep each test on the default thread count but restore it if a test changes it."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
