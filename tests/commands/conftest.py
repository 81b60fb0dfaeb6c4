"""Fixtures of the command tests: a test's own dlstudy cache (`pytestmark = pytest.mark.usefixtures("own_cache")`),
and the folder a bad-input or fault test points the command at."""

from pathlib import Path

import pytest


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSTUDY_CACHE", str(tmp_path / "cache"))  # outside the folders whose state is compared


@pytest.fixture
def work(tmp_path) -> Path:
    """The folder each test points the command at; `state(work)` before and after must be equal."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "keep.txt").write_text("a file of the user's\n")
    return folder
