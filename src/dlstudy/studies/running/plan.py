"""What `dlstudy reproduce` is about to do, shown before anything runs: sections, arms x seeds, data, time.

Every dataset a section needs is loaded here (decoded once into the uint8 cache, which the runs then reuse), so a
missing or broken dataset is one clear error before the first run starts, and the plan can state the real sizes.
The time per section comes from the last run of the same tier in the output folder when there is one, else from
the study file's `minutes` (measured on the reference machine) scaled by a short calibration measured here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from dlstudy.config import StudyConfig, to_dict

log = logging.getLogger(__name__)

# Seconds of `calibration_seconds()` on the machine where the study files' `minutes` were measured (2 idle Sapphire
# Rapids cores, bf16 autocast). Another machine's estimate is `minutes` x (its calibration / this).
REFERENCE_CALIBRATION_S = 0.54


@dataclass
class SectionPlan:
    title: str
    study: str  # the study folder name
    arms: int
    seeds: int
    runs_left: int
    data: list[str]  # one line per dataset: name, sizes, source
    estimate_s: float | None
    estimate_from: str  # "last run", "calibrated", or "" when unknown


def calibration_seconds(steps: int = 20, rounds: int = 3) -> float:
    """Wall time of a fixed small training workload (a BatchNorm convnet, batch 64, 32 px, `steps` steps) with the
    autocast the engine would use on this CPU: what the CPU-tier budgets mostly consist of. The best of `rounds`
    timings: a busy moment (another process, the page cache still flushing the decoded datasets) only slows some."""
    import torch
    from torch import nn

    from dlstudy.engine.loop import amp_dtype_for, autocast

    amp, _ = amp_dtype_for("bf16", "cpu")
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2),
                        nn.Conv2d(32, 128, 3, padding=1), nn.BatchNorm2d(128), nn.GELU(), nn.MaxPool2d(2),
                        nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.GELU(),
                        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(64, 3, 32, 32, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,), generator=gen)

    def step() -> None:
        with autocast("cpu", amp):
            loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (oneDNN picks its kernels on the first calls)
        step()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - start)
    return best


def describe_data(tasks) -> list[str]:
    """'name: N train / N val / N test (source)' for every distinct data config of `tasks`; loads (and caches) each."""
    from dlstudy.data import load_dataset

    lines, seen = [], set()
    for task in tasks:
        key = repr(sorted(to_dict(task.cfg.data).items()))
        if key in seen:
            continue
        seen.add(key)
        d = load_dataset(task.cfg.data)
        n = d.sizes()  # the same numbers the run writes to metrics.json "data"
        size = f"{n['image_size'][0]} px" + ("" if task.cfg.data.image_size else " (native)")
        lines.append(f"{d.name} {size}: {n['n_train']:,} train / {n['n_val']:,} val / {n['n_test']:,} test, "
                     f"{n['num_classes']} classes")
    return lines


def plan_section(title: str, study: StudyConfig, tasks, last_seconds: float | None,
                 factor: float | None) -> SectionPlan:
    left = [t for t in tasks if not t.done]
    arms = len({t.arm for t in tasks})
    estimate, source = None, ""
    if not left:
        estimate, source = 0.0, "finished"
    elif last_seconds is not None:
        estimate, source = last_seconds, "last run"
    elif study.minutes and factor:
        estimate, source = study.minutes * 60 * factor * len(left) / len(tasks), "calibrated"
    return SectionPlan(title, study.name, arms, len(study.seeds), len(left), describe_data(left or tasks[:1]),
                       estimate, source)


def format_plan(plans: list[SectionPlan], factor: float | None) -> str:
    lines = ["plan (sections in the order they run):"]
    total = 0.0
    for i, p in enumerate(plans, 1):
        est = "unknown" if p.estimate_s is None else f"~{p.estimate_s / 60:.1f} min ({p.estimate_from})"
        total += p.estimate_s or 0.0
        lines.append(f"  {i}. {p.title} [{p.study}]: {p.arms} arm(s) x {p.seeds} seed(s), {p.runs_left} run(s) "
                     f"to do, estimated {est}")
        lines += [f"       data: {d}" for d in p.data]
    known = all(p.estimate_s is not None for p in plans)
    lines.append(f"  total: {'~' if known else 'at least ~'}{total / 60:.0f} min"
                 + (f" (this machine measures {factor:.2f}x the reference machine's calibration time)"
                    if factor else ""))
    return "\n".join(lines)


def last_section_seconds(out: Path, tier: str) -> dict[str, float]:
    """Seconds per section of the previous `dlstudy reproduce` of this tier in `out` (finished sections only)."""
    import json

    path = Path(out) / "reproduce.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if record.get("tier", record.get("mode")) != tier or record.get("budget"):
        return {}
    return {s["study"]: float(s["seconds"]) for s in record.get("sections", []) if not s.get("failed")
            and s.get("seconds", 0) > 30}  # a section that only skipped finished runs says nothing of its cost
