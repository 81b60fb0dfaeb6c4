"""A finished run's scoring as one torch module: uint8 images in, the run's scores out (what gets exported).

    graph = ScoringGraph(dlstudy.load_run(RUN_DIR))
    graph(images_uint8)   # (N, C, H, W) uint8 at the run's channels and size ->
                          #   network:          (probabilities (N, K),)
                          #   an SVM decides:   (margins (N, K), probabilities (N, K))

It calls the pieces `LoadedRun.scores_uint8` runs through (`data.to_float` with the run's training statistics,
`data.ensure_channels`, `models.forward.batch_output` of the `Classifier` interface), in float32, so an export
scores as the run does. The LinearSVM's prediction (standardisation, random Fourier features for kernel='rbf',
z = W^T x + b, columns in class order as `svm.selection.full_margins`) is re-expressed as tensor operations on its
saved arrays (`LinearScores`), since the estimator scores with NumPy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dlstudy.data import ensure_channels, to_float
from dlstudy.models.forward import batch_output


class LinearScores(nn.Module):
    """(N, D) features -> (N, num_classes) float32 margins of a fitted LinearSVM, columns in class order.

    A class absent from the SVM's training data scores (row minimum - 1), so it is never the argmax;
    `full_margins` uses the minimum over the whole batch instead (same labels, other probabilities)."""

    def __init__(self, svm, num_classes: int):
        super().__init__()
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.standardize = bool(svm.standardize)
        if self.standardize:
            self.register_buffer("mean", f32(svm.mean_))  # (D,)
            self.register_buffer("scale", f32(svm.scale_))  # (D,)
        self.rbf = svm.kernel == "rbf"
        if self.rbf:
            self.register_buffer("omega", f32(svm.rff_omega_))  # (D, M)
            self.register_buffer("beta", f32(svm.rff_beta_))  # (M,)
            self.rff_scale = math.sqrt(2.0 / svm.rff_omega_.shape[1])
        self.register_buffer("weight", f32(svm.coef_))  # (K_train, D')
        self.register_buffer("bias", f32(svm.intercept_))  # (K_train,)
        classes = np.asarray(svm.classes_).astype(np.int64)
        column = np.full(num_classes, len(classes), dtype=np.int64)  # K_train: the "absent class" column
        column[classes] = np.arange(len(classes))
        self.register_buffer("column", torch.from_numpy(column))  # (K,) train column of each class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            x = (x - self.mean) / self.scale
        if self.rbf:
            x = torch.cos(x @ self.omega + self.beta) * self.rff_scale  # (N, M) random Fourier features
        z = x @ self.weight.T + self.bias  # (N, K_train)
        absent = z.min(dim=1, keepdim=True).values - 1.0  # (N, 1)
        return torch.cat([z, absent], dim=1).index_select(1, self.column)  # (N, K)


class ScoringGraph(nn.Module):
    """uint8 (N, C, H, W) at the run's channels and size -> the run's scores in float32 (see module docstring)."""

    def __init__(self, run):
        super().__init__()
        self.network = run.model  # None: an SVM on raw pixels
        self.mean, self.std = [float(v) for v in run.inputs["mean"]], [float(v) for v in run.inputs["std"]]
        # as LoadedRun._svm_scores: an svm run reads a backbone's pooled features of RGB images, a train run's
        # embedding SVM the embedding head; a network's head gives the logits
        self.output = "logits" if run.svm is None else "features" if run.kind == "svm" else "embedding"
        self.channels = 3 if run.kind == "svm" and run.model is not None else None
        self.svm = LinearScores(run.svm, len(run.class_names)) if run.svm is not None else None
        self.temperature = float(getattr(run.svm, "temperature_", 1.0)) if run.svm is not None else 1.0
        self.eval()

    @property
    def output_names(self) -> list[str]:
        return ["probabilities"] if self.svm is None else ["margins", "probabilities"]

    def forward(self, images: torch.Tensor):
        x = to_float(images, self.mean, self.std)  # (N, C, H, W) float32, the eval transform
        if self.network is None:
            out = x.flatten(1)  # (N, C*H*W) pixels on [0, 1]: mean 0 / std 1 for raw-pixel runs
        else:
            if self.channels is not None:
                x = ensure_channels(x, self.channels)
            out = batch_output(self.network, x, self.output)  # (N, K) logits or (N, D) features / embedding
        if self.svm is None:
            return (torch.softmax(out, dim=1),)
        margins = self.svm(out)  # (N, K)
        return margins, torch.softmax(margins / self.temperature, dim=1)
