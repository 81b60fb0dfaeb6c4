"""How many torch CPU threads a training run uses: `train.num_threads` when set, else a rule by the work per step.

    threads, why = choose_threads(requested, device, available, flops_per_step)

Each op of a training step is split between the CPU threads, and handing work to another thread costs a few
microseconds. A batch-1 MLP step (MNIST mlp: ~0.5 MFLOP forward) is a few dozen ops of a few microseconds each,
so a second thread only adds hand-offs: the optimizer study's batch-1 arm ran at 648 steps/s on 2 threads and 901 on
one (2 idle cores). A conv net's step (smallcnn on 28 px images at batch 16: 0.7 GFLOP forward) splits well and
gets every core the process has. `benchmarks/bench_optim_step.py --threads-table` prints both counts for steps of
growing size beside this rule's cut; run it on an idle machine to move SMALL_STEP_FLOPS.
"""

from __future__ import annotations

import torch
from torch import nn

# Forward FLOPs of one training batch below which one thread is used (the backward pass is ~2x the forward, so this
# ranks whole steps alike). Batch-1 MLPs (0.5 MFLOP) are far below; conv nets at the batch sizes they train with
# (smallcnn 28 px x 16: 700 MFLOP; ResNets: GFLOPs) far above. 20 MFLOP sits between, where either count is close.
SMALL_STEP_FLOPS = 20e6


def forward_flops(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int, device: str = "cpu") -> float:
    """FLOPs of one forward pass of a `batch_size` batch of (C, H, W) images (counted on one image, times the
    batch): the matrix products and convolutions, which are what threads split."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()  # BatchNorm at batch 1 needs eval mode; the count is the same
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *image_shape), device=device))
    finally:
        model.train(was_training)
    return float(counter.get_total_flops()) * batch_size


def choose_threads(requested: int | None, device: str, available: int, flops_per_step: float | None) -> tuple[int, str]:
    """(torch CPU threads for this run, the reason, for env.json).

    requested: train.num_threads (None: the rule). available: the threads this process may use (torch's default,
    a study worker's share of the cores, or the cores / processes on this machine under DDP). On CUDA the CPU only
    launches kernels, so the count is left as it is.
    """
    if requested:
        return requested, "train.num_threads"
    if not device.startswith("cpu"):
        return available, f"{device}: the CPU only feeds the device"
    if available > 1 and flops_per_step is not None and flops_per_step < SMALL_STEP_FLOPS:
        return 1, (f"small steps ({flops_per_step / 1e6:.1f} MFLOP forward per batch < "
                   f"{SMALL_STEP_FLOPS / 1e6:.0f}): one thread, no hand-offs")
    return available, "every thread this process has"
