"""LinearSVM against scikit-learn (objective, accuracy), autograd (gradients), and its estimator contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from dlstudy.svm import FORMULATIONS, ConvergenceWarning, LinearSVM


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


def reference_objective(coef: np.ndarray, X: np.ndarray, y: np.ndarray, C: float, formulation: str) -> float:
    """Independent NumPy formula (loops over classes, no shared code): 1/2 ||W||^2 + C sum_i loss_i."""
    scores = X @ coef.T  # (N, K)
    n, k = scores.shape
    reg = 0.5 * float((coef ** 2).sum())
    if formulation == "ovr_squared_hinge":
        loss = sum(np.maximum(0, 1 - np.where(y == c, 1.0, -1.0) * scores[:, c]) ** 2 for c in range(k)).sum()
    elif formulation == "crammer_singer":
        true = scores[np.arange(n), y]
        max_other = np.max(scores + (np.arange(k)[None] != y[:, None]), axis=1)
        loss = float((max_other - true).sum())
    elif formulation == "ovr_hinge":
        loss = sum(np.maximum(0, 1 - np.where(y == c, 1.0, -1.0) * scores[:, c]) for c in range(k)).sum()
    else:
        raise AssertionError(formulation)
    return reg + C * float(loss)


def _linearsvc(X, y, C, formulation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if formulation == "ovr_squared_hinge":  # liblinear's primal Newton: fast and exact at tight tol
            return LinearSVC(C=C, fit_intercept=False, dual=False, tol=1e-10, max_iter=100000).fit(X, y)
        if formulation == "ovr_hinge":
            return LinearSVC(C=C, loss="hinge", fit_intercept=False, tol=1e-10, max_iter=100000).fit(X, y)
        return LinearSVC(C=C, multi_class="crammer_singer", fit_intercept=False, tol=1e-8, max_iter=100000).fit(X, y)


@pytest.mark.parametrize("C", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("formulation", ["ovr_squared_hinge", "crammer_singer"])
def test_objective_within_0_1_percent_of_linearsvc(digits, formulation, C):
    X, y = digits
    multi_class = "ovr" if formulation.startswith("ovr") else formulation
    ours = LinearSVM(C=C, multi_class=multi_class, fit_intercept=False, tol=1e-3).fit(X, y)
    ref = reference_objective(_linearsvc(X, y, C, formulation).coef_, X, y, C, formulation)
    mine = reference_objective(ours.coef_, X, y, C, formulation)
    assert mine == pytest.approx(ours.objective_, rel=1e-6)  # objective_ is the documented formula
    assert mine <= ref * (1 + 1e-3), (mine, ref)
    assert ours.converged_ and ours.dual_gap_ <= 1e-3 * ours.objective_ + 1e-9


def test_ovr_hinge_objective_and_float32_squared_hinge(digits):
    X, y = digits
    ours = LinearSVM(C=0.01, loss="hinge", fit_intercept=False).fit(X, y)
    ref = reference_objective(_linearsvc(X, y, 0.01, "ovr_hinge").coef_, X, y, 0.01, "ovr_hinge")
    assert reference_objective(ours.coef_, X, y, 0.01, "ovr_hinge") <= ref * (1 + 1e-3)
    f32 = LinearSVM(C=0.1, fit_intercept=False, dtype="float32").fit(X.astype(np.float32), y)
    ref = reference_objective(_linearsvc(X, y, 0.1, "ovr_squared_hinge").coef_, X, y, 0.1, "ovr_squared_hinge")
    assert reference_objective(f32.coef_.astype(np.float64), X, y, 0.1, "ovr_squared_hinge") <= ref * (1 + 1e-3)


def test_accuracy_not_below_linearsvc(digits_split):
    Xtr, Xte, ytr, yte = digits_split
    for multi_class in ("ovr", "crammer_singer"):
        ours = LinearSVM(C=0.1, multi_class=multi_class).fit(Xtr, ytr).score(Xte, yte)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = LinearSVC(C=0.1, multi_class=multi_class, max_iter=20000).fit(Xtr, ytr).score(Xte, yte)
        assert ours >= ref - 0.005, (multi_class, ours, ref)


def test_rbf_close_to_kernel_svc(digits_split):
    Xtr, Xte, ytr, yte = digits_split
    ours = LinearSVM(C=1.0, kernel="rbf", n_components=2000, random_state=0).fit(Xtr, ytr)
    ref = SVC(kernel="rbf", C=1.0, gamma="scale").fit(Xtr, ytr).score(Xte, yte)
    assert ours.score(Xte, yte) >= ref - 0.01
    assert ours.coef_.shape == (10, 2000)
    assert ours.gamma_ == pytest.approx(1.0 / (Xtr.shape[1] * Xtr.var()))


def test_weston_watkins_optimal_and_accurate(digits_split):
    Xtr, Xte, ytr, yte = digits_split
    svm = LinearSVM(C=0.1, multi_class="weston_watkins").fit(Xtr, ytr)
    from dlstudy.svm import primal_objective

    def P(W, b):
        return primal_objective(torch.tensor(W.T), torch.tensor(b), torch.tensor(Xtr), torch.tensor(ytr),
                                0.1, "weston_watkins")

    assert svm.objective_ == pytest.approx(P(svm.coef_, svm.intercept_), rel=1e-9)
    assert svm.objective_ < P(np.zeros_like(svm.coef_), np.zeros(10))
    rng = np.random.default_rng(0)
    for _ in range(5):  # no random nearby point is better: the objective was decreased to its minimum
        assert svm.objective_ <= P(svm.coef_ + 1e-2 * rng.standard_normal(svm.coef_.shape), svm.intercept_)
    assert svm.score(Xte, yte) > 0.93


def _ww_loss(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """sum_i sum_{k != y_i} max(0, 1 + z_ik - z_iy_i), W (D, K): plain NumPy, no shared code."""
    Z = X @ W + b
    L = np.maximum(0.0, 1.0 + Z - Z[np.arange(len(y)), y][:, None])
    L[np.arange(len(y)), y] = 0.0
    return float(L.sum())


def _ww_qp_oracle(X: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """Weston-Watkins as the quadratic program of the 1999 paper, solved by SciPy's SLSQP:

        min 1/2 ||W||^2 + C sum xi_ik   s.t.  xi_ik >= 1 + z_ik - z_iy_i,  xi_ik >= 0   (k != y_i)

    over v = (W (D*K, row-major), b (K), xi (one per pair)): no smoothing, no Newton, nothing of ours."""
    n, d = X.shape
    K = int(y.max()) + 1
    pairs = [(i, k) for i in range(n) for k in range(K) if k != y[i]]
    m = d * K + K
    A = np.zeros((len(pairs), m + len(pairs)))  # A v >= 1 is xi_ik - (z_ik - z_iy_i) >= 1
    for p, (i, k) in enumerate(pairs):
        A[p, k:d * K:K] -= X[i]
        A[p, y[i]:d * K:K] += X[i]
        A[p, d * K + k] -= 1.0
        A[p, d * K + y[i]] += 1.0
        A[p, m + p] = 1.0
    res = minimize(lambda v: 0.5 * v[:d * K] @ v[:d * K] + C * v[m:].sum(),
                   np.concatenate([np.zeros(m), np.ones(len(pairs))]),  # feasible start
                   jac=lambda v: np.concatenate([v[:d * K], np.zeros(K), np.full(len(pairs), C)]),
                   method="SLSQP", bounds=[(None, None)] * m + [(0, None)] * len(pairs),
                   constraints=[{"type": "ineq", "fun": lambda v: A @ v - 1.0, "jac": lambda v: A}],
                   options={"ftol": 1e-15, "maxiter": 2000})
    return res.x[:d * K].reshape(d, K), res.x[d * K:m]


def test_weston_watkins_equals_an_independent_qp_oracle():
    rng = np.random.default_rng(0)
    n, d, K, C = 36, 5, 3, 1.0
    y = np.repeat(np.arange(K), n // K)
    X = rng.normal(size=(n, d)) + 1.5 * np.eye(K, d)[y]  # overlapping classes: active and inactive pairs
    W_or, b_or = _ww_qp_oracle(X, y, C)
    P_or = 0.5 * float((W_or ** 2).sum()) + C * _ww_loss(W_or, b_or, X, y)
    svm = LinearSVM(C=C, multi_class="weston_watkins", tol=1e-6).fit(X, y)
    P = 0.5 * float((svm.coef_ ** 2).sum()) + C * _ww_loss(svm.coef_.T, svm.intercept_, X, y)
    assert svm.converged_ and P == pytest.approx(svm.objective_, rel=1e-12)
    assert abs(P - P_or) <= 1e-6 * P_or, (P, P_or)  # measured: 6.5e-8 apart
    assert P - P_or <= svm.dual_gap_  # the certificate holds against the true optimum
    # P is 1-strongly convex in W, so ||W - W*||_F^2 <= 2 (P - P*): 1e-6 relative (P ~ 8.7) allows 4e-3
    np.testing.assert_allclose(svm.coef_.T, W_or, atol=1e-3)
    # the loss sees only differences of scores: the bias is defined up to a common shift
    np.testing.assert_allclose(svm.intercept_ - svm.intercept_.mean(), b_or - b_or.mean(), atol=1e-3)


@pytest.mark.parametrize("name", sorted(FORMULATIONS))
def test_gradients_and_hessian_match_autograd(name):
    form = FORMULATIONS[name]
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(7, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    target, mu = form.target(y, 4, torch.float64), 0.3
    total = form.value(Z, target, mu).sum()
    (g_auto,) = torch.autograd.grad(total, Z, create_graph=True)
    G, curv = form.grad(Z.detach(), target, mu)
    torch.testing.assert_close(G, g_auto.detach())
    S = torch.randn(7, 4, dtype=torch.float64, generator=gen)
    (h_auto,) = torch.autograd.grad((g_auto * S).sum(), Z)
    hvp = curv * S if form.hvp is None else form.hvp(curv, S, target)
    torch.testing.assert_close(hvp, h_auto)


def test_estimator_contract_clone_and_params(digits):
    X, y = digits
    svm = LinearSVM(C=0.5, multi_class="crammer_singer", max_iter=50)
    assert svm.get_params()["C"] == 0.5 and not hasattr(svm, "coef_")
    copy = clone(svm)
    assert copy.get_params() == svm.get_params() and copy is not svm
    assert svm.set_params(C=2.0) is svm and svm.C == 2.0
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        svm.set_params(bogus=1)
    fitted = LinearSVM(C=0.1).fit(X, y)
    assert fitted.coef_.shape == (10, 64) and fitted.intercept_.shape == (10,) and fitted.n_iter_ > 0
    assert fitted.decision_function(X[:5]).shape == (5, 10)
    proba = fitted.predict_proba(X[:20])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X[:20]))
    assert fitted.calibration_ == "train"
    assert fitted.calibrate(X[:300], y[:300]).calibration_ == "heldout" and fitted.temperature_ > 0


def test_not_fitted_raises_sklearn_not_fitted_error(digits, tmp_path):
    X, _ = digits
    svm = LinearSVM()
    for call in (svm.predict, svm.decision_function, svm.predict_proba, lambda X: svm.score(X, np.zeros(len(X))),
                 lambda X: svm.calibrate(X, np.zeros(len(X))), lambda X: svm.save(tmp_path / "m.npz")):
        with pytest.raises(NotFittedError, match="not fitted"):
            call(X)


@pytest.mark.parametrize("multi_class", ["ovr", "crammer_singer"])
def test_two_classes_decision_function_is_one_column(digits, multi_class):
    X, y = digits
    keep = (y == 3) | (y == 8)
    X, labels = X[keep], np.where(y[keep] == 3, "three", "eight")  # classes_ = ['eight', 'three']
    svm = LinearSVM(C=0.1, multi_class=multi_class, tol=1e-6 if multi_class == "ovr" else 1e-3).fit(X, labels)
    margin, scores = svm.decision_function(X), svm._decision_matrix(X)
    assert margin.shape == (len(X),) and scores.shape == (len(X), 2)
    np.testing.assert_allclose(margin, (scores[:, 1] - scores[:, 0]) / 2)
    np.testing.assert_array_equal(svm.predict(X), svm.classes_[(margin > 0).astype(int)])  # > 0: classes_[1]
    assert svm.predict_proba(X).shape == (len(X), 2)
    if multi_class == "ovr":  # the two binary problems are mirror images: the margin is each one's own score
        np.testing.assert_allclose(margin, scores[:, 1], rtol=1e-3, atol=1e-3 * np.abs(margin).max())


def test_sample_weight_equals_repeating_and_removing_rows(digits_split):
    Xtr, _, ytr, _ = digits_split
    rng = np.random.default_rng(0)
    sw = rng.integers(0, 4, len(ytr))  # 0: removed, 2 and 3: repeated
    for standardize in (False, True):
        weighted = LinearSVM(C=0.1, tol=1e-9, standardize=standardize).fit(Xtr, ytr, sample_weight=sw)
        repeated = LinearSVM(C=0.1, tol=1e-9, standardize=standardize).fit(np.repeat(Xtr, sw, 0), np.repeat(ytr, sw))
        # the same problem, summed in another order: equal objectives; coefficients equal to the solver's
        # tolerance (a gap of 1e-9 P bounds them by sqrt(2e-9 P); measured <= 4e-6 apart, coefficients ~0.1)
        assert weighted.objective_ == pytest.approx(repeated.objective_, rel=1e-9)
        np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=2e-5)
        np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, atol=2e-5)
        assert weighted.temperature_ == pytest.approx(repeated.temperature_, rel=1e-6)


def test_sample_weight_multiplies_like_class_weight():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(0, 1, (200, 3)), rng.normal(1, 1, (60, 3)), rng.normal(-1, 1, (40, 3))])
    y = np.repeat([0, 1, 2], [200, 60, 40])
    by_class = LinearSVM(C=0.5, tol=1e-9, class_weight={0: 0.5, 1: 2.0}).fit(X, y)
    by_sample = LinearSVM(C=0.5, tol=1e-9).fit(X, y, sample_weight=np.array([0.5, 2.0, 1.0])[y])
    np.testing.assert_allclose(by_sample.coef_, by_class.coef_, rtol=1e-7, atol=1e-10)
    both = LinearSVM(C=0.5, tol=1e-9, class_weight={0: 0.5}).fit(X, y, sample_weight=np.array([1.0, 2.0, 1.0])[y])
    np.testing.assert_allclose(both.coef_, by_class.coef_, rtol=1e-7, atol=1e-10)  # the two multiply
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        LinearSVM().fit(X, y, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="finite and >= 0"):
        LinearSVM().fit(X, y, sample_weight=-np.ones(len(y)))


def test_string_and_noncontiguous_labels(digits_split):
    Xtr, Xte, ytr, yte = digits_split
    names = np.array([f"class-{v * 7}" for v in range(10)])
    by_int = LinearSVM(C=0.1).fit(Xtr, ytr * 7 + 3)
    by_str = LinearSVM(C=0.1).fit(Xtr, names[ytr])
    np.testing.assert_array_equal(by_int.classes_, np.arange(10) * 7 + 3)
    np.testing.assert_array_equal(by_str.predict(Xte), names[(by_int.predict(Xte) - 3) // 7])
    assert by_str.score(Xte, names[yte]) == by_int.score(Xte, yte * 7 + 3)


def test_class_weight():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (300, 2)), rng.normal(1.2, 1, (20, 2))])
    y = np.array([0] * 300 + [1] * 20)
    plain = LinearSVM(C=1.0).fit(X, y)
    balanced = LinearSVM(C=1.0, class_weight="balanced").fit(X, y)
    recall = lambda m: float(np.mean(m.predict(X[y == 1]) == 1))  # noqa: E731
    assert recall(balanced) > recall(plain)
    as_dict = LinearSVM(C=1.0, class_weight={0: 320 / 600, 1: 320 / 40}).fit(X, y)
    np.testing.assert_allclose(as_dict.coef_, balanced.coef_, rtol=1e-5, atol=1e-8)
    doubled = LinearSVM(C=1.0, class_weight={0: 2.0, 1: 2.0}).fit(X, y)
    np.testing.assert_allclose(doubled.coef_, LinearSVM(C=2.0).fit(X, y).coef_, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("bad, match", [
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 70, np.nan, X), y), "NaN or inf.*row 1, column 6"),
    (lambda X, y: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.inf, X), y), "NaN or inf"),
    (lambda X, y: (X, np.zeros_like(y)), "at least 2 classes"),
    (lambda X, y: (X, y[:-1]), "one label per row"),
])
def test_bad_fit_input(digits, bad, match):
    X, y = bad(*digits)
    with pytest.raises(ValueError, match=match):
        LinearSVM().fit(X, y)


def test_bad_params_and_predict_input(digits):
    X, y = digits
    for C in (0, -1.0):
        with pytest.raises(ValueError, match="C must be a number > 0"):
            LinearSVM(C=C).fit(X, y)
    with pytest.raises(ValueError, match="multi_class must be one of"):
        LinearSVM(multi_class="ovo").fit(X, y)
    with pytest.raises(ValueError, match="not fitted"):
        LinearSVM().predict(X)
    svm = LinearSVM(C=0.1).fit(X, y)
    with pytest.raises(ValueError, match="X has 63 features, but LinearSVM is expecting 64 features"):
        svm.predict(X[:, :63])
    with pytest.raises(ValueError, match="predict: X contains NaN"):
        svm.predict(np.full((2, 64), np.nan))


def test_max_iter_warns_and_batching_matches(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        LinearSVM(C=1.0, max_iter=1).fit(X, y)
    # Both paths stop anywhere within their duality gap, so compare them within what the gaps certify: P is 1-strongly
    # convex in W, so ||W - W*||_F <= sqrt(2 gap) for each fit (for its fitted bias: hence the factor 2 of slack).
    # A fixed atol does not do: a coefficient near 0 was 1.1e-6 in one fit and 8e-10 in the other (numpy 2.4.6), within
    # the certified 7.7e-6. A streaming bug (a batch dropped or counted twice) moves W by ~1e-2.
    full = LinearSVM(C=0.1, tol=1e-9).fit(X, y)
    streamed = LinearSVM(C=0.1, tol=1e-9, batch_size=256).fit(X, y)
    certified = np.sqrt(2 * full.dual_gap_) + np.sqrt(2 * streamed.dual_gap_)
    assert 0 < certified < 1e-4
    assert np.linalg.norm(streamed.coef_ - full.coef_) <= 2 * certified
    np.testing.assert_allclose(streamed.intercept_, full.intercept_, rtol=0, atol=1e-5)
    assert streamed.objective_ == pytest.approx(full.objective_, rel=1e-9)


def test_train_accuracy_attribute_equals_score_on_train():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    labels = np.array(["d" + str(v) for v in y])  # non-integer labels go through classes_
    model = LinearSVM(C=0.1).fit(X, labels)
    assert model.train_accuracy_ == pytest.approx(model.score(X, labels))
