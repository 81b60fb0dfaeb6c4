"""Input pipeline throughput vs the ResNet18 training step it feeds (CIFAR-sized 32x32x3, batch 128, CPU).

    .venv/bin/python benchmarks/bench_data.py [--batches 100] [--steps 5]

Rows: our `dlstudy.data.batches` (cached uint8 -> augmented, normalised float batches) per augmentation preset,
torchvision's per-image transform pipeline on the same tensors (a DataLoader with v2 RandomCrop + flip +
Normalize, num_workers=0) as a peer, and a torchvision ResNet18 training step (forward + backward + SGD).
The pipeline must be at least 5x faster than the step so loading never limits training.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from dlstudy.data import Split, as_torch_dataset, batches

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def images_per_s(run, n_images: int, repeats: int = 3) -> float:
    """Best of `repeats` timings of `run()` (which processes n_images): the least-disturbed measurement."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def bench_pipeline(split: Split, preset: str, n_batches: int, batch_size: int) -> float:
    def run():
        it = batches(split, batch_size, shuffle=True, seed=0, epoch=0, augment=preset, mean=MEAN, std=STD)
        for _ in range(n_batches):
            x, y = next(it)

    return images_per_s(run, n_batches * batch_size)


def bench_torchvision_pipeline(split: Split, n_batches: int, batch_size: int) -> float:
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(as_torch_dataset(split, transform=transform), batch_size=batch_size,
                                         shuffle=True, num_workers=0)

    def run():
        it = iter(loader)
        for _ in range(n_batches):
            x, y = next(it)

    return images_per_s(run, n_batches * batch_size, repeats=1)


def bench_resnet18_step(batch_size: int, steps: int) -> float:
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator and kernels
    return images_per_s(lambda: [step() for _ in range(steps)], steps * batch_size, repeats=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100, help="batches per pipeline timing")
    parser.add_argument("--steps", type=int, default=5, help="ResNet18 steps per timing")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=50_000, help="size of the cached uint8 split")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)  # content does not change the cost: random CIFAR-sized uint8 images
    split = Split(torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen),
                  torch.randint(0, 10, (args.images,), generator=gen))
    bs = args.batch_size
    step = bench_resnet18_step(bs, args.steps)
    rows = [(f"dlstudy batches, augment={p}", bench_pipeline(split, p, args.batches, bs))
            for p in ("none", "flip_crop", "standard")]
    rows.append(("torchvision v2 per-image crop+flip (peer)", bench_torchvision_pipeline(split, min(args.batches, 20), bs)))
    rows.append(("torchvision ResNet18 train step (peer)", step))

    print(f"# input pipeline vs training step: 32x32x3, batch {bs}, CPU ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}); shared machine, numbers under contention")
    print(f"{'what':<44} {'images/s':>12} {'x ResNet18 step':>16}")
    for name, rate in rows:
        print(f"{name:<44} {rate:>12,.0f} {rate / step:>16.1f}")
    ratio = dict(rows)["dlstudy batches, augment=flip_crop"] / step
    print(f"\npipeline (flip_crop) / ResNet18 step = {ratio:.1f}x  (target >= 5x: {'met' if ratio >= 5 else 'NOT met'})")


if __name__ == "__main__":
    main()
