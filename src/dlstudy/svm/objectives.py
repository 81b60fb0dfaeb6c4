"""Primal objectives of the multiclass linear SVM formulations, as pure functions of the score matrix.

Every formulation solved by `LinearSVM` has the primal

    P(W, b) = 1/2 ||W||_F^2 + C * sum_i c_i * loss(z_i, y_i),      z_i = W^T x_i + b   (K scores of sample i)

with W (D, K), the bias b (K,) unregularised, c_i the weight of sample i's class (1 without class_weight), and loss:

    ovr + squared_hinge   sum_k max(0, 1 - t_ik z_ik)^2                t_ik = +1 if y_i = k else -1
    ovr + hinge           sum_k max(0, 1 - t_ik z_ik)
    crammer_singer        max_k (1[k != y_i] + z_ik) - z_iy_i          (Crammer & Singer 2001)
    weston_watkins        sum_{k != y_i} max(0, 1 + z_ik - z_iy_i)     (Weston & Watkins 1999)

For `fit_intercept=False` and no class weights, OvR squared hinge is exactly the sum over classes of LinearSVC's
(liblinear L2-loss) objectives and crammer_singer is exactly LinearSVC(multi_class='crammer_singer')'s objective.

Non-smooth losses are smoothed with a temperature `mu` (softplus for hinges, log-sum-exp for the max); `mu=0` gives
the exact loss. The gradient of a smoothed loss with respect to the scores always lies in the domain of the exact
loss's convex conjugate, so it is a feasible dual point: with U (N, K) = dloss/dz the Fenchel dual is

    D(U) = -1/2 ||C X^T (c * U)||_F^2 - C * sum_i c_i * (loss*(u_i) - u_i . b)

and P(W, b) - D(U) >= 0 bounds the suboptimality in W (for the fixed b; b itself is checked by its gradient).
Functions here take and return torch tensors; shapes in comments: N samples, K classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _margins(Z: Tensor, T: Tensor) -> Tensor:
    return 1.0 - T * Z  # (N, K) margin violations of the K binary problems


def _softplus(m: Tensor, mu: float) -> Tensor:
    return torch.relu(m) if mu == 0 else mu * F.softplus(m / mu)


def _sigmoid(m: Tensor, mu: float) -> Tensor:
    return (m > 0).to(m.dtype) if mu == 0 else torch.sigmoid(m / mu)


# ------------------------------------------------------------------------------------------------ OvR squared hinge


def sqhinge_value(Z: Tensor, T: Tensor, mu: float = 0.0) -> Tensor:
    """(N, K) per-class losses max(0, 1 - t z)^2; T is the (N, K) +-1 target matrix. Smooth already: mu unused."""
    return torch.relu(_margins(Z, T)).square()


def sqhinge_grad(Z: Tensor, T: Tensor, mu: float = 0.0) -> tuple[Tensor, Tensor]:
    """dloss/dZ (N, K) and the generalised second derivative (N, K): 2 on active margins, else 0."""
    m = _margins(Z, T)
    return -2.0 * T * torch.relu(m), 2.0 * (m > 0).to(Z.dtype)


def sqhinge_conj(U: Tensor, T: Tensor) -> Tensor:
    """(N,) conjugate loss*(u) for u = -a t, a >= 0: sum_k (a^2/4 - a)."""
    a = torch.relu(-U * T)
    return (a.square() / 4 - a).sum(1)


# ------------------------------------------------------------------------------------------------ OvR hinge


def hinge_value(Z: Tensor, T: Tensor, mu: float = 0.0) -> Tensor:
    """(N, K) per-class hinge losses max(0, 1 - t z), softplus-smoothed with temperature mu."""
    return _softplus(_margins(Z, T), mu)


def hinge_grad(Z: Tensor, T: Tensor, mu: float = 0.0) -> tuple[Tensor, Tensor]:
    m = _margins(Z, T)
    a = _sigmoid(m, mu)  # (N, K) in [0, 1]: the dual variable of each binary problem
    curv = torch.zeros_like(m) if mu == 0 else a * (1 - a) / mu
    return -T * a, curv


def hinge_conj(U: Tensor, T: Tensor) -> Tensor:
    return -(-U * T).clamp(0, 1).sum(1)  # u = -a t with a in [0, 1]: loss*(u) = -sum a


# ------------------------------------------------------------------------------------------------ Crammer-Singer


def cs_value(Z: Tensor, y: Tensor, mu: float = 0.0) -> Tensor:
    """(N, 1) losses max_k (1[k != y] + z_k) - z_y; log-sum-exp smoothed with temperature mu."""
    V = Z + 1.0
    V.scatter_(1, y[:, None], Z.gather(1, y[:, None]))  # (N, K) z_k + 1[k != y]
    top = V.amax(1) if mu == 0 else mu * torch.logsumexp(V / mu, 1)
    return (top - Z.gather(1, y[:, None])[:, 0])[:, None]


def cs_grad(Z: Tensor, y: Tensor, mu: float = 0.0) -> tuple[Tensor, Tensor]:
    """dloss/dZ = p - e_y with p (N, K) the softmax (or argmax) of z + 1[k != y]; curvature data is p."""
    V = Z + 1.0
    V.scatter_(1, y[:, None], Z.gather(1, y[:, None]))
    if mu == 0:
        p = F.one_hot(V.argmax(1), Z.shape[1]).to(Z.dtype)
    else:
        p = torch.softmax(V / mu, 1)
    G = p.clone()
    G.scatter_add_(1, y[:, None], -torch.ones_like(y[:, None], dtype=Z.dtype))
    return G, p / mu if mu else torch.zeros_like(p)


def cs_hvp(curv: Tensor, S: Tensor, y: Tensor) -> Tensor:
    """Hessian of mu*LSE(v/mu) applied to S (N, K): (diag(p) - p p^T) s / mu, with curv = p / mu."""
    mu_p = curv  # p / mu
    p_sum = mu_p.sum(1, keepdim=True)  # = 1 / mu
    p = mu_p / p_sum.clamp_min(torch.finfo(S.dtype).tiny)
    return mu_p * S - mu_p * (p * S).sum(1, keepdim=True)


def cs_conj(U: Tensor, y: Tensor) -> Tensor:
    """u = p - e_y with p in the simplex: loss*(u) = -(1 - p_y) = u_y (the y-entry of u)."""
    return U.gather(1, y[:, None])[:, 0]


# ------------------------------------------------------------------------------------------------ Weston-Watkins


def _ww_diffs(Z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    zy = Z.gather(1, y[:, None])  # (N, 1)
    mask = torch.ones_like(Z)
    mask.scatter_(1, y[:, None], 0.0)  # (N, K) 0 at the true class
    return 1.0 + Z - zy, mask


def ww_value(Z: Tensor, y: Tensor, mu: float = 0.0) -> Tensor:
    """(N, 1) losses sum_{k != y} max(0, 1 + z_k - z_y), softplus-smoothed with temperature mu."""
    d, mask = _ww_diffs(Z, y)
    return (_softplus(d, mu) * mask).sum(1, keepdim=True)


def ww_grad(Z: Tensor, y: Tensor, mu: float = 0.0) -> tuple[Tensor, Tensor]:
    d, mask = _ww_diffs(Z, y)
    a = _sigmoid(d, mu) * mask  # (N, K) pair weights in [0, 1], 0 at the true class
    G = a.clone()
    G.scatter_(1, y[:, None], -a.sum(1, keepdim=True))
    curv = torch.zeros_like(a) if mu == 0 else a * (1 - a) / mu * mask
    return G, curv


def ww_hvp(curv: Tensor, S: Tensor, y: Tensor) -> Tensor:
    """Hessian of the smoothed pairs applied to S (N, K); curv (N, K) holds each pair's second derivative."""
    t = curv * (S - S.gather(1, y[:, None]))  # (N, K) curvature of each pair times its score difference
    out = t.clone()
    out.scatter_(1, y[:, None], -t.sum(1, keepdim=True))
    return out


def ww_conj(U: Tensor, y: Tensor) -> Tensor:
    mask = torch.ones_like(U)
    mask.scatter_(1, y[:, None], 0.0)
    return -(U.clamp(0, 1) * mask).sum(1)  # u_k = a_k for k != y: loss*(u) = -sum a


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Formulation:
    """A loss on the (N, K) score matrix. `target` turns int labels (N,) into what the functions take."""

    name: str
    separable: bool  # True: K independent binary problems (OvR), solved column by column
    smooth: bool  # False: solved by continuation in the smoothing temperature mu
    value: Callable  # (Z, target, mu) -> (N, K) or (N, 1) losses
    grad: Callable  # (Z, target, mu) -> (dloss/dZ (N, K), curvature data)
    conj: Callable  # (U, target) -> (N,) conjugate values, for the duality gap
    hvp: Callable | None = None  # (curv, S, target) -> (N, K); None: diagonal, curv * S

    def target(self, y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
        if self.separable:
            return 2.0 * F.one_hot(y, num_classes).to(dtype) - 1.0  # (N, K) +-1
        return y


FORMULATIONS: dict[str, Formulation] = {
    "ovr_squared_hinge": Formulation("ovr_squared_hinge", True, True, sqhinge_value, sqhinge_grad, sqhinge_conj),
    "ovr_hinge": Formulation("ovr_hinge", True, False, hinge_value, hinge_grad, hinge_conj),
    "crammer_singer": Formulation("crammer_singer", False, False, cs_value, cs_grad, cs_conj, cs_hvp),
    "weston_watkins": Formulation("weston_watkins", False, False, ww_value, ww_grad, ww_conj, ww_hvp),
}


def primal_objective(W: Tensor, b: Tensor, X: Tensor, y: Tensor, C: float, formulation: str,
                     sample_weight: Tensor | None = None) -> float:
    """P(W, b) of the module docstring, exact (unsmoothed). W (D, K), b (K,), X (N, D), y (N,) int in 0..K-1."""
    form = FORMULATIONS[formulation]
    Z = X @ W + b
    losses = form.value(Z, form.target(y, W.shape[1], W.dtype), 0.0).sum(1)  # (N,)
    c = torch.ones_like(losses) if sample_weight is None else sample_weight
    return float(0.5 * W.square().sum() + C * (c * losses).sum())
