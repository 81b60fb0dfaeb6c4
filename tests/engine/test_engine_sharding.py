"""DDP batch sharding: every index goes to exactly one rank; P x K batches keep whole classes per rank."""

from __future__ import annotations

import torch

from dlstudy.engine.distributed import DistInfo, shard_batches
from dlstudy.losses import PKBatchSampler, triplet_loss


def _info(rank: int, world: int) -> DistInfo:
    return DistInfo(rank=rank, world_size=world, local_rank=rank, local_world_size=world)


def test_single_index_sharding_partitions_each_batch():
    batches = [list(range(10)), list(range(10, 20))]
    parts = [list(shard_batches(batches, _info(r, 3))) for r in range(3)]
    for b, batch in enumerate(batches):
        assert sorted(i for p in parts for i in p[b]) == batch


def test_pk_sharding_keeps_whole_classes_so_triplets_form():
    labels = torch.arange(40) % 10  # 10 classes x 4 images
    sampler = PKBatchSampler(labels, P=8, K=4, seed=0)
    (batch,) = list(sampler)[:1]
    for world in (2, 4):
        parts = [next(shard_batches([batch], _info(r, world), block=4)) for r in range(world)]
        assert sorted(i for p in parts for i in p) == sorted(batch)
        for part in parts:
            counts = torch.bincount(labels[part], minlength=10)
            assert set(counts[counts > 0].tolist()) == {4}  # K images of each class this rank holds
            emb = torch.nn.functional.normalize(torch.randn(len(part), 8, generator=torch.Generator().manual_seed(0)), dim=1)
            _, stats = triplet_loss(emb, labels[part], mining="all")
            assert stats["num_triplets"] > 0
