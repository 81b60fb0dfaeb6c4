"""benchmarks/gpu_check.py: its whole logic on CPU (--allow-cpu --tiny), its refusal without CUDA, and the row
runner's failure / time-limit / budget handling in process.

The subprocesses get CUDA_VISIBLE_DEVICES="" so they take the CPU-only path on any machine, this one included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
ROWS = ["train-fp32", "train-bf16-cl", "train-resnet50-bf16-cl", "svm-cuda", "finetune", "loss-study",
        "train-compile"]


def _run(args: list[str], cwd: Path, python_flags: tuple[str, ...] = (), **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", DLSTUDY_NO_PROGRESS="1", MPLBACKEND="Agg",
               DLSTUDY_CACHE=str(cwd / "cache"), **env)
    return subprocess.run([sys.executable, *python_flags, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _load_module(monkeypatch):
    """Import the script; sys.path (it adds benchmarks/) and sys.modules are restored after the test."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # its dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_allow_cpu_tiny_runs_every_row(tmp_path):
    proc = _run(["--allow-cpu", "--tiny", "--out", "tmp.json"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "tmp.json").read_text())
    rows = {r["check"]: r for r in report["rows"]}
    assert list(rows) == ROWS
    for name in ROWS[:-1]:
        assert rows[name]["status"] == "ok", rows[name]
        assert (rows[name]["images_per_s"] or rows[name]["fit_s"]) > 0, rows[name]
    assert rows["train-compile"]["status"] == "skipped"
    assert rows["train-compile"]["note"] == "compile: CUDA only in this check"
    for name in ("train-fp32", "train-bf16-cl", "train-resnet50-bf16-cl", "svm-cuda"):
        assert rows[name]["ratio"] > 0, rows[name]  # each measured against its baseline in the same run
    assert report["env"]["device"] == "cpu" and report["env"]["torch"]
    assert Path(report["env"]["dlstudy"], "__init__.py").is_file()
    table = proc.stdout[proc.stdout.index("| check |"):]  # the Markdown table printed at the end
    for name in ROWS:
        assert f"| {name} |" in table


def test_without_cuda_exits_2_with_one_line(tmp_path):
    proc = _run(["--out", "tmp.json"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("no CUDA device: ")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert not (tmp_path / "tmp.json").exists()


def test_failed_row_does_not_hide_the_others(tmp_path, monkeypatch):
    gpu_check = _load_module(monkeypatch)

    def boom(ctx):
        raise ValueError("bad kernel\nsecond line")

    checks = [gpu_check.Check("boom", "raises", boom, 10),
              gpu_check.Check("slow", "sleeps", lambda ctx: time.sleep(5), 1),
              gpu_check.Check("fine", "returns", lambda ctx: {"images_per_s": 1.0, "ratio": 2.0}, 10),
              gpu_check.Check("cuda", "cpu_skip", lambda ctx: {}, 10, cpu_skip="CUDA only")]
    ctx = gpu_check.Context("cpu", gpu_check.TINY, tmp_path)
    rows = gpu_check.run_checks(checks, ctx, budget_s=60)
    assert [r["status"] for r in rows] == ["FAILED", "FAILED", "ok", "skipped"]
    assert rows[0]["error"] == "ValueError: bad kernel"  # one line
    assert "timed out after 1 s" in rows[1]["error"] and rows[1]["seconds"] < 3
    assert "| fine | cpu: returns | 1 img/s | 2.00x |" in gpu_check.markdown_table(rows)
    late = gpu_check.run_checks(checks[2:3], ctx, budget_s=gpu_check.MIN_ROW_S - 1)
    assert late[0]["status"] == "skipped" and late[0]["note"].startswith("time budget")


def test_runs_from_the_checkout_without_install(tmp_path):
    # A GPU image has its own torch and no network: the script must find dlstudy in src/ when it is not installed.
    # -S skips site, so the editable install's .pth is not read; PYTHONPATH gives torch & co. without dlstudy.
    site = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))
    probe = subprocess.run([sys.executable, "-S", "-c", "import dlstudy"], env=dict(os.environ, PYTHONPATH=site),
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'dlstudy'" in probe.stderr  # the setting is real
    # a 21 s budget: the first row (the engine's training step, dlstudy.data / engine / models) runs, the rest are
    # skipped once under MIN_ROW_S = 20 s is left
    proc = _run(["--allow-cpu", "--tiny", "--budget-s", "21", "--out", "tmp.json"], tmp_path, ("-S",), PYTHONPATH=site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "tmp.json").read_text())
    assert report["rows"][0]["check"] == "train-fp32" and report["rows"][0]["status"] == "ok", report["rows"][0]
    assert report["env"]["dlstudy"] == str(SCRIPT.parents[1] / "src" / "dlstudy")
