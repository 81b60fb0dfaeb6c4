"""Random Fourier features (Rahimi & Recht 2007): a linear SVM on them approximates an RBF-kernel SVM.

    k(x, x') = exp(-gamma ||x - x'||^2)  ~=  phi(x) . phi(x'),   phi(x) = sqrt(2 / M) cos(x Omega + beta)

with Omega (D, M) ~ N(0, 2 gamma) entrywise and beta (M,) ~ U[0, 2 pi). The error of the kernel estimate shrinks
as 1 / sqrt(M), at cost linear in the number of samples (a kernel SVM is quadratic or worse).
"""

from __future__ import annotations

import math

import torch


def default_gamma(X: torch.Tensor) -> float:
    """scikit-learn's gamma='scale': 1 / (n_features * X.var()), so the kernel width follows the data scale."""
    var = float(X.double().var(unbiased=False))
    return 1.0 / (X.shape[1] * var) if var > 0 else 1.0


def sample_rff(n_features: int, n_components: int, gamma: float, seed: int | None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Omega (D, M) and beta (M,), drawn from a private generator so the global RNG is untouched."""
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    omega = torch.randn(n_features, n_components, generator=gen, dtype=torch.float64) * math.sqrt(2.0 * gamma)
    beta = torch.rand(n_components, generator=gen, dtype=torch.float64) * (2 * math.pi)
    return omega.to(dtype), beta.to(dtype)


def rff_transform(X: torch.Tensor, omega: torch.Tensor, beta: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """phi(X) (N, M) computed in row chunks so the (chunk, M) temporaries stay small."""
    omega, beta = omega.to(X.device, X.dtype), beta.to(X.device, X.dtype)
    scale = math.sqrt(2.0 / omega.shape[1])
    out = torch.empty(X.shape[0], omega.shape[1], dtype=X.dtype, device=X.device)
    for i in range(0, X.shape[0], batch_size):
        torch.cos(torch.addmm(beta, X[i:i + batch_size], omega), out=out[i:i + batch_size])
    return out.mul_(scale)
