"""`--executor ray` on a real Ray cluster: a head node and two one-CPU worker nodes on this machine
(ray.cluster_utils.Cluster), shared by the tests of this module.

A study of 6 tiny runs spreads over both nodes and gives the same metrics as `--jobs 1` here (also for real svm and
train runs); run folders come back to the driver when --out is not shared; `dlstudy reproduce --executor ray` runs
every study; a driver killed mid-study is restarted and skips the finished runs; a worker node killed mid-study
loses nothing (its runs are retried on the other node) and counts no run twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from dlstudy.cli import main
from helpers import CALL_LOG, SLOW_FAKE_JOB, STARTED, calls

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parents[1]
NODE = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster():
    """Head (no CPUs: the driver's node runs nothing) + two worker nodes; this process is connected as driver.
    The nodes' workers import the tests' jobs (helpers.py) from tests/ (PYTHONPATH at node start)."""
    from ray.cluster_utils import Cluster

    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), old_path]))
    head = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    try:
        workers = [head.add_node(**NODE) for _ in range(2)]
        head.wait_for_nodes()
        ray.init(address=head.address, logging_level=logging.WARNING)
        yield head, workers
    finally:
        ray.shutdown()
        head.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


@pytest.fixture
def slow(monkeypatch, tmp_path) -> Path:
    """The job "slow_fake" (helpers.slow_fake_job) registered; returns its call log."""
    from dlstudy import jobs

    monkeypatch.setitem(jobs.JOBS, "slow_fake", jobs.Job(SLOW_FAKE_JOB, "test job"))
    log = tmp_path / "calls.log"
    monkeypatch.setenv(CALL_LOG, str(log))  # DLSTUDY_* variables travel with each Ray task
    return log


def six_runs(tmp_path: Path, pause: float, name: str = "six") -> Path:
    """3 arms x 2 seeds of the slow fake job, each run `pause` seconds long."""
    study = {"name": name, "kind": "generic", "seeds": [0, 1],
             "base": {"task": "slow_fake", "data": {"name": "digits"}, "train": {"warmup_epochs": pause}},
             "arms": [{"name": f"shrink{i}", "set": {"optim.weight_decay": 0.3 * i}} for i in range(3)]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def run_folders(study_dir: Path) -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in study_dir.glob("*/seed-*/DONE"))


def stable(metrics: dict) -> dict:
    """metrics.json less what measures time (seconds, images per second)."""
    return {k: stable(v) if isinstance(v, dict) else v for k, v in metrics.items()
            if not (k.endswith("_s") or "time" in k)}


def test_six_runs_spread_over_both_nodes_with_the_metrics_of_a_local_run(tmp_path, cluster, slow):
    from dlstudy.studies.running.runner import run_study

    path = six_runs(tmp_path, pause=1.0)
    local_dir, local = run_study(path, tmp_path / "local", executor={"name": "local", "cpus_per_run": 1})
    slow.unlink()
    study_dir, results = run_study(path, tmp_path / "ray", executor={"name": "ray", "cpus_per_run": 1})
    assert sorted((r.arm, r.seed) for r in results) == sorted((r.arm, r.seed) for r in local)
    assert all(r.ok for r in results) and len(calls(slow)) == 6
    assert len({r.node for r in results}) == 2, [r.node for r in results]  # both worker nodes took runs
    for r in results:
        rel = r.path.relative_to(study_dir)
        assert json.loads((study_dir / rel / "metrics.json").read_text()) == \
            json.loads((local_dir / rel / "metrics.json").read_text())
    assert (study_dir / "summary.csv").read_text() == (local_dir / "summary.csv").read_text()
    assert not list(study_dir.glob(".dlstudy-driver*"))  # the driver's marker is removed at the end


def test_real_svm_and_train_runs_give_the_same_metrics_locally_and_on_ray(tmp_path, cluster):
    from dlstudy.studies.running.runner import run_study

    study = {"name": "real", "kind": "generic", "seeds": [0],
             "base": {"device": "cpu", "data": {"name": "digits", "max_train": 240, "max_eval": 120}},
             "arms": [{"name": "svm", "set": {"task": "svm", "svm": {"max_iter": 100}}},
                      {"name": "mlp", "set": {"task": "train", "model.name": "mlp",
                                              "train": {"epochs": 1, "max_steps_per_epoch": 4,
                                                        "train_eval_subset": 64}}}]}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(study))
    same_threads = {"cpus_per_run": 1}  # one torch thread per run on both executors
    local_dir, _ = run_study(path, tmp_path / "local", executor={"name": "local", **same_threads})
    ray_dir, results = run_study(path, tmp_path / "ray", executor={"name": "ray", **same_threads})
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    for arm in ("svm", "mlp"):
        ours, theirs = (json.loads((d / arm / "seed-0" / "metrics.json").read_text()) for d in (ray_dir, local_dir))
        assert stable(ours) == stable(theirs), arm


def test_run_folders_come_back_when_out_is_not_shared(tmp_path, cluster, slow):
    from dlstudy.studies.running.runner import run_study

    path = six_runs(tmp_path, pause=0.0)
    out = tmp_path / "out"
    partial = out / "six" / "shrink1" / "seed-0"  # an interrupted run on the driver: resumed on a node
    partial.mkdir(parents=True)
    (partial / "history.csv").write_text("epoch\n1\n")
    study_dir, results = run_study(path, out, executor={"name": "ray", "shared_out": False})
    assert all(r.ok for r in results) and len(results) == 6
    assert run_folders(study_dir) == [f"shrink{i}/seed-{s}" for i in range(3) for s in (0, 1)]
    for r in results:
        assert {"config.yaml", "metrics.json", "report.md", "DONE"} <= {p.name for p in r.path.iterdir()}
        assert r.archive is None  # unpacked on arrival, not kept in memory
    assert "shrink1/seed-0 resume=True" in calls(slow)  # the partial folder travelled to the node
    assert "Study six" in (study_dir / "report.md").read_text()


def test_reproduce_on_ray(tmp_path, cluster, fake_studies):
    from dlstudy.studies.running import reproduce

    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--out", str(out), "--executor", "ray", "--address", cluster[0].address]) == 1
    record = json.loads((out / "reproduce.json").read_text())
    stems = [stem for section in reproduce.SECTIONS for stem in section.files]  # Q3 runs several study files
    assert [s["study"] for s in record["sections"]] == stems
    failed = {s["study"]: len(s["failed"]) for s in record["sections"]}
    assert failed == {stem: 2 if stem == "losses" else 0 for stem in stems}  # the fake losses study's bad arm
    assert (out / "report.html").is_file()


def test_a_killed_driver_is_restarted_and_skips_the_finished_runs(tmp_path, cluster, slow):
    path = six_runs(tmp_path, pause=1.5)
    out = tmp_path / "out"
    driver = ("import sys; sys.path.insert(0, sys.argv[1]); from dlstudy import jobs; "
              f"jobs.JOBS['slow_fake'] = jobs.Job({SLOW_FAKE_JOB!r}, 'test job'); "
              "from dlstudy.cli import main; sys.exit(main(sys.argv[2:]))")
    command = [sys.executable, "-c", driver, str(TESTS), "run", str(path), "--out", str(out), "--executor", "ray",
               "--address", cluster[0].address]
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 120
            while len(run_folders(out / "six")) < 2 and time.time() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    time.sleep(3)  # Ray stops the dead driver's tasks
    finished = run_folders(out / "six")
    assert 2 <= len(finished) < 6
    before = len(calls(slow))
    _, results = main_run(path, out, cluster)
    rerun = sorted(line.split()[0] for line in slow.read_text().splitlines()[before:])
    assert not set(rerun) & set(finished)  # finished runs were skipped, not run again
    assert sorted(f"{r.arm}/seed-{r.seed}" for r in results) == sorted(set(rerun))
    assert all(r.ok for r in results) and run_folders(out / "six") == \
        [f"shrink{i}/seed-{s}" for i in range(3) for s in (0, 1)]


def main_run(path: Path, out: Path, cluster):
    from dlstudy.studies.running.runner import run_study

    return run_study(path, out, executor={"name": "ray", "address": cluster[0].address})


def test_ray_task_options_for_a_multi_gpu_run(tmp_path, cluster):
    from dlstudy.config import ExecutorConfig, build_run_config
    from dlstudy.studies.running.executors.ray import RayExecutor
    from dlstudy.studies.running.tasks import RunTask

    executor = RayExecutor(ExecutorConfig(name="ray", gpus_per_run=4, cpus_per_run=8), tmp_path)
    try:
        task = RunTask("big", 0, build_run_config({"device": "cuda"}), tmp_path / "big" / "seed-0")
        options, remote = executor.options(task)
        assert (options["num_gpus"], options["num_cpus"], remote.nproc, remote.threads) == (4, 8, 4, 8)
        assert options["max_retries"] == 2 and remote.marker.startswith(str(tmp_path / ".dlstudy-driver-"))
    finally:
        executor.close()
    assert not list(tmp_path.glob(".dlstudy-driver*"))


def test_a_killed_worker_node_loses_no_run_and_counts_none_twice(tmp_path, cluster, slow):
    from dlstudy.studies.running.runner import run_study

    head, workers = cluster
    path = six_runs(tmp_path, pause=2.0)
    out = tmp_path / "out"
    killed = threading.Event()

    def kill_a_node_once_runs_started():
        deadline = time.time() + 120
        while len(list((out / "six").glob(f"*/seed-*/{STARTED}"))) < 2 and time.time() < deadline:
            time.sleep(0.1)  # both nodes are inside a run (its pause)
        head.remove_node(workers[0], allow_graceful=False)
        killed.set()

    thread = threading.Thread(target=kill_a_node_once_runs_started, daemon=True)
    thread.start()
    try:
        study_dir, results = run_study(path, out, executor={"name": "ray"})
    finally:
        thread.join(timeout=130)
        workers[0] = head.add_node(**NODE)  # the cluster is whole again for any later test
    assert killed.is_set()
    assert sorted(f"{r.arm}/seed-{r.seed}" for r in results) == [f"shrink{i}/seed-{s}" for i in range(3)
                                                                 for s in (0, 1)]  # each run once
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert run_folders(study_dir) == [f"shrink{i}/seed-{s}" for i in range(3) for s in (0, 1)]
    # the run the killed node was in ran again on the other node, resuming from the folder it had left there
    assert {c.split()[0] for c in calls(slow)} == set(run_folders(study_dir))
    assert any(c.endswith("resume=True") for c in calls(slow))
    assert "| shrink0 | 2 |" in (study_dir / "report.md").read_text()
