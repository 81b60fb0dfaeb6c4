"""Executors without a cluster: the registry and the `executor:` block, the missing-extra message, per-run resources
and the torchrun launch of a multi-GPU run (run here on CPU with gloo), run folders sent as tars, and the Slurm path
through submitit's local executor (the same pickles and job arrays, processes on this machine; no Slurm here).

The Ray executor on a real local cluster is in test_ray_cluster.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from dlstudy.cli import main
from dlstudy.config import ExecutorConfig, build_run_config
from dlstudy.errors import ConfigError
from dlstudy.studies.running.executors import EXECUTORS, resolve_executor, run_resources
from dlstudy.studies.running.runner import load_study
from dlstudy.studies.running.tasks import RunTask, pack_folder, run_one, torchrun_command, unpack_folder
from helpers import DIVERGING_FAKE_JOB, calls


def write_study(tmp_path: Path, name: str = "tiny", seeds=(0, 1), **changes) -> Path:
    study = {"name": name, "kind": "generic", "seeds": list(seeds),
             "base": {"task": "fake", "data": {"name": "digits"}},
             "arms": [{"name": "sharp", "set": {"optim.weight_decay": 0.0}}]}
    study.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("name", sorted(n for n in EXECUTORS if EXECUTORS[n].needs))
def test_a_cluster_executor_without_its_extra_names_the_extra(tmp_path, fake, monkeypatch, capsys, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda mod, *a: None if mod in EXECUTORS[name].needs else real(mod, *a))
    out = tmp_path / "out"
    assert main(["run", str(write_study(tmp_path)), "--out", str(out), "--executor", name]) == 2
    err = capsys.readouterr().err
    assert f"--executor {name} needs the {EXECUTORS[name].needs[0]} package" in err
    assert "pip install 'dlstudy[cluster]'" in err
    assert not out.exists() and calls(fake) == []  # nothing written, nothing ran


def test_executor_block_is_typed_and_flags_override_it(tmp_path, fake):
    block = {"name": "local", "cpus_per_run": 1, "partition": "cpu"}
    cfg = resolve_executor(ExecutorConfig(**block), {"partition": "gpu", "time_min": 30, "address": None})
    assert (cfg.name, cfg.cpus_per_run, cfg.partition, cfg.time_min) == ("local", 1, "gpu", 30)
    with pytest.raises(ConfigError, match=r"executor: unknown key\(s\) \['cpus'\]; valid keys are \['address', "):
        load_study(write_study(tmp_path, executor={"cpus": 2}))
    with pytest.raises(ConfigError, match="executor.gpus_per_run: expected >= 0, got -1"):
        ExecutorConfig(gpus_per_run=-1)
    with pytest.raises(ConfigError, match=r"unknown executor 'dask'; valid executors are \['local', 'ray', 'slurm'\]"):
        resolve_executor(ExecutorConfig(), {"name": "dask"})
    with pytest.raises(ConfigError, match=r"tiny.yaml: study.executor.name: unknown executor 'dask'"):
        load_study(write_study(tmp_path, executor={"name": "dask"}))
    # the study's own block is used by `dlstudy run` (here: one thread per run, in this process)
    path = write_study(tmp_path, executor={"name": "local", "cpus_per_run": 1})
    assert main(["run", str(path), "--out", str(tmp_path / "o")]) == 0
    assert yaml.safe_load((tmp_path / "o" / "tiny" / "study.yaml").read_text())["executor"]["cpus_per_run"] == 1


@pytest.mark.parametrize("device, gpus_per_run, cluster_gpus, expected", [
    ("cpu", None, True, (1, 0)),  # a CPU run takes no GPU, even on a GPU cluster
    ("cuda", None, False, (1, 1)),  # a GPU run takes one GPU
    ("auto", None, True, (1, 1)),
    ("auto", None, False, (1, 0)),
    ("cuda", 4, True, (1, 4)),  # num_gpus: 4 -> one DDP run of 4 processes
])
def test_run_resources(device, gpus_per_run, cluster_gpus, expected):
    run = build_run_config({"device": device})
    assert run_resources(ExecutorConfig(gpus_per_run=gpus_per_run), run, cluster_gpus) == expected
    assert run_resources(ExecutorConfig(cpus_per_run=8), run, cluster_gpus)[0] == 8


def test_torchrun_command_of_a_multi_gpu_run(tmp_path):
    cmd = torchrun_command(tmp_path / "c.yaml", tmp_path / "run", resume=True, nproc=4)
    assert cmd[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc-per-node=4", "-m",
                        "dlstudy.studies.running.tasks"]
    assert cmd[8:] == [str(tmp_path / "c.yaml"), str(tmp_path / "run"), "--resume"]


def test_a_run_of_two_processes_inside_one_task(tmp_path):
    """The path a Ray task with num_gpus: 2 takes, on CPU (gloo): one DDP run into the task's own folder."""
    cfg = build_run_config({"task": "train", "device": "cpu", "data": {"name": "digits", "max_train": 128,
                                                                        "max_eval": 64},
                            "model": {"name": "mlp"}, "train": {"epochs": 1, "batch_size": 16, "num_threads": 1,
                                                                "train_eval_subset": 32, "max_steps_per_epoch": 2}})
    task = RunTask("mlp", 0, cfg, tmp_path / "study" / "mlp" / "seed-0")
    result = run_one(task, nproc=2)
    assert result.ok, result.error
    metrics = json.loads((task.path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and (task.path / "DONE").is_file()
    assert yaml.safe_load((task.path / "config.yaml").read_text())["train"]["epochs"] == 1
    assert run_one(task, nproc=2).seconds == 0.0  # finished with the same config: not run again


def test_pack_and_unpack_a_run_folder(tmp_path):
    src = tmp_path / "a" / "seed-0"
    (src / "figures").mkdir(parents=True)
    (src / "metrics.json").write_text("{}")
    (src / "figures" / "roc.png").write_bytes(b"\x89PNG" + bytes(range(256)))
    dest = tmp_path / "driver" / "a" / "seed-0"
    (dest / "stale").mkdir(parents=True)  # what an earlier attempt left is replaced, not merged
    unpack_folder(pack_folder(src), dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == \
        ["figures", "figures/roc.png", "metrics.json"]
    assert (dest / "figures" / "roc.png").read_bytes() == (src / "figures" / "roc.png").read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["seed-0"]  # no staging folder left


def test_slurm_executor_submits_one_job_array_per_study(tmp_path, fake, monkeypatch):
    pytest.importorskip("submitit")
    from dlstudy.studies.running.executors import slurm as slurm_executor
    from dlstudy.studies.running.runner import run_study

    monkeypatch.setattr(slurm_executor, "SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))  # the job processes import helpers.fake_job
    path = write_study(tmp_path)
    study_dir, results = run_study(path, tmp_path / "out", executor={"name": "slurm", "partition": "gpu",
                                                                      "time_min": 5})
    assert sorted((r.arm, r.seed, r.ok) for r in results) == [("sharp", 0, True), ("sharp", 1, True)]
    assert all((study_dir / "sharp" / f"seed-{s}" / "DONE").is_file() for s in (0, 1))
    assert calls(fake) == ["sharp/seed-0 resume=False", "sharp/seed-1 resume=False"]
    assert len(list((study_dir / ".submitit").glob("*_result.pkl"))) == 2
    assert "| sharp | 2 |" in (study_dir / "report.md").read_text()


def test_sbatch_script_of_a_study_is_the_one_in_the_docs():
    """docs/examples/losses-array.sbatch (shown by docs/cluster.md) is what the executor block there submits."""
    pytest.importorskip("submitit")
    import shlex
    import sys

    from dlstudy.studies.running.executors.slurm import sbatch_text

    cfg = ExecutorConfig(name="slurm", partition="gpu", time_min=120, cpus_per_run=8, gpus_per_run=1,
                         array_parallelism=8, slurm={"account": "mylab"})
    text = sbatch_text(cfg, Path("/shared/runs/losses/.submitit"), runs=15, job_name="dlstudy-losses")
    for line in ("#SBATCH --array=0-14%8", "#SBATCH --partition=gpu", "#SBATCH --time=120", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --job-name=dlstudy-losses", "#SBATCH --account=mylab",
                 "-m submitit.core._submit /shared/runs/losses/.submitit"):
        assert line in text, line
    documented = (Path(__file__).parents[2] / "docs" / "examples" / "losses-array.sbatch").read_text()
    assert text.replace(shlex.quote(sys.executable), "/home/me/dlstudy/.venv/bin/python") == documented


def test_lr_candidates_are_runs_of_their_own_and_a_diverged_one_is_a_row(tmp_path, fake, monkeypatch):
    """Each candidate of an arm's lr search is a task (a cluster trains them side by side); the arm's seeds wait
    for all of them; a diverged candidate is a row of the search, not a failure of the study."""
    from dlstudy import jobs
    from dlstudy.studies.running.runner import run_study

    monkeypatch.setitem(jobs.JOBS, "diverging", jobs.Job(DIVERGING_FAKE_JOB, "test job"))
    arms = [{"name": "adam", "set": {"task": "diverging", "optim": {"lr_grid": [0.001, 0.1, 10.0]}}},
            {"name": "plain", "set": {}}]
    study_dir, results = run_study(write_study(tmp_path, arms=arms), tmp_path / "out")
    assert sorted((r.arm, r.seed, r.ok) for r in results) == [("adam", 0, True), ("adam", 1, True),
                                                              ("plain", 0, True), ("plain", 1, True)]
    rows = (study_dir / "adam" / "lr-search" / "lr_search.csv").read_text().splitlines()
    assert rows[0].startswith("lr,val_accuracy") and rows[3].startswith("10.0,nan") and rows[3].endswith("True")
    assert json.loads((study_dir / "adam" / "lr-search" / "chosen_lr.json").read_text())["lr"] == 0.1
    log = fake.read_text().splitlines()  # in call order
    assert log.index("adam/seed-0 resume=False") > max(log.index(f"lr-search/lr-{lr} resume=False")
                                                       for lr in ("0.001", "0.1"))

    # every candidate diverging fails the arm once (its first seed), and the other arms still run
    arms[0]["set"]["optim"]["lr_grid"] = [10.0, 20.0]
    fake.unlink()
    study_dir, results = run_study(write_study(tmp_path, name="bad", arms=arms), tmp_path / "out")
    failed = [r for r in results if not r.ok]
    assert [(r.arm, r.seed) for r in failed] == [("adam", 0)]
    assert failed[0].error.startswith("lr search: TrainingDiverged: ")
    assert "TrainingDiverged" in (study_dir / "adam" / "seed-0" / "error.txt").read_text()
    assert sorted(c for c in calls(fake)) == ["plain/seed-0 resume=False", "plain/seed-1 resume=False"]


def test_a_run_taking_another_arms_weights_waits_for_it(tmp_path, fake):
    """On an executor that runs everything handed over at once, an `@arm` run is handed over only after its source
    finished, and fails without running when its source failed."""
    from concurrent.futures import Future

    from dlstudy.studies.running.executors import Executor
    from dlstudy.studies.running.runner import load_study, plan_study, schedule

    class AllAtOnce(Executor):
        capacity = None

        def __init__(self):
            self.batches = []

        def submit(self, tasks):
            self.batches.append(sorted(t.label for t in tasks))
            futures = [Future() for _ in tasks]
            for future, task in zip(futures, tasks):
                future.set_result(run_one(task))
            return futures

    arms = [{"name": "a", "set": {}}, {"name": "b", "set": {"model.weights": "@a"}},
            {"name": "c", "set": {"optim.weight_decay": 2.0}}, {"name": "d", "set": {"model.weights": "@c"}}]
    tasks = plan_study(load_study(write_study(tmp_path, seeds=[0], arms=arms)), tmp_path / "out")
    executor = AllAtOnce()
    results = {r.arm: r for r in schedule(tasks, executor)}
    assert executor.batches == [["a/seed-0", "c/seed-0"], ["b/seed-0"]]
    assert [results[a].ok for a in "abcd"] == [True, True, False, False]
    assert results["d"].error == f"waits for {tmp_path / 'out' / 'tiny' / 'c' / 'seed-0'}, which failed"
    assert "which failed" in (results["d"].path / "error.txt").read_text()
    assert calls(fake) == ["a/seed-0 resume=False", "b/seed-0 resume=False", "c/seed-0 resume=False"]
