"""The pieces a training session is built from: seeds, data, model + objective, optimizer + schedule + scaler, the
step count and batches of an epoch, the DDP / compile wrapper. Plain functions of the config and the live objects;
nothing is written.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torch import nn

from dlstudy.config import RunConfig
from dlstudy.engine.distributed import DistInfo, global_index_batches, shard_batches
from dlstudy.errors import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(deterministic: bool, device: str) -> None:
    """`train.deterministic`: PyTorch's deterministic kernels (slower); otherwise cuDNN autotuning on CUDA."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = (not deterministic) and device.startswith("cuda")


def train_subset(split, size: int, seed: int):
    """A fixed, sorted random subset of the training split (same every epoch) for train loss/acc in eval mode."""
    n = len(split.labels)
    if size <= 0:
        return None
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, min(size, n), replace=False)))
    return split.subset(idx.to(split.images.device))


def load_data(cfg: RunConfig, device: str):
    """cfg.data's splits; on CUDA the uint8 splits move to the GPU (batches are indexed there, no host copies)."""
    from dlstudy.data import load_dataset

    data = load_dataset(cfg.data, batch_size=cfg.train.batch_size)  # the memory check counts a batch too
    if device.startswith("cuda"):
        for name in ("train", "val", "test"):
            setattr(data, name, getattr(data, name).to(device))
    return data


def build_network(cfg: RunConfig, data, device: str) -> tuple[nn.Module, nn.Module]:
    """(model, objective) on `device`: cfg.model for the data's classes and image shape, cfg.loss on its outputs.
    ConfigError for BatchNorm at batch size 1 unless train.frozen_bn."""
    from dlstudy.losses import build_objective
    from dlstudy.models import build_model
    from dlstudy.models.batchnorm import check_batchnorm_batch_size

    c, h, _ = data.image_shape
    model = build_model(cfg.model, data.num_classes, c, h, frozen_bn=cfg.train.frozen_bn).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    check_batchnorm_batch_size(model, cfg.train.batch_size, cfg.train.frozen_bn)
    objective = build_objective(cfg.loss, data.num_classes, model.feature_dim, cfg.model.embedding_dim,
                                cfg.train.label_smoothing).to(device)
    objective.float_components = False  # the loop reads only "loss": no host sync per component per step
    return model, objective


# Training images a data-dependent initialisation sees (airbench94's whitening stem: as many as airbench uses).
INIT_IMAGES = 5000


def init_from_training_images(model: nn.Module, data, cfg: RunConfig) -> None:
    """A model trained from scratch (model.weights: none) whose backbone initialises from data gets the first
    INIT_IMAGES training images, normalised as the eval transform does (no augmentation): the same on every rank,
    since the split is."""
    from dlstudy.data import to_float

    if cfg.model.weights != "none" or not hasattr(model.backbone, "init_from_data"):
        return
    images = to_float(data.train.images[:INIT_IMAGES], data.mean, data.std)
    model.backbone.init_from_data(images)


def build_optimization(model: nn.Module, cfg: RunConfig, steps_per_epoch: int, amp_dtype):
    """(optimizer, scheduler, GradScaler or None): backbone and head parameter groups (the backbone at
    train.backbone_lr_mult), the schedule stepped per optimizer step, a scaler for float16 autocast only."""
    from dlstudy.optim import build_optimizer, build_scheduler

    groups = [{"params": list(model.backbone_parameters()), "lr_mult": cfg.train.backbone_lr_mult,
               "name": "backbone"},
              {"params": list(model.head_parameters()), "lr_mult": 1.0, "name": "head"}]
    optimizer = build_optimizer([g for g in groups if g["params"]], cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None
    return optimizer, scheduler, scaler


def pk_sampler(train_labels: torch.Tensor, cfg: RunConfig):
    """P classes x K images per batch, for objectives that need positives in every batch (triplet)."""
    from dlstudy.losses import PKBatchSampler

    return PKBatchSampler(train_labels.cpu(), cfg.loss.classes_per_batch, cfg.loss.samples_per_class, seed=cfg.seed)


def steps_per_epoch(train_labels: torch.Tensor, cfg: RunConfig, info: DistInfo, needs_pk: bool) -> int:
    """Optimizer steps of one epoch (capped by train.max_steps_per_epoch); ConfigError when not even one fits."""
    n, b, w = len(train_labels), cfg.train.batch_size, info.world_size
    if needs_pk:
        steps = len(pk_sampler(train_labels, cfg))
    elif info.enabled:
        steps = n // (b * w)  # DDP: full global batches only, so every rank takes the same number of steps
    else:
        steps = math.ceil(n / b)
    if steps < 1:
        raise ConfigError(f"train.batch_size={b} x {w} process(es) is larger than the training split ({n} images)")
    cap = cfg.train.max_steps_per_epoch
    return min(steps, cap) if cap else steps


def epoch_batches(data, cfg: RunConfig, info: DistInfo, needs_pk: bool, epoch: int, seed: int, device: str):
    """This rank's augmented training batches of `epoch` (dlstudy.data.batches); `seed` is the rank's own."""
    from dlstudy.data import batches

    sampler = None
    if needs_pk:
        sampler = pk_sampler(data.train.labels, cfg)
        sampler.set_epoch(epoch)
        if info.enabled:  # whole classes per rank, or no rank could form a triplet
            if cfg.loss.classes_per_batch % info.world_size:
                raise ConfigError(f"loss.classes_per_batch={cfg.loss.classes_per_batch} must be a multiple of "
                                  f"the {info.world_size} processes, so each keeps whole classes")
            sampler = shard_batches(sampler, info, block=cfg.loss.samples_per_class)
    elif info.enabled:
        global_batches = global_index_batches(len(data.train.labels), cfg.train.batch_size * info.world_size,
                                              cfg.seed, epoch, drop_last=True)
        sampler = shard_batches(global_batches, info)
    # The seed drives the shuffle of a single process and the augmentation draws: per rank under DDP, where
    # the shuffle comes from the shared global batches above (same seed on every rank).
    return batches(data.train, cfg.train.batch_size, shuffle=True, seed=seed, epoch=epoch, augment=cfg.data.augment,
                   mean=data.mean, std=data.std, device=device, sampler=sampler)


def training_wrapper(model: nn.Module, objective: nn.Module, info: DistInfo, device: str, compile: bool) -> nn.Module:
    """The module the loop trains: DDP under torchrun (it must see the current trainable parameters), then
    torch.compile when asked."""
    net: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # Heads the objective does not use (the head under triplet alone, an embedding under CE) get no gradient.
        spec = objective.spec
        unused = not spec.trains_head or (model.embedding is not None and not spec.uses_embedding)
        net = DistributedDataParallel(net, device_ids=[info.local_rank] if device.startswith("cuda") else None,
                                      find_unused_parameters=unused)
    return torch.compile(net) if compile else net
