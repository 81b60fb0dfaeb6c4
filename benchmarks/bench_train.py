"""Training throughput of dlstudy's engine vs a minimal hand-written PyTorch loop on the same in-memory tensors.

    .venv/bin/python benchmarks/bench_train.py [--steps 6] [--repeats 3] [--threads N] [--cuda-only]

Ours: dlstudy.data.batches (uint8 split -> normalised float batches) feeding dlstudy.engine.train_one_epoch with
the registry's model, objective, optimizer and per-step schedule, i.e. the inner loop of `dlstudy train` (the
per-epoch evaluation and checkpointing are not training throughput and are left out on both sides).
Peer: torchvision ResNet with the same stem, torch.optim.SGD, F.cross_entropy, indexing the same uint8 tensor.
Both sides run alternately `repeats` times; the median images/s of each is reported, with the ratio ours/peer
(target >= 0.95) and the peak memory (RSS growth on CPU, max allocated on CUDA).
CUDA rows (AMP bf16 + channels_last, ResNet18 at 32 px and ResNet50 at 224 px) run when a GPU is present; the
published reference is ~2,500 img/s for ResNet50 AMP training on one A100 (NVIDIA DeepLearningExamples).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
import torch.nn.functional as F


class PeakRSS:
    """Peak resident memory above the starting point, sampled every 5 ms in a thread (CPU runs)."""

    def __enter__(self):
        try:
            import psutil
        except ImportError:  # bench extra absent (a test venv): speeds are still measured, memory reads as nan
            self.proc, self.mib = None, float("nan")
            return self
        self.proc, self.stop = psutil.Process(), threading.Event()
        self.base = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        if self.proc is None:
            return
        self.stop.set()
        self.thread.join()
        self.mib = (self.peak - self.base) / 2**20


def make_data(n: int, size: int, device: str):
    from dlstudy.data import Split

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Split(images.to(device), labels.to(device))


def ours(name: str, split, batch: int, steps: int, device: str, amp: str, channels_last: bool,
         compile: bool = False):
    """Returns run(epoch) -> seconds for `steps` optimizer steps through the dlstudy engine.

    `compile`: the forward runs through torch.compile(model), as `train.compile=true` does in the train job.
    """
    from dlstudy.config import LossConfig, ModelConfig, OptimConfig, TrainConfig
    from dlstudy.data import batches
    from dlstudy.engine import train_one_epoch
    from dlstudy.engine.loop import AMP_DTYPES
    from dlstudy.losses import build_objective
    from dlstudy.models import build_model
    from dlstudy.optim import build_optimizer, build_scheduler

    size = split.images.shape[-1]
    model = build_model(ModelConfig(name=name), 10, 3, size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(LossConfig(), 10, model.feature_dim).to(device)
    opt = build_optimizer([{"params": list(model.parameters())}], OptimConfig(name="momentum", lr=0.01))
    sched = build_scheduler(opt, TrainConfig(epochs=100, schedule="cosine"), steps)
    amp_dtype = AMP_DTYPES[amp]
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    net = torch.compile(model) if compile else model  # shares the parameters the optimizer holds

    def run(epoch: int) -> float:
        start = time.perf_counter()
        train_one_epoch(net, objective, opt, batches(split, batch, shuffle=True, seed=0, epoch=epoch, mean=mean,
                                                       std=std, device=device, drop_last=True),
                        device=device, scheduler=sched, amp_dtype=amp_dtype, channels_last=channels_last,
                        max_steps=steps, check_every=1 if device == "cpu" else 25)
        return time.perf_counter() - start  # train_one_epoch ends with a host sync (loss totals)
    return run


def peer(name: str, split, batch: int, steps: int, device: str, amp: str, channels_last: bool):
    """The minimal loop: torchvision model, SGD, cross-entropy, batches indexed from the same uint8 tensor."""
    import torchvision

    net = getattr(torchvision.models, name)(num_classes=10)
    if split.images.shape[-1] <= 64:  # the same small-input stem as ours
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    mean = torch.full((1, 3, 1, 1), 0.5, device=device)
    std = torch.full((1, 3, 1, 1), 0.25, device=device)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def run(epoch: int) -> float:
        net.train()
        order = torch.randperm(len(split.labels), device=split.images.device)
        start = time.perf_counter()
        for step in range(steps):
            idx = order[step * batch:(step + 1) * batch]
            x = (split.images[idx].float() / 255 - mean) / std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None and device == "cuda"):
                loss = F.cross_entropy(net(x), split.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        else:
            loss.item()
        return time.perf_counter() - start
    return run


def measure(label: str, name: str, size: int, batch: int, steps: int, repeats: int, device: str, amp: str = "none",
            channels_last: bool = False, sides: dict | None = None) -> dict:
    """`sides`: {"ours": factory, "peer": factory} with the signature of `ours`/`peer`; default those two (e.g.
    gpu_check.py passes ours with compile=True as "ours" and eager ours as "peer")."""
    split = make_data(batch * steps, size, device)
    sides = sides or {"ours": ours, "peer": peer}
    speeds, memory = {k: [] for k in sides}, {}
    runs = {k: f(name, split, batch, steps, device, amp, channels_last) for k, f in sides.items()}
    for k in sides:
        runs[k](0)  # warm-up: kernel selection, allocator, first-touch
    for rep in range(repeats):
        for k in sides:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
                speeds[k].append(batch * steps / runs[k](rep + 1))
                memory[k] = torch.cuda.max_memory_allocated() / 2**20
            else:
                with PeakRSS() as rss:
                    speeds[k].append(batch * steps / runs[k](rep + 1))
                memory[k] = max(memory[k], rss.mib) if k in memory else rss.mib  # nan stays nan
    ours_ips, peer_ips = statistics.median(speeds["ours"]), statistics.median(speeds["peer"])
    return {"row": label, "ours_img_s": ours_ips, "peer_img_s": peer_ips, "ratio": ours_ips / peer_ips,
            "ours_peak_mib": memory["ours"], "peer_peak_mib": memory["peer"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cuda-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if not args.cuda_only:
        rows.append(measure(f"cpu resnet18 32px b128 fp32 ({torch.get_num_threads()} threads)", "resnet18", 32, 128,
                            args.steps, args.repeats, "cpu"))
    if torch.cuda.is_available():
        steps = max(args.steps, 30)
        rows.append(measure("cuda resnet18 32px b128 fp32", "resnet18", 32, 128, steps, args.repeats, "cuda"))
        rows.append(measure("cuda resnet18 32px b128 bf16+CL", "resnet18", 32, 128, steps, args.repeats, "cuda",
                            "bf16", True))
        rows.append(measure("cuda resnet50 224px b128 bf16+CL", "resnet50", 224, 128, steps, args.repeats, "cuda",
                            "bf16", True))
    print(f"{'row':44s} {'ours img/s':>11s} {'peer img/s':>11s} {'ratio':>6s} {'ours MiB':>9s} {'peer MiB':>9s}")
    for r in rows:
        print(f"{r['row']:44s} {r['ours_img_s']:11.1f} {r['peer_img_s']:11.1f} {r['ratio']:6.3f} "
              f"{r['ours_peak_mib']:9.0f} {r['peer_peak_mib']:9.0f}")
    if torch.cuda.is_available():
        print("published: ~2,500 img/s ResNet50 AMP training on one A100 (NVIDIA DeepLearningExamples)")


if __name__ == "__main__":
    main()
