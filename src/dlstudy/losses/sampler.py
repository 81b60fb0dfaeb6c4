"""P x K batch sampler for triplet objectives: each batch holds P classes x K images of each.

Epoch semantics: an epoch is `len(labels) // (P * K)` batches, so it draws as many images as the dataset holds,
i.e. it covers the dataset once *on average* (not exactly: classes are drawn at random). Within an epoch:
  - the P classes of a batch are drawn uniformly without replacement among the classes present;
  - each class keeps a shuffled queue of its images that is walked K at a time and reshuffled when exhausted,
    so a class's images are all used before any repeats;
  - a class with fewer than K images contributes K images drawn *with replacement* (some appear twice).
Deterministic: the order depends only on (seed, epoch) and the labels, not on global RNG state.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from dlstudy.errors import ConfigError


class PKBatchSampler:
    """Iterable of batches (lists of int indices into `labels`), P classes x K images each, in class blocks."""

    def __init__(self, labels, P: int, K: int, seed: int = 0, epoch: int = 0):
        y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if y.ndim != 1 or len(y) == 0:
            raise ValueError(f"PKBatchSampler: expected a non-empty 1-D label array, got shape {y.shape}")
        self.classes = np.unique(y)
        if P < 1 or K < 1:
            raise ConfigError(f"loss.classes_per_batch (P={P}) and loss.samples_per_class (K={K}) must be >= 1")
        if P > len(self.classes):
            raise ConfigError(f"loss.classes_per_batch: P={P} but the training split has only "
                              f"{len(self.classes)} classes; use P <= {len(self.classes)}")
        self.P, self.K, self.seed, self.epoch = P, K, seed, epoch
        self.num_samples = len(y)
        self.by_class = [np.flatnonzero(y == c) for c in self.classes]  # image indices of each class

    @property
    def batch_size(self) -> int:
        return self.P * self.K

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return max(1, self.num_samples // (self.P * self.K))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])  # independent stream per (seed, epoch)
        queues = [rng.permutation(idx) for idx in self.by_class]
        pos = [0] * len(queues)
        for _ in range(len(self)):
            batch: list[int] = []
            for c in rng.choice(len(self.classes), size=self.P, replace=False):
                batch.extend(self._take(rng, queues, pos, int(c)))
            yield batch

    def _take(self, rng: np.random.Generator, queues: list, pos: list, c: int) -> list[int]:
        """K indices of class c: from its shuffled queue, or with replacement when it has fewer than K images."""
        idx = self.by_class[c]
        if len(idx) < self.K:
            return rng.choice(idx, size=self.K, replace=True).tolist()
        if pos[c] + self.K > len(queues[c]):  # exhausted: reshuffle, keep the K drawn distinct
            queues[c] = rng.permutation(idx)
            pos[c] = 0
        out = queues[c][pos[c]:pos[c] + self.K]
        pos[c] += self.K
        return out.tolist()
