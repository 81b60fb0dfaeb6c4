"""Training objectives: weighted sums of cross-entropy, triplet and center losses behind one interface.

    objective = build_objective(cfg.loss, num_classes, feature_dim, embedding_dim)
    out = objective(model(x), y)      # {"loss": scalar tensor, "ce": float, "triplet": float, "center": float,
    out["loss"].backward()            #  "active_triplets": float, "num_triplets": float}
    optimizer.step(); objective.after_step()   # centre update (center+ce); a no-op otherwise

Which tensor each loss sees (outputs is the model's dict):
    ce       outputs["logits"] (B, K)
    triplet  outputs["embedding"] (B, E) when the model has an embedding head, else outputs["features"] (B, F)
    center   outputs["features"] (B, F), the deep features before the classifier, as in Wen et al. 2016
Every key is present in every objective's output (0.0 for an unused component) so history columns line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dlstudy.config import LossConfig
from dlstudy.errors import ConfigError
from dlstudy.losses.center import CenterLoss
from dlstudy.losses.triplet import DISTANCES, MINING_MODES, TripletLoss


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the engine needs to know about an objective, so it never branches on the objective's name."""

    components: tuple[str, ...]  # which of ce / triplet / center are summed
    help: str
    # The loss reaches the classification head: the head's val accuracy can pick the best epoch (otherwise the
    # last epoch's weights are kept), and under DDP the head's parameters get gradients.
    trains_head: bool
    # The loss reads the model's embedding head when it has one (else an embedding head gets no gradient, which
    # DDP must be told: find_unused_parameters).
    uses_embedding: bool
    pk_batches: bool  # needs P x K batches (several images of each class per batch) to form triplets


OBJECTIVES: dict[str, ObjectiveSpec] = {
    "ce": ObjectiveSpec(("ce",), "cross-entropy on the logits", trains_head=True, uses_embedding=False,
                        pk_batches=False),
    "triplet+ce": ObjectiveSpec(("ce", "triplet"), "cross-entropy + triplet loss on the embedding, P x K batches",
                                trains_head=True, uses_embedding=True, pk_batches=True),
    "center+ce": ObjectiveSpec(("ce", "center"), "cross-entropy + center loss on the features (Wen et al. 2016)",
                               trains_head=True, uses_embedding=False, pk_batches=False),
    "triplet": ObjectiveSpec(("triplet",), "triplet loss alone (classify with eval.classifier svm or knn)",
                             trains_head=False, uses_embedding=True, pk_batches=True),
}


class Objective(nn.Module):
    """Weighted sum of the components of one OBJECTIVES entry; holds the center-loss centres when used."""

    def __init__(self, name: str, cfg: LossConfig, num_classes: int, feature_dim: int,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.name = name
        self.spec = OBJECTIVES[name]
        self.components = self.spec.components
        self.ce_weight, self.triplet_weight, self.center_weight = cfg.ce_weight, cfg.triplet_weight, cfg.center_weight
        self.label_smoothing = label_smoothing
        # False: components come back as detached 0-dim tensors, sparing a host sync per component per step on
        # CUDA (the triplet statistics stay floats: mining has data-dependent shapes and syncs anyway).
        self.float_components = True
        self.triplet = None
        self.center = None
        if "triplet" in self.components:
            self.triplet = TripletLoss(cfg.triplet_margin, cfg.triplet_mining, cfg.triplet_squared,
                                       cfg.triplet_normalize, cfg.triplet_soft, cfg.triplet_distance)
        if "center" in self.components:
            self.center = CenterLoss(num_classes, feature_dim, alpha=cfg.center_lr)

    @property
    def needs_pk_sampler(self) -> bool:
        """True when the objective needs P x K batches (several images of each class in a batch)."""
        return self.spec.pk_batches

    def forward(self, outputs: dict, labels: torch.Tensor) -> dict:
        logits = outputs["logits"]
        total = None  # the weighted sum; no zero tensor or x1.0 product on the plain-CE hot path (batch-1 SGD)
        value = (lambda t: float(t.detach())) if self.float_components else (lambda t: t.detach())
        out = {"ce": 0.0, "triplet": 0.0, "center": 0.0, "active_triplets": 0.0, "num_triplets": 0.0}
        if "ce" in self.components:
            ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            total = _accumulate(total, self.ce_weight, ce)
            out["ce"] = value(ce)
        if self.triplet is not None:
            emb = outputs.get("embedding")
            emb = outputs["features"] if emb is None else emb  # (B, E) or (B, F)
            # Float32 for the distance matrix: bf16 Gram-matrix distances are too coarse for margin 0.2.
            trip, stats = self.triplet(emb.float(), labels)
            total = _accumulate(total, self.triplet_weight, trip)
            out["triplet"] = value(trip)
            out["active_triplets"] = stats["active_fraction"]
            out["num_triplets"] = stats["num_triplets"]
        if self.center is not None:
            cen = self.center(outputs["features"], labels)
            total = _accumulate(total, self.center_weight, cen)
            out["center"] = value(cen)
        out["loss"] = total
        return out

    def after_step(self) -> None:
        """Call after optimizer.step(): moves the class centres by the Wen et al. rule (center+ce only)."""
        if self.center is not None:
            self.center.update()

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, ce_weight={self.ce_weight}, triplet_weight={self.triplet_weight}, "
                f"center_weight={self.center_weight}, label_smoothing={self.label_smoothing}")


def _accumulate(total: torch.Tensor | None, weight: float, term: torch.Tensor) -> torch.Tensor:
    term = term if weight == 1.0 else weight * term
    return term if total is None else total + term


def _validate(cfg: LossConfig) -> None:
    if cfg.name not in OBJECTIVES:
        raise ConfigError(f"loss.name: unknown objective {cfg.name!r}; valid names are {sorted(OBJECTIVES)}")
    if cfg.triplet_mining not in MINING_MODES:
        raise ConfigError(f"loss.triplet_mining: expected one of {list(MINING_MODES)}, got {cfg.triplet_mining!r}")
    if cfg.triplet_distance not in DISTANCES:
        raise ConfigError(f"loss.triplet_distance: expected one of {list(DISTANCES)}, "
                          f"got {cfg.triplet_distance!r}")
    if cfg.triplet_squared and cfg.triplet_distance != "euclidean":
        raise ConfigError("loss.triplet_squared: only meaningful with triplet_distance=euclidean")
    for key in ("ce_weight", "triplet_weight", "center_weight", "center_lr", "triplet_margin"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"loss.{key}: expected >= 0, got {getattr(cfg, key)}")
    if cfg.classes_per_batch < 2 or cfg.samples_per_class < 2:
        raise ConfigError(f"loss.classes_per_batch and loss.samples_per_class: triplets need >= 2 of each, got "
                          f"{cfg.classes_per_batch} and {cfg.samples_per_class}")


def build_objective(cfg: LossConfig, num_classes: int, feature_dim: int, embedding_dim: int | None = None,
                    label_smoothing: float = 0.0) -> Objective:
    """The Objective named by cfg.name, validated (ConfigError naming the loss.* field on bad values).

    embedding_dim is accepted for symmetry with the model (the triplet loss needs no parameters); label_smoothing
    is the engine's train.label_smoothing, applied to the cross-entropy component.
    """
    _validate(cfg)
    del embedding_dim  # the triplet loss is parameter-free; kept in the signature for callers' symmetry
    return Objective(cfg.name, cfg, num_classes, feature_dim, label_smoothing)
