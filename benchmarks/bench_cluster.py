"""Benchmark the Ray executor against `dlstudy run --jobs 1` on a study of 12 small real runs.

    .venv/bin/python benchmarks/bench_cluster.py             # 2 arms (SVM on raw pixels, a 1-epoch MLP) x 6 seeds
    .venv/bin/python benchmarks/bench_cluster.py --seeds 3   # 6 runs

The runs are real svm and train jobs on the embedded digits data (240 train / 120 test images), one torch thread each
(executor.cpus_per_run: 1, here as on Ray, so every run computes the same numbers). Rows:

    local --jobs 1       every run in this process, one after the other (the reference)
    ray N CPU cold       a fresh local Ray cluster of N CPUs: its start (column "start") and the study, whose first
                         run on each worker pays that process's imports (torch, dlstudy)
    ray N CPU warm       the same study into a new folder on the same cluster: workers already started

Scheduling overhead per run = (wall - the runs' own time / slots) / runs, where the runs' own time is what each run
measured inside its task and slots = min(CPUs, runs): the time a run spends being handed over, started, returned and
recorded, beyond its work (the study report at the end is in every row's wall). The last column checks that every
run's metrics equal the local ones (less the timing fields).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import yaml


def write_study(folder: Path, seeds: int) -> Path:
    study = {"name": "bench", "kind": "generic", "seeds": list(range(seeds)),
             "base": {"device": "cpu", "data": {"name": "digits", "max_train": 240, "max_eval": 120}},
             "arms": [{"name": "svm", "set": {"task": "svm", "svm": {"max_iter": 100}}},
                      {"name": "mlp", "set": {"task": "train", "model.name": "mlp",
                                              "train": {"epochs": 1, "max_steps_per_epoch": 4,
                                                        "train_eval_subset": 64}}}]}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def stable(metrics: dict) -> dict:
    return {k: stable(v) if isinstance(v, dict) else v for k, v in metrics.items()
            if not (k.endswith("_s") or "time" in k)}


def run(path: Path, out: Path, executor: dict) -> tuple[float, float, list]:
    """(wall seconds, sum of the runs' own seconds, results) of one study run."""
    from dlstudy.studies.running.runner import run_study

    start = time.perf_counter()
    _, results = run_study(path, out, executor={**executor, "cpus_per_run": 1})
    wall = time.perf_counter() - start
    failed = [f"{r.arm}/seed-{r.seed}: {r.error}" for r in results if not r.ok]
    if failed:
        raise SystemExit(f"failed runs: {failed}")
    return wall, sum(r.seconds for r in results), results


def same_metrics(ours: Path, reference: Path) -> str:
    runs = sorted(reference.glob("*/seed-*/metrics.json"))
    same = sum(stable(json.loads(m.read_text())) == stable(json.loads((ours / m.relative_to(reference)).read_text()))
               for m in runs)
    return f"{same}/{len(runs)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="seeds per arm (2 arms): 6 -> 12 runs")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2], help="CPUs of the local Ray clusters")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # the 100-iteration SVMs stop short of tol on purpose (small runs); keep their warnings out of the table, here
    # and in the Ray workers (they inherit the environment of the cluster ray.init starts)
    os.environ["PYTHONWARNINGS"] = "ignore"
    warnings.simplefilter("ignore")
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    path = write_study(work, args.seeds)
    n = 2 * args.seeds
    rows = []
    wall, own, _ = run(path, work / "local", {"name": "local"})
    rows.append(("local --jobs 1", "", wall, own, 1, "reference"))
    for cpus in args.cpus:
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        started = time.perf_counter() - start
        try:
            for phase in ("cold", "warm"):
                out = work / f"ray{cpus}-{phase}"
                wall, own, _ = run(path, out, {"name": "ray"})
                rows.append((f"ray {cpus} CPU {phase}", f"{started:.1f}" if phase == "cold" else "", wall, own,
                             min(cpus, n), same_metrics(out / "bench", work / "local" / "bench")))
        finally:
            ray.shutdown()
    print(f"\n{n} runs (2 arms x {args.seeds} seeds: SVM on raw digits, 1-epoch MLP), one torch thread per run\n")
    print("| executor | start s | wall s | runs' own s | overhead / run s | same metrics as local |")
    print("|---|---:|---:|---:|---:|---|")
    for name, start_s, wall, own, slots, same in rows:
        overhead = (wall - own / slots) / n
        print(f"| {name} | {start_s} | {wall:.1f} | {own:.1f} | {overhead:.2f} | {same} |")


if __name__ == "__main__":
    main()
