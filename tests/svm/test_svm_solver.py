"""The Newton-CG solver: the Nystrom preconditioner (exact where its model is, same optimum, fewer CG steps) and the
float32 design matrix under a float64 solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dlstudy.svm.solver as solver
from dlstudy.svm import LinearSVM
from dlstudy.svm.preconditioner import NystromPreconditioner


def correlated(n: int, d: int, seed: int = 0):
    """Pixel-like features: a few strong shared directions (decaying spectrum) + noise, 4 classes, not centred."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(20, d)) * (0.7 ** np.arange(20))[:, None] * 6
    X = rng.normal(size=(n, 20)) @ basis + 0.3 * rng.normal(size=(n, d)) + 2.0
    y = (X[:, :4] @ rng.normal(size=4) > np.quantile(X[:, :4] @ rng.normal(size=4), 0.5)).astype(int)
    y = y + 2 * (X[:, 4] > np.median(X[:, 4]))
    return X, y


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_preconditioner_is_the_exact_inverse_for_uniform_curvature_at_full_rank(fit_intercept):
    X, _ = correlated(300, 12)
    X_t = torch.from_numpy(X)
    weight = torch.from_numpy(np.random.default_rng(1).uniform(0.5, 2.0, 300))
    pre = NystromPreconditioner.sketch(solver.Design(X_t, "cpu"), weight, fit_intercept, rank=12)
    kappa = torch.tensor([2.0, 0.5, 1.0])  # uniform curvature per column: d_ik = kappa_k w_i
    pre.update(weight[:, None] * kappa[None])
    R, rb = torch.randn(12, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    rb = rb if fit_intercept else torch.zeros(3, dtype=torch.float64)
    Z, zb = pre.solve(R, rb)
    # exact up to the bfloat16 in which the per-direction curvatures are kept (3 significant digits): a wrong
    # centring or scale would be off by O(1)
    for k in range(3):  # H_k = [[I + X^T D X, X^T D 1], [1^T D X, 1^T D 1]]
        Xt = torch.cat([X_t, torch.ones(300, 1, dtype=torch.float64)], 1) if fit_intercept else X_t
        H = Xt.T @ (kappa[k] * weight[:, None] * Xt)
        H[:12, :12] += torch.eye(12, dtype=torch.float64)
        expected = torch.linalg.solve(H, torch.cat([R[:, k], rb[k:k + 1]]) if fit_intercept else R[:, k])
        scale = expected.abs().max()
        torch.testing.assert_close(Z[:, k], expected[:12], rtol=0, atol=1e-2 * scale)
        if fit_intercept:
            torch.testing.assert_close(zb[k], expected[12], rtol=0, atol=1e-2 * scale)


def _fit_counting(monkeypatch, rank: int, **kwargs) -> tuple[LinearSVM, int]:
    """A fit with the given preconditioner rank, and how many passes X @ W the solver made."""
    X, y = correlated(1500, 150)
    calls = {"n": 0}
    matmul = solver.Design.matmul

    def counting(self, W):
        calls["n"] += 1
        return matmul(self, W)

    monkeypatch.setattr(solver.Design, "matmul", counting)
    monkeypatch.setattr("dlstudy.svm.preconditioner.RANK", rank)
    return LinearSVM(**kwargs).fit(X, y), calls["n"]


def test_preconditioned_cg_reaches_the_same_optimum_in_fewer_passes(monkeypatch):
    plain, plain_passes = _fit_counting(monkeypatch, 0, C=1.0, tol=1e-8)
    pre, pre_passes = _fit_counting(monkeypatch, 64, C=1.0, tol=1e-8)
    assert plain.converged_ and pre.converged_
    assert pre.objective_ == pytest.approx(plain.objective_, rel=1e-7)
    # strongly convex: ||W - W*||^2 <= 2 gap, and both gaps are <= 1e-8 P
    np.testing.assert_allclose(pre.coef_, plain.coef_, atol=1e-3 * np.abs(plain.coef_).max())
    # the sketch itself costs a few passes; CG on these correlated features needs far more without it
    assert pre_passes * 3 <= plain_passes, (pre_passes, plain_passes)


def test_preconditioned_coupled_formulation_reaches_the_same_optimum(monkeypatch):
    kwargs = dict(C=0.1, multi_class="weston_watkins", tol=1e-4, standardize=True)
    plain, _ = _fit_counting(monkeypatch, 0, **kwargs)
    pre, _ = _fit_counting(monkeypatch, 64, **kwargs)
    assert plain.converged_ and pre.converged_
    assert pre.objective_ == pytest.approx(plain.objective_, rel=2e-4)  # both within tol of the optimum


def test_float32_input_stays_float32_under_a_float64_solver(monkeypatch):
    X, y = correlated(600, 40)
    X32 = X.astype(np.float32)
    seen = {}
    design = solver.Design.__init__

    def spy(self, X, *args, **kwargs):
        seen["dtype"], seen["shares"] = X.dtype, X.data_ptr() == X32.__array_interface__["data"][0]
        design(self, X, *args, **kwargs)

    monkeypatch.setattr(solver.Design, "__init__", spy)
    mixed = LinearSVM(C=0.5, tol=1e-6).fit(X32, y)
    assert seen == {"dtype": torch.float32, "shares": True}  # no float64 copy of the caller's X
    exact = LinearSVM(C=0.5, tol=1e-6).fit(X32.astype(np.float64), y)  # the same numbers, float64 products
    assert mixed.objective_ == pytest.approx(exact.objective_, rel=1e-5)
    assert mixed.converged_ and mixed.dual_gap_ <= 1e-6 * mixed.objective_ * 1.0001
    np.testing.assert_allclose(mixed.coef_, exact.coef_, atol=1e-2 * np.abs(exact.coef_).max())
    assert mixed.decision_function(X32).dtype == np.float64
