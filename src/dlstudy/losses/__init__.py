"""Losses for the loss-function study: triplet and center loss (pure functions + nn.Module wrappers), combined
objectives, the P x K batch sampler, k-NN and embedding retrieval metrics, and the embedding-collapse guard."""

from dlstudy.losses.collapse import collapse_diagnostics, embedding_spread
from dlstudy.losses.embeddings import knn_indices, knn_predict, map_at_r, precision_at_1, recall_at_k, retrieval_metrics
from dlstudy.losses.evaluation import (embedding_classifier, embedding_scores, evaluate_embeddings,
                                      evaluate_model_embeddings, extract_embeddings, save_test_embeddings)
from dlstudy.losses.sampler import PKBatchSampler
from dlstudy.losses.center import CenterLoss, center_loss, center_update
from dlstudy.losses.objectives import OBJECTIVES, Objective, ObjectiveSpec, build_objective
from dlstudy.losses.triplet import TripletLoss, mine_triplets, pairwise_distances, triplet_loss

__all__ = [
    "OBJECTIVES", "Objective", "ObjectiveSpec", "build_objective",
    "TripletLoss", "triplet_loss", "mine_triplets", "pairwise_distances",
    "CenterLoss", "center_loss", "center_update",
    "PKBatchSampler",
    "knn_indices", "knn_predict", "precision_at_1", "recall_at_k", "map_at_r", "retrieval_metrics",
    "extract_embeddings", "embedding_classifier", "embedding_scores", "evaluate_embeddings", "evaluate_model_embeddings",
    "save_test_embeddings",
    "collapse_diagnostics", "embedding_spread",
]
