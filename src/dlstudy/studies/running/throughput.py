"""This machine's real training and evaluation speed for a run's configuration, measured once and cached.

    tp = arm_throughput(cfg, image_shape, num_classes, threads)    # cached per machine; remeasure=True ignores it

A few training steps (after a warm-up) and one evaluation pass of the run's own model, objective, batch size,
autocast, memory format, augmentation and thread count, on the run's own training images (random uint8 images of
its shape where none are given): what the budget planner (budget.py) turns into step counts. The learning rate
does not change the cost, so it is set small (random labels at the study's peak lr could overflow bf16 and stop
the measurement).

The cache is one JSON file, `<dlstudy cache dir>/throughput.json`: entries keyed by a hash of the machine (CPU
model, torch version, device) and of everything in the configuration that changes the cost, threads included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from dlstudy.config import RunConfig, to_dict
from dlstudy.io import atomic_write_json

log = logging.getLogger(__name__)

CACHE_FILE = "throughput.json"
WARMUP_STEPS = 2  # oneDNN picks its kernels on the first calls: not timed
MIN_TIMED_STEPS = 3
MAX_TIMED_STEPS = 5000  # batch-1 MLP steps take ~0.7 ms: a few thousand fill the target time
# In the cache key: entries measured by an older method are measured again (1: short last batches; 2: random
# images, which a small CNN evaluated ~20% faster than CIFAR-10's on 2 Zen 4 cores, so a plan under-counted the
# evaluations of real runs; 3: no measurement time, so a study's arms could not be timed together)
METHOD = 4
TIMING_IMAGES = 256  # training images the plan keeps per data config to measure on (38 MB at 224 px)
TARGET_SECONDS = 2.0  # timed training per configuration (after the warm-up)
MAX_EVAL_IMAGES = 1024  # an evaluation pass of at most this many images (after a warm-up pass)
EVAL_ROUNDS = 3


@dataclass(frozen=True)
class Throughput:
    """Measured speed of one run configuration on this machine."""

    step_s: float  # seconds per optimizer step: batch assembly + augmentation + forward + backward + step
    train_img_s: float
    eval_img_s: float  # images per second of evaluate() at train.eval_batch_size
    threads: int  # torch CPU threads the run will use (engine.threads' rule)
    needs_pk: bool  # the objective draws P x K batches (an epoch's step count follows the sampler)
    key: str  # hash of machine + measured configuration (the cache key)
    cached: bool = False
    # CPU runs: the process's CPU seconds / (wall seconds x threads) over the timed steps; below BUSY_SHARE another
    # process held some of the run's cores, and the speed is too low for the machine the run will have
    cpu_share: float | None = None
    measured_s: float = 0.0  # time.time() when it was measured (0: not known, an entry of an older version)

    @property
    def busy(self) -> bool:
        return self.cpu_share is not None and self.cpu_share < BUSY_SHARE


# Measured on 2 Zen 4 cores, 2 threads: ~1.0 idle, 0.50 beside a 2-thread training run. A load average cannot tell
# this: it counts the measurement's own threads, and entries measured beside a test suite (load 1.4 on 2 cores)
# planned resnet10 at 0.214 s a step against 0.159 s real.
BUSY_SHARE = 0.8


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str = "cpu") -> dict:
    """What the cache key and budget.json say about the machine."""
    from dlstudy.engine.loop import cpu_has_native_bf16

    info = {"cpu": cpu_model(), "torch": torch.__version__, "device": device,
            "native_bf16": bool(cpu_has_native_bf16())}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def measured_config(cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int, threads: int) -> dict:
    """Everything of `cfg` that changes a step's or an evaluation's cost (not lr, seed, epochs, weights)."""
    model = {k: v for k, v in to_dict(cfg.model).items() if k != "weights"}
    t = cfg.train
    return {"model": model, "loss": to_dict(cfg.loss), "image_shape": list(image_shape), "num_classes": num_classes,
            "augment": cfg.data.augment, "optim": cfg.optim.name, "batch_size": t.batch_size,
            "eval_batch_size": t.eval_batch_size, "amp": t.amp, "channels_last": t.channels_last,
            "compile": t.compile, "grad_clip": t.grad_clip, "frozen_bn": t.frozen_bn, "threads": threads,
            "method": METHOD, **({"tta": cfg.eval.tta} if cfg.eval.tta != "none" else {})}


def cache_key(machine: dict, config: dict) -> str:
    text = json.dumps({"machine": machine, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(cache_dir: str | None = None) -> Path:
    from dlstudy.data.cache import cache_dir as dlstudy_cache_dir

    return dlstudy_cache_dir(cache_dir) / CACHE_FILE


def read_cache(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text()).get("entries", {})
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}  # missing or damaged: measured again and rewritten


def write_cache_entry(path: Path, key: str, entry: dict) -> None:
    entries = read_cache(path)
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"entries": entries})
    except OSError as exc:  # a read-only cache costs a measurement next time, nothing else
        log.warning("could not write the throughput cache %s: %s", path, exc)


def run_threads(cfg: RunConfig, model, image_shape, available: int, device: str) -> int:
    """The thread count the train job will choose for this run (engine.threads, as jobs/train.py calls it)."""
    from dlstudy.engine.threads import choose_threads, forward_flops

    flops = None
    if not cfg.train.num_threads and device.startswith("cpu") and available > 1:
        flops = forward_flops(model, image_shape, cfg.train.batch_size, device)
    return choose_threads(cfg.train.num_threads, device, available, flops)[0]


def _quiet_cfg(cfg: RunConfig) -> RunConfig:
    """`cfg` with a small constant lr and no weights to load: the same cost, nothing that can diverge or fail."""
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, weights="none"),
        optim=dataclasses.replace(cfg.optim, lr=1e-5, lr_grid=None),
        train=dataclasses.replace(cfg.train, schedule="constant", warmup_epochs=0.0, epochs=1,
                                  max_steps_per_epoch=None, freeze_backbone_epochs=0))


def _timing_data(cfg: RunConfig, image_shape, num_classes: int, images: torch.Tensor | None = None):
    """Enough images for a few batches (and for P x K batches: labels cycle over the classes, every class at least
    twice its K), a whole number of batches (a short last batch would make the mean step look cheaper than the
    run's full ones): `images` ((M, C, H, W) uint8, the run's training images) repeated as needed, else random
    uint8 images of the run's shape. Labels need not be the images' own: they change no cost."""
    from dlstudy.data.splits import Split

    c, h, w = image_shape
    n = max(2 * cfg.train.batch_size, 2 * num_classes * cfg.loss.samples_per_class, cfg.loss.classes_per_batch *
            cfg.loss.samples_per_class * 2)
    n = math.ceil(n / cfg.train.batch_size) * cfg.train.batch_size
    if images is not None and len(images):
        if tuple(images.shape[1:]) != tuple(image_shape) or images.dtype != torch.uint8:
            raise ValueError(f"timing images: expected (M, {c}, {h}, {w}) uint8, got {tuple(images.shape)} "
                             f"{images.dtype}")
        pixels = images[torch.arange(n) % len(images)]
    else:
        gen = torch.Generator().manual_seed(0)
        pixels = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen)
    split = Split(pixels, torch.arange(n) % num_classes)
    return SimpleNamespace(train=split, mean=(0.5,) * c, std=(0.25,) * c, image_shape=tuple(image_shape),
                           num_classes=num_classes, class_names=[str(i) for i in range(num_classes)])


def _cycled_batches(data, cfg: RunConfig, needs_pk: bool, device: str):
    from dlstudy.engine.build import epoch_batches
    from dlstudy.engine.distributed import DistInfo

    epoch = 0
    while True:
        epoch += 1
        yield from epoch_batches(data, cfg, DistInfo(), needs_pk, epoch, 0, device)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int, available: int,
            device: str = "cpu", target_s: float | None = None, images: torch.Tensor | None = None) -> Throughput:
    """Time `cfg`'s training steps and evaluation (engine.loop's train_one_epoch and evaluate) on `images` (the
    run's training images, (M, C, H, W) uint8), else random ones: WARMUP_STEPS untimed, then enough steps for
    about `target_s` seconds (default TARGET_SECONDS)."""
    target_s = TARGET_SECONDS if target_s is None else target_s
    from dlstudy.engine.build import build_network, build_optimization, seed_everything
    from dlstudy.engine.loop import amp_dtype_for, evaluate, train_one_epoch

    cfg = _quiet_cfg(cfg)
    threads_before = torch.get_num_threads()
    quiet_before = os.environ.get("DLSTUDY_NO_PROGRESS")
    os.environ["DLSTUDY_NO_PROGRESS"] = "1"  # the loop's progress lines would be about random data
    try:
        seed_everything(0)
        data = _timing_data(cfg, image_shape, num_classes, images)
        amp_dtype, _ = amp_dtype_for(cfg.train.amp, device)
        model, objective = build_network(cfg, data, device)
        threads = run_threads(cfg, model, tuple(image_shape), available, device)
        torch.set_num_threads(threads)
        optimizer, scheduler, scaler = build_optimization(model, cfg, 10**6, amp_dtype)
        needs_pk = bool(getattr(objective, "needs_pk_sampler", False))
        # a fresh stream per call: the loop's progress bar closes the stream it was given when it stops early
        stream = lambda: _cycled_batches(data, cfg, needs_pk, device)  # noqa: E731
        kw = dict(device=device, scheduler=scheduler, scaler=scaler, amp_dtype=amp_dtype,
                  grad_clip=cfg.train.grad_clip, channels_last=cfg.train.channels_last)
        start = time.perf_counter()
        train_one_epoch(model, objective, optimizer, stream(), max_steps=WARMUP_STEPS, total=WARMUP_STEPS, **kw)
        _sync(device)
        rough = (time.perf_counter() - start) / WARMUP_STEPS  # an over-estimate: the first steps are the slowest
        steps = int(min(max(round(target_s / max(rough, 1e-6)), MIN_TIMED_STEPS), MAX_TIMED_STEPS))
        start, cpu_start = time.perf_counter(), time.process_time()
        stats = train_one_epoch(model, objective, optimizer, stream(), max_steps=steps, total=steps, **kw)
        _sync(device)
        elapsed = time.perf_counter() - start
        step_s = elapsed / steps
        cpu_share = ((time.process_time() - cpu_start) / max(elapsed * threads, 1e-9)
                     if device.startswith("cpu") else None)
        eval_split = data.train.subset(torch.arange(min(len(data.train), cfg.train.eval_batch_size,
                                                        MAX_EVAL_IMAGES)))
        ekw = dict(mean=data.mean, std=data.std, device=device, class_names=data.class_names,
                   batch_size=cfg.train.eval_batch_size, objective=objective, amp_dtype=amp_dtype,
                   channels_last=cfg.train.channels_last, tta=cfg.eval.tta)
        evaluate(model, eval_split, **ekw)  # warm-up
        best = float("inf")
        for _ in range(EVAL_ROUNDS):  # the best of a few: a busy moment on a shared machine only slows some
            start = time.perf_counter()
            evaluate(model, eval_split, **ekw)
            _sync(device)
            best = min(best, time.perf_counter() - start)
        eval_img_s = len(eval_split) / max(best, 1e-9)
    finally:
        torch.set_num_threads(threads_before)
        if quiet_before is None:
            os.environ.pop("DLSTUDY_NO_PROGRESS", None)
        else:
            os.environ["DLSTUDY_NO_PROGRESS"] = quiet_before
    return Throughput(step_s=step_s, train_img_s=stats["n"] / max(step_s * steps, 1e-9), eval_img_s=eval_img_s,
                      threads=threads, needs_pk=needs_pk, key="",
                      cpu_share=None if cpu_share is None else round(cpu_share, 3), measured_s=time.time())


def arm_throughput(cfg: RunConfig, image_shape: tuple[int, int, int], num_classes: int, available: int,
                   device: str = "cpu", remeasure: bool = False, cache_dir: str | None = None,
                   measured_now: set | None = None, images: torch.Tensor | None = None) -> Throughput:
    """`measure(...)` through the per-machine cache (`remeasure`: measure anyway and overwrite the entry, once per
    key of `measured_now`, the keys this plan has measured so far).

    The key holds the thread count the run will use, which needs the model (engine.threads' rule by FLOPs), so
    the count is worked out first and the measurement runs only on a miss."""
    from dlstudy.engine.build import build_network

    probe = _quiet_cfg(cfg)
    model, _ = build_network(probe, SimpleNamespace(image_shape=tuple(image_shape), num_classes=num_classes), device)
    threads = run_threads(probe, model, tuple(image_shape), available, device)
    machine = machine_info(device)
    config = measured_config(cfg, image_shape, num_classes, threads)
    key = cache_key(machine, config)
    path = cache_path(cache_dir)
    fresh = measured_now is not None and key in measured_now
    entry = None if remeasure and not fresh else read_cache(path).get(key)
    if isinstance(entry, dict):
        try:
            cached = Throughput(step_s=float(entry["step_s"]), train_img_s=float(entry["train_img_s"]),
                                eval_img_s=float(entry["eval_img_s"]), threads=int(entry["threads"]),
                                needs_pk=bool(entry["needs_pk"]), key=key, cached=True,
                                cpu_share=None if entry.get("cpu_share") is None else float(entry["cpu_share"]),
                                measured_s=float(entry.get("measured_s") or 0.0))
        except (KeyError, TypeError, ValueError):
            cached = None  # an entry of another format: measured again
        if cached is not None and (fresh or not cached.busy):
            return cached
        if cached is not None:
            log.info("the cached throughput of %s was measured while another process held some of its cores (CPU "
                     "share %.2f): measuring it again", cfg.model.name, cached.cpu_share)
    log.info("measuring the throughput of %s (%s loss) at batch %d, %s px, %d thread(s) (cached in %s)",
             cfg.model.name, cfg.loss.name, cfg.train.batch_size, "x".join(map(str, image_shape[1:])), threads, path)
    tp = dataclasses.replace(measure(cfg, image_shape, num_classes, available, device, images=images), key=key)
    if measured_now is not None:
        measured_now.add(key)
    write_cache_entry(path, key, {**{f: getattr(tp, f) for f in ("step_s", "train_img_s", "eval_img_s", "threads",
                                                                   "needs_pk", "cpu_share", "measured_s")},
                                  "machine": machine, "config": config,
                                  "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(tp.measured_s))})
    return tp
