"""Randomised Nystrom preconditioner for the Newton-CG systems of `solver.py`.

Column k of a Newton system has the Hessian H_k = I + X^T diag(d_k) X (plus the bias row and column), with
d_ik = w_i h_ik: w_i = C c_i s_i the loss weight of sample i, h_ik its loss curvature in column k. Real features have
a fast-decaying covariance spectrum (image pixels: a few directions carry most of the variance), so H_k is badly
conditioned: on standardised CIFAR-10 pixels at C = 0.01 plain CG needs hundreds of steps per Newton step.

Once per fit (`sketch`): the top-r eigenvectors U and eigenvalues lam of A = Xc^T diag(w) Xc (Xc: X centred by its
w-weighted column mean m) from a Nystrom sketch A Omega, two passes over X with r columns where a CG step costs two
passes with K columns (Tropp et al. 2017; Frangella, Tropp & Udell 2023, "Randomized Nystrom preconditioning"), and the
squared scores (Xc U)^2 (N, r). Every Newton step (`update`), the exact diagonal of U^T H_k U,

    g_kj = sum_i d_ik (xc_i . u_j)^2,

follows the active set of each column per principal direction (cheap: one (r, N) @ (N, K) product). Then

    M_k = U diag(1 + g_k) U^T + (1 + kappa_k lam_r) (I - U U^T),     kappa_k = sum_i d_ik / sum_i w_i,

the level outside span(U) being that of the smallest kept eigenvalue scaled by the column's mean curvature. The
bias is decoupled by centring: in the variables (w, b' = b + m^T w) the scores are Xc w + b', and b' gets its exact
diagonal sum_i d_ik. M_k is symmetric positive definite whatever the curvature, so CG stays exact; only its speed
depends on how well M_k matches H_k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor

RANK = 512  # sketch columns (measured on CIFAR-10 pixels, C = 0.01: 256 -> 92 passes, 512 -> 55); D below: all


@dataclass
class NystromPreconditioner:
    U: Tensor  # (D, r) orthonormal top eigenvectors of A
    lam_r: float  # smallest kept eigenvalue of A
    mean: Tensor | None  # (D,) w-weighted column mean of X; None without an intercept
    wsum: float  # sum_i w_i
    S2: Tensor  # (N, r) (Xc U)^2 in bfloat16: only scales the preconditioner (3 digits do), r / 2D of a float32 X
    inv: Tensor | None = None  # (r, K) 1 / (1 + g_k) - 1 / level_k, set by `update`
    level: Tensor | None = None  # (K,)
    bias_diag: Tensor | None = None  # (K,)

    @classmethod
    def sketch(cls, X, weight: Tensor, fit_intercept: bool, rank: int = RANK,
               seed: int = 0) -> "NystromPreconditioner":
        """The preconditioner of `X` (a solver.Design) for the loss weights `weight` (N,).

        Products run in X's precision, in row blocks: the temporaries stay ~(4M / D, r), never (N, r).
        """
        r = min(rank, X.d)
        gen = torch.Generator().manual_seed(seed)  # fixed: the same data always gives the same fit
        omega = torch.linalg.qr(torch.randn(X.d, r, generator=gen, dtype=torch.float64)).Q  # (D, r) orthonormal
        wsum = float(weight.sum())
        mean = X.rmatmul(weight[:, None])[:, 0] / wsum if fit_intercept else None  # (D,)
        # A Omega = Xc^T (w * Xc Omega) = X^T (w * Xc Omega): the m (w^T Xc Omega) term vanishes (w^T Xc = 0)
        Y = torch.zeros(X.d, r, dtype=torch.float64)
        for rows, Xb in X.row_blocks():
            XcO = _centred_scores(Xb, omega, mean)  # (B, r)
            Y += (Xb.T @ XcO.mul_(weight[rows, None].to(XcO.dtype))).to(torch.float64).cpu()
        U, lam = _nystrom(Y, omega, X.eps)
        S2 = torch.empty(X.n, U.shape[1], dtype=torch.bfloat16, device=weight.device)  # (N, r) (Xc U)^2
        for rows, Xb in X.row_blocks():
            S2[rows] = _centred_scores(Xb, U, mean).square_()
        return cls(U.to(device=weight.device, dtype=weight.dtype), float(lam[-1]), mean, wsum, S2)

    def update(self, d: Tensor) -> None:
        """Set the per-column scales for the curvature weights d (N, K) of this Newton step."""
        g = torch.zeros(self.S2.shape[1], d.shape[1], dtype=torch.float32, device=d.device)  # (r, K)
        for i in range(0, len(d), 8192):  # diag of U^T X^T diag(d_k) X U, accumulated in float32
            g.addmm_(self.S2[i:i + 8192].T.float(), d[i:i + 8192].float())
        g = g.to(d.dtype)
        self.level = 1.0 + (d.sum(0) / self.wsum) * self.lam_r
        self.inv = 1.0 / (1.0 + g) - 1.0 / self.level[None]
        self.bias_diag = d.sum(0) + 1e-8 * (d.sum(0).amax() + 1.0)

    def solve(self, R: Tensor, rb: Tensor) -> tuple[Tensor, Tensor]:
        """M^{-1} applied to the residual (R (D, K), rb (K,))."""
        if self.mean is not None:
            R = R - self.mean[:, None] * rb[None]  # into the centred variables (T^{-T} r)
        Z = R / self.level + self.U @ (self.inv * (self.U.T @ R))  # (D, K)
        zb = rb / self.bias_diag
        if self.mean is not None:
            zb = zb - self.mean @ Z  # back to (w, b) (T^{-1} z)
        return Z, zb


def _centred_scores(Xb: Tensor, V: Tensor, mean: Tensor | None) -> Tensor:
    """(B, r) Xc V = X V - 1 (m^T V) for a block of rows Xb (B, D), in Xb's precision."""
    V = V.to(device=Xb.device, dtype=Xb.dtype)
    XV = Xb @ V
    return XV if mean is None else XV.sub_(mean.to(Xb.dtype) @ V)


def _nystrom(Y: Tensor, omega: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(U, lam) with U diag(lam) U^T = Y (Omega^T Y)^+ Y^T, the Nystrom approximation of A from Y = A Omega.

    A shift nu (scaled to the precision Y was computed in) keeps Omega^T Y positive definite and is removed after.
    """
    nu = eps * math.sqrt(Y.shape[0]) * float(torch.linalg.matrix_norm(Y))
    Y = Y + nu * omega
    B = omega.T @ Y
    s, V = torch.linalg.eigh((B + B.T) / 2)  # (r,), (r, r)
    keep = s > s.max() * 1e-12
    E = Y @ (V[:, keep] / s[keep].sqrt())  # (D, r') with E E^T = Y B^+ Y^T
    U, sv, _ = torch.linalg.svd(E, full_matrices=False)
    return U, (sv.square() - nu).clamp_min(0.0)
