"""Tests of influence_core.evaluation.metrics against hand-computed values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from influence_core.evaluation.metrics import (
    consistency,
    forget_retain_f1,
    mean_std,
    pearson,
    relative_error,
    rowwise_pearson,
    rowwise_spearman,
    rowwise_topk_overlap,
    spearman,
    topk_overlap,
)

# ---------------------------------------------------------------------------------------------------------------
# forget / retain / F1
# ---------------------------------------------------------------------------------------------------------------


def test_f1_hand_computed():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 2, 1, 1, 0, 2, 2, 2, 1])
    out = forget_retain_f1(y_true, y_pred, removed_class=0)
    # class 0: 1 of 4 still correct -> forget = 0.75; others: 1+0+1+1+1+0 = 4 of 6 -> retain = 2/3
    assert out["forget"] == pytest.approx(0.75)
    assert out["retain"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))
    assert set(out) == {"forget", "retain", "f1"}


def test_f1_perfect_removal():
    y_true = np.array([0, 0, 1, 2])
    out = forget_retain_f1(y_true, np.array([1, 2, 1, 2]), removed_class=0)
    assert out == {"forget": 1.0, "retain": 1.0, "f1": 1.0}


def test_f1_zero_cases():
    y_true = np.array([0, 0, 1, 1])
    # nothing forgotten, nothing retained: both 0 -> f1 = 0 (no division by zero)
    both_zero = forget_retain_f1(y_true, np.array([0, 0, 0, 0]), removed_class=0)
    assert both_zero == {"forget": 0.0, "retain": 0.0, "f1": 0.0}
    # the untouched original model: retains everything, forgets nothing -> f1 = 0
    assert forget_retain_f1(y_true, y_true, removed_class=0)["f1"] == 0.0
    # forgets everything, including every other class -> f1 = 0
    assert forget_retain_f1(y_true, np.array([1, 1, 0, 0]), removed_class=0) == {
        "forget": 1.0,
        "retain": 0.0,
        "f1": 0.0,
    }


def test_f1_errors():
    with pytest.raises(ValueError, match="no test point has the removed class 3"):
        forget_retain_f1(np.array([0, 1]), np.array([0, 1]), removed_class=3)
    with pytest.raises(ValueError, match="every test point has the removed class 0"):
        forget_retain_f1(np.array([0, 0]), np.array([0, 1]), removed_class=0)
    with pytest.raises(ValueError, match="same shape"):
        forget_retain_f1(np.array([0, 1, 1]), np.array([0, 1]), removed_class=0)
    with pytest.raises(ValueError, match="integer"):
        forget_retain_f1(np.array([0.0, 1.0]), np.array([0, 1]), removed_class=0)
    with pytest.raises(ValueError, match="1-D"):
        forget_retain_f1(np.array([[0, 1]]), np.array([[0, 1]]), removed_class=0)


# ---------------------------------------------------------------------------------------------------------------
# consistency
# ---------------------------------------------------------------------------------------------------------------


def test_consistency():
    before = np.array([0, 1, 2, 2, 1])
    after = np.array([0, 2, 2, 1, 1])
    assert consistency(before, after) == pytest.approx(3 / 5)
    mask = np.array([False, True, True, True, False])
    assert consistency(before, after, mask) == pytest.approx(1 / 3)
    assert consistency(before, before, mask) == 1.0


def test_consistency_errors():
    a = np.array([0, 1, 2])
    with pytest.raises(ValueError, match="selects no points"):
        consistency(a, a, np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="boolean array of shape"):
        consistency(a, a, np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        consistency(a, a[:2])


# ---------------------------------------------------------------------------------------------------------------
# correlations
# ---------------------------------------------------------------------------------------------------------------


def test_perfect_and_anti_correlations():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert spearman(a, a**3) == pytest.approx(1.0)  # monotone, not linear
    assert pearson(a, a**3) < 1.0
    assert spearman(a, -np.exp(a)) == pytest.approx(-1.0)


def test_correlation_hand_values():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 3.0, 2.0])
    assert pearson(a, b) == pytest.approx(0.5)  # centred: (-1,0,1).(-1,1,0) / (sqrt2 sqrt2)
    assert spearman(a, b) == pytest.approx(0.5)
    # ties get average ranks: ranks of [1, 1, 2] are [1.5, 1.5, 3]
    assert spearman(np.array([1.0, 1.0, 2.0]), a) == pytest.approx(np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1])


def test_constant_or_nonfinite_input_gives_nan_without_warnings():
    a = np.array([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(spearman(a, np.ones(3)))
        assert np.isnan(pearson(np.ones(3), a))
        assert np.isnan(pearson(a, np.array([1.0, np.nan, 2.0])))
        assert np.isnan(spearman(a, np.array([1.0, np.inf, 2.0])))
        out = rowwise_spearman(np.array([[1.0, 2, 3], [1, 1, 1], [1, 2, np.nan]]), np.array([[3.0, 2, 1]] * 3))
        assert out[0] == pytest.approx(-1.0) and np.isnan(out[1]) and np.isnan(out[2])


def test_correlation_errors():
    with pytest.raises(ValueError, match="same length"):
        pearson(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        spearman(np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="same shape"):
        rowwise_spearman(np.ones((2, 3)), np.ones((3, 2)))


def test_rowwise_matches_scipy():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 40))
    B = A + rng.normal(size=(6, 40))
    B[2] = np.round(B[2])  # ties
    expected = [spearmanr(a, b).statistic for a, b in zip(A, B)]
    np.testing.assert_allclose(rowwise_spearman(A, B), expected, atol=1e-12)
    np.testing.assert_allclose(rowwise_pearson(A, B), [np.corrcoef(a, b)[0, 1] for a, b in zip(A, B)], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# top-k overlap
# ---------------------------------------------------------------------------------------------------------------


def test_topk_overlap_hand_values():
    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    b = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    # top-2: {0,1} vs {0,2} -> 1/2; top-3: {0,1,2} vs {0,2,4} -> 2/3; bottom-2: {3,4} vs {1,3} -> 1/2
    assert topk_overlap(a, b, 2) == pytest.approx(0.5)
    assert topk_overlap(a, b, 3) == pytest.approx(2 / 3)
    assert topk_overlap(a, b, 2, largest=False) == pytest.approx(0.5)
    assert topk_overlap(a, a, 3) == 1.0
    assert topk_overlap(a, -a, 2) == 0.0
    assert topk_overlap(a, b, 5) == 1.0


def test_rowwise_topk_overlap():
    A = np.array([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5]])
    B = np.array([[5.0, 1, 4, 2, 3], [1, 2, 3, 4, 5]])
    np.testing.assert_allclose(rowwise_topk_overlap(A, B, 2), [0.5, 1.0])
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        rowwise_topk_overlap(A, B, 6)
    with pytest.raises(ValueError, match="k must be"):
        topk_overlap(A[0], B[0], 0)


# ---------------------------------------------------------------------------------------------------------------
# relative error and mean/std
# ---------------------------------------------------------------------------------------------------------------


def test_relative_error():
    assert relative_error(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == 0.0
    assert relative_error(np.array([0.0, 4.0]), np.array([3.0, 4.0])) == pytest.approx(3 / 5)
    rows = relative_error(np.array([[1.0, 0], [0, 0], [2, 0]]), np.array([[2.0, 0], [0, 0], [0, 0]]))
    np.testing.assert_allclose(rows, [0.5, 0.0, np.inf])
    assert isinstance(relative_error(np.ones(3), np.ones(3)), float)
    with pytest.raises(ValueError, match="same shape"):
        relative_error(np.ones(3), np.ones(4))


def test_mean_std():
    assert mean_std([2.0]) == (2.0, 0.0)
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5) and std == pytest.approx(np.sqrt(5 / 3))  # ddof = 1
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])
