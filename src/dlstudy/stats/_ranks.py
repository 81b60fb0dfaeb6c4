"""Bootstrap of ROC AUC with row weights: a weighted Mann-Whitney statistic per one-vs-rest problem.

A resample gives row j weight w_j (how often it was drawn). For one problem (macro: class k against the rest;
micro: every row's true-class score against all its other scores), with positives i and negatives j,

    2 * numerator = sum_i w_i * sum_j w_j * (2 [s_j < s_i] + [s_j == s_i])
    AUC           = numerator / (W_pos * W_neg),      W_pos = sum_i w_i,   W_neg = sum_j w_j,

which is exactly `dlstudy.metrics.roc_auc_score` on the data set holding row j w_j times. The sorted distinct
positive values v_0 < ... < v_{m-1} cut the score axis into 2m + 1 bins (gap below v_0, v_0 itself, gap, v_1, ...);
a negative with value s falls into bin #(v < s) + #(v <= s). Once, at build time, every negative score is put into
its bin: a sparse (N, G) matrix (G = bins of all problems). For a batch of weights (N, B), the weight in each bin is
one sparse product, its cumulative sum gives every positive's weighted count of negatives below it and tied with it,
and the rest is O(N B). Work per resample is O(N K) multiply-adds; no sort is repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

_F32_EXACT = 2 ** 24  # float32 sums of integer weights are exact below this


@dataclass(frozen=True)
class RankProblems:
    """The one-vs-rest problems of one arm's (N, K) scores, binned for weighted AUC. Only bins holding a negative
    are kept (with continuous scores no negative ties a positive, so about half the bins go)."""

    bins_t: sp.csr_matrix  # (N, G): entry (j, g) = negatives of row j in kept bin g
    offsets: np.ndarray  # (P+1,) kept bins of problem p are offsets[p]:offsets[p+1]
    pos_rows: np.ndarray  # (Q,) rows holding a positive, grouped by problem
    pos_below: np.ndarray  # (Q,) kept bins strictly below each positive's value: bins 0..pos_below-1
    pos_upto: np.ndarray  # (Q,) kept bins up to and including its value (the tie bin)
    pos_starts: np.ndarray  # (P+1,) positives of problem p are pos_rows[pos_starts[p]:pos_starts[p+1]]
    pos_above: np.ndarray  # (G,) 2 * positives above + positives tied, for a negative in each bin (jackknife)
    self_pairs: np.ndarray  # (N,) micro: a row's own positive against its own negatives (2 below + ties); else 0
    average: str  # 'macro' (mean over problems) | 'micro' (one problem)
    pos_problem: sp.csr_matrix  # (Q, P) 1 where positive q belongs to problem p: per-problem sums are one product


def _bin_problem(pos_values: np.ndarray, all_values: np.ndarray):
    """Local bins of every value (0..2m) and, per bin, 2 * positives above + positives tied."""
    v, cnt = np.unique(pos_values, return_counts=True)  # (m,) distinct positive values and their multiplicity
    b = np.searchsorted(v, all_values, "left") + np.searchsorted(v, all_values, "right")
    below = np.r_[0, np.cumsum(cnt)]  # positives below each value index
    above = np.empty(2 * v.size + 1)
    above[0::2] = 2 * (pos_values.size - below)  # gap bins: nothing tied
    above[1::2] = 2 * (pos_values.size - below[1:]) + cnt  # bins at v_l: cnt[l] tied
    return b, above


def _assemble(neg_bins: np.ndarray, pos_parts, above_parts, self_pairs, average: str, n_pool_max: int):
    """RankProblems from (N, M) global bins of the negatives (-1 = not a negative) and, per problem, the
    positives' rows and tie bins (global bin 2l+1 for a positive at its problem's l-th distinct value)."""
    keep = neg_bins >= 0
    g_all = int(sum(a.size for a in above_parts))
    kept = np.bincount(neg_bins[keep], minlength=g_all) > 0
    rank = np.r_[0, np.cumsum(kept)]  # rank[g] = kept bins before global bin g
    indptr = np.r_[0, np.cumsum(keep.sum(axis=1))]
    dtype = np.float32 if n_pool_max < _F32_EXACT else np.float64
    bins_t = sp.csr_matrix((np.ones(int(indptr[-1]), dtype), rank[neg_bins[keep]].astype(np.int32), indptr),
                           shape=(neg_bins.shape[0], int(rank[-1])))
    tie_bin = np.concatenate([b for _, b in pos_parts])
    pos_starts = np.r_[0, np.cumsum([r.size for r, _ in pos_parts])]
    n_pos, n_problems = int(pos_starts[-1]), len(pos_parts)
    pos_problem = sp.csr_matrix((np.ones(n_pos), np.repeat(np.arange(n_problems), np.diff(pos_starts)),
                                 np.arange(n_pos + 1)), shape=(n_pos, n_problems))
    return RankProblems(
        bins_t, rank[np.r_[0, np.cumsum([a.size for a in above_parts])]],
        np.concatenate([r for r, _ in pos_parts]), rank[tie_bin], rank[tie_bin + 1],
        pos_starts, np.concatenate(above_parts)[kept], self_pairs, average, pos_problem)


def macro_problems(y_true: np.ndarray, y_score: np.ndarray) -> RankProblems:
    """Class k against the rest, for every class with at least one positive and one negative (others are NaN
    in `roc_auc_score` for every resample, so the macro mean never sees them)."""
    n, k = y_score.shape
    counts = np.bincount(y_true, minlength=k)
    defined = np.flatnonzero((counts > 0) & (counts < n))
    if defined.size == 0:
        raise ValueError("ROC AUC needs at least two classes present in y_true")
    neg_bins = np.full((n, defined.size), -1, dtype=np.int64)  # (N, P) global bin of each negative
    pos_parts, above_parts, offset = [], [], 0
    for p, c in enumerate(defined):
        col = np.ascontiguousarray(y_score[:, c])
        pos = y_true == c
        b, above = _bin_problem(col[pos], col)
        neg_bins[~pos, p] = b[~pos] + offset
        pos_parts.append((np.flatnonzero(pos), b[pos] + offset))  # a positive ties with itself: bin 2l+1
        above_parts.append(above)
        offset += above.size
    return _assemble(neg_bins, pos_parts, above_parts, np.zeros(n), "macro", n)


def micro_problems(y_true: np.ndarray, y_score: np.ndarray) -> RankProblems:
    """The pooled N*K problem: each row's true-class score is a positive, its K-1 other scores negatives."""
    n, k = y_score.shape
    if k < 2:
        raise ValueError("micro ROC AUC needs y_score with at least 2 columns")
    rows = np.arange(n)
    own = y_score[rows, y_true]  # (N,) true-class scores: the positives
    b, above = _bin_problem(own, y_score.reshape(-1))
    b = b.reshape(n, k)
    is_neg = np.ones((n, k), dtype=bool)
    is_neg[rows, y_true] = False
    neg_bins = b[is_neg].reshape(n, k - 1)
    others = y_score[is_neg].reshape(n, k - 1)
    self_pairs = 2.0 * (others < own[:, None]).sum(axis=1) + (others == own[:, None]).sum(axis=1)
    return _assemble(neg_bins, [(rows, b[rows, y_true])], [above], self_pairs, "micro", n * (k - 1))


def draw_row_weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, N) int64 bootstrap weights: how often each row is drawn in N draws with replacement."""
    rows = rng.integers(0, n, size=(size, n), dtype=np.int32 if n < 2 ** 31 else np.int64).astype(np.int64)
    rows += (np.arange(size, dtype=np.int64) * n)[:, None]
    return np.bincount(rows.reshape(-1), minlength=size * n).reshape(size, n)


def _parts(pr: RankProblems, wt: np.ndarray):
    """numerator * 2, W_pos, W_neg (B, P) and each positive's 2 * below + ties (B, Q), for weights wt (N, B)."""
    binned = pr.bins_t.T @ wt.astype(pr.bins_t.dtype, copy=False)  # (G, B) weight of the negatives in each bin
    cum = np.empty((binned.shape[1], binned.shape[0] + 1))  # (B, 1 + G): cumsum along the contiguous axis
    cum[:, 0] = 0
    cum[:, 1:] = binned.T
    np.cumsum(cum, axis=1, out=cum)  # exact: integer sums below 2^53; cum[:, g] = weight in bins 0..g-1
    base = cum[:, pr.offsets]  # (B, P+1) weight before each problem
    problem_of_pos = np.repeat(np.arange(pr.offsets.size - 1), np.diff(pr.pos_starts))
    below2 = cum[:, pr.pos_below] + cum[:, pr.pos_upto] - 2 * base[:, problem_of_pos]  # (B, Q)
    w_pos_rows = wt[pr.pos_rows].T.astype(np.float64)  # (B, Q)
    # per-problem sums as products with the (Q, P) indicator: exact (integers below 2^53) and ~20x faster than
    # np.add.reduceat along the rows (measured 0.23 ms against 4.1 ms at N = 10^4, B = 64)
    numer2 = np.asarray((w_pos_rows * below2) @ pr.pos_problem)  # (B, P)
    return numer2, np.asarray(w_pos_rows @ pr.pos_problem), np.diff(base, axis=1), below2


def _auc(numer2, w_pos, w_neg):
    den = 2 * w_pos * w_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, numer2 / np.where(den > 0, den, 1), np.nan)


def _average(aucs: np.ndarray, axis: int) -> np.ndarray:
    """Mean over the defined problems (NaN where none is), as roc_auc_score's macro average."""
    defined = ~np.isnan(aucs)
    n = defined.sum(axis=axis)
    total = np.where(defined, aucs, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def weighted_auc(pr: RankProblems, wt: np.ndarray) -> np.ndarray:
    """(B,) macro or micro ROC AUC of the data sets given by row weights wt (N, B)."""
    numer2, w_pos, w_neg, _ = _parts(pr, wt)
    return _average(_auc(numer2, w_pos, w_neg), axis=1)


def jackknife_auc(pr: RankProblems, rows: slice) -> np.ndarray:
    """(J,) macro or micro AUC with each row in `rows` left out, in O(J P) from the full data's counts."""
    n_rows, p = pr.bins_t.shape[0], pr.offsets.size - 1
    numer2, w_pos, w_neg, below2 = (a[0] for a in _parts(pr, np.ones((n_rows, 1))))
    problem = np.repeat(np.arange(p), np.diff(pr.offsets))  # (G,) problem of each bin
    by_problem = sp.csr_matrix((np.ones(problem.size), (np.arange(problem.size), problem)), shape=(problem.size, p))
    part = pr.bins_t[rows]
    n_neg = (part @ by_problem).toarray()  # (J, P) negatives each left-out row takes from each problem
    pairs_neg = (part @ by_problem.multiply(pr.pos_above[:, None]).tocsr()).toarray()  # its pairs as a negative
    j = np.arange(n_rows)[rows]
    pos_problem = np.full(n_rows, -1)
    pos_pairs = np.zeros(n_rows)
    pos_problem[pr.pos_rows] = np.repeat(np.arange(p), np.diff(pr.pos_starts))
    pos_pairs[pr.pos_rows] = below2
    is_pos = (pos_problem[j][:, None] == np.arange(p)).astype(np.float64)  # (J, P)
    # a row that is positive and negative in one problem (micro) had its own pairs removed twice: add them back
    numer_out = numer2 - pairs_neg - is_pos * (pos_pairs[j] - pr.self_pairs[j])[:, None]
    return _average(_auc(numer_out, w_pos - is_pos, w_neg - n_neg), axis=1)
