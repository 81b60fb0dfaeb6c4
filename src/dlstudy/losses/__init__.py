"""Losses for the loss-function study: triplet and center loss (pure functions + nn.Module wrappers), combined
objectives, the P x K batch sampler, and the embedding-collapse guard. (k-NN and retrieval metrics are in
dlstudy.metrics.retrieval; the embedding evaluation of a trained model in dlstudy.engine.evaluation.)"""

from dlstudy.losses.collapse import collapse_diagnostics, embedding_spread
from dlstudy.losses.sampler import PKBatchSampler
from dlstudy.losses.center import CenterLoss, center_loss, center_update
from dlstudy.losses.objectives import OBJECTIVES, Objective, ObjectiveSpec, build_objective
from dlstudy.losses.triplet import TripletLoss, mine_triplets, pairwise_distances, triplet_loss

__all__ = [
    "OBJECTIVES", "Objective", "ObjectiveSpec", "build_objective",
    "TripletLoss", "triplet_loss", "mine_triplets", "pairwise_distances",
    "CenterLoss", "center_loss", "center_update",
    "PKBatchSampler",
    "collapse_diagnostics", "embedding_spread",
]
