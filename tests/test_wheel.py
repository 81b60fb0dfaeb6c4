"""dlstudy as a library beside a user's own PyTorch: the wheel built by the standard front end carries the study
files, states torch / torchvision as ranges, installs with --no-deps into a fresh venv that already holds a torch
without replacing it, and `dlstudy reproduce --quick` runs from that install (outside the checkout).

The venv sees the project's own torch through a .pth file naming the folder torch is installed in (this machine
has no second CPU torch + torchvision pair: docs/export.md says what was tried)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(DLSTUDY_NO_PROGRESS="1", MPLBACKEND="Agg")
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """dlstudy's wheel, built by `python -m build --wheel` from a copy of the project (the checkout stays clean:
    setuptools writes build/ and *.egg-info beside the sources)."""
    root = tmp_path_factory.mktemp("wheel")
    project = root / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", root / "dist", project])
    (built,) = (root / "dist").glob("dlstudy-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict:
    """A fresh venv holding this interpreter's torch (linked through a .pth file), the wheel installed with
    --no-deps; returns its python, dlstudy script, pip's output and torch before / after."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", path])
    python = path / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "_project_torch.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    probe = [python, "-c", "import torch; print(torch.__version__, torch.__file__)"]
    before = run(probe).stdout.strip()
    pip = run([python, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", wheel])
    return {"python": python, "dlstudy": path / "bin" / "dlstudy", "site": Path(site), "pip": pip.stdout,
            "before": before, "after": run(probe).stdout.strip()}


def test_wheel_carries_the_study_files_and_states_ranges(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    shipped = sorted(p.name for p in (REPO / "src/dlstudy/studies/files").glob("*.yaml"))
    assert shipped and sorted(Path(n).name for n in names if n.startswith("dlstudy/studies/files/")
                              and n.endswith(".yaml")) == shipped
    assert "dlstudy/py.typed" in names and "dlstudy/cli.py" in names
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "torch>=2.11" in requires and "torchvision>=0.26" in requires
    assert not any(r.startswith(("torch==", "torchvision==")) for r in requires)


def test_wheel_installs_beside_torch_without_replacing_it(venv):
    installed = [line for line in venv["pip"].splitlines() if line.startswith("Successfully installed")]
    assert installed == ["Successfully installed dlstudy-0.1.0"]  # nothing else, torch least of all
    assert venv["before"] == venv["after"] == f"{torch.__version__} {torch.__file__}"
    where = run([venv["python"], "-c", "import dlstudy; print(dlstudy.__file__)"], cwd=venv["site"].parent).stdout
    assert Path(where.strip()).is_relative_to(venv["site"])  # the wheel's copy, not the checkout's


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_reproduce_quick_runs_from_the_installed_wheel(venv, tmp_path):
    outside = tmp_path / "elsewhere"  # not the checkout: only the installed wheel can be imported
    outside.mkdir()
    out = run([venv["dlstudy"], "reproduce", "--quick", "--out", "runs"], cwd=outside, timeout=2300)
    assert "Traceback" not in out.stderr
    runs = outside / "runs"
    assert (runs / "report.md").is_file() and (runs / "report.html").is_file()  # the reproduce report
    studies = sorted(p.parent.name for p in runs.glob("*/study.yaml"))
    assert {"svm-quick", "finetune-quick", "losses-quick", "optimizers-quick"} <= set(studies), studies
    assert all((runs / s / "summary.csv").is_file() and (runs / s / "report.md").is_file() for s in studies)
