"""Metrics: class-removal F1, prediction consistency, (rank) correlations, top-k overlap, iHVP error.

Pure numpy/scipy functions on arrays. Conventions:

- Correlations of a constant vector are undefined: :func:`spearman`, :func:`pearson` and the row-wise versions
  return ``nan`` for them (and for inputs holding NaN/inf) without emitting warnings. Aggregate with
  ``np.nanmean`` or check ``np.isnan`` when that matters.
- Row-wise functions take score matrices of shape (n_test, n_train), one row per test point, and return (n_test,).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "forget_retain_f1",
    "per_class_accuracy",
    "consistency",
    "spearman",
    "pearson",
    "rowwise_pearson",
    "rowwise_spearman",
    "topk_overlap",
    "rowwise_topk_overlap",
    "relative_error",
    "mean_std",
]


def _labels_1d(name: str, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels; got shape {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels; got dtype {y.dtype}.")
    return y


def forget_retain_f1(y_true: np.ndarray, y_pred: np.ndarray, removed_class: int) -> dict[str, float]:
    """Class-removal quality (see README "Conventions").

    With R = {t : y_t = c} (test points of the removed class c) and K = the other test points:

        forget = 1 - mean_{t in R} [pred_t == y_t]
        retain = mean_{t in K} [pred_t == y_t]
        f1     = 2 forget retain / (forget + retain), and 0 when forget = retain = 0.

    Args:
        y_true, y_pred: (n_test,) integer labels and predictions.
        removed_class: the class c that was removed.
    Returns:
        ``{"forget": float, "retain": float, "f1": float}``, each in [0, 1].
    """
    y_true = _labels_1d("y_true", y_true)
    y_pred = _labels_1d("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; got {y_true.shape} and {y_pred.shape}.")
    removed = y_true == removed_class
    if not removed.any():
        raise ValueError(
            f"no test point has the removed class {removed_class}, so forgetting cannot be measured; "
            "use a test set that contains that class."
        )
    if removed.all():
        raise ValueError(
            f"every test point has the removed class {removed_class}, so retention cannot be measured; "
            "use a test set that also contains other classes."
        )
    correct = y_true == y_pred
    forget = 1.0 - float(correct[removed].mean())
    retain = float(correct[~removed].mean())
    f1 = 0.0 if forget + retain == 0 else 2.0 * forget * retain / (forget + retain)
    return {"forget": forget, "retain": retain, "f1": f1}


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) accuracy on each class's points (nan for a class without points)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    total = np.bincount(y_true, minlength=n_classes).astype(float)
    correct = np.bincount(y_true[y_true == y_pred], minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.where(total > 0, total, 1), np.nan)


def consistency(pred_before: np.ndarray, pred_after: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Agreement ``mean_{t in mask} [pred_before_t == pred_after_t]`` of two (n,) prediction vectors.

    ``mask`` is an (n,) boolean selection (e.g. the test points outside the removed class); None means all points.
    """
    a = _labels_1d("pred_before", pred_before)
    b = _labels_1d("pred_after", pred_after)
    if a.shape != b.shape:
        raise ValueError(f"pred_before and pred_after must have the same shape; got {a.shape} and {b.shape}.")
    if mask is None:
        mask = np.ones(a.shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != a.shape:
        raise ValueError(
            f"mask must be a boolean array of shape {a.shape}; got dtype {mask.dtype}, shape {mask.shape}."
        )
    if not mask.any():
        raise ValueError("mask selects no points; consistency needs at least one point.")
    return float(np.mean(a[mask] == b[mask]))


def _pair_1d(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1-D arrays of the same length; got shapes {a.shape} and {b.shape}.")
    if a.size < 2:
        raise ValueError(f"a correlation needs at least 2 values; got {a.size}.")
    return a, b


def _undefined(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the correlation is undefined: non-finite input or a constant vector."""
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return True
    return bool(np.all(a == a[0]) or np.all(b == b[0]))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two (n,) vectors (ties get average ranks); nan if constant or non-finite."""
    a, b = _pair_1d(a, b)
    if _undefined(a, b):
        return float("nan")
    from scipy.stats import spearmanr  # imported on use: scipy.stats costs seconds at the app's cold start

    return float(spearmanr(a, b).statistic)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation ``cov(a, b) / (std a std b)`` of two (n,) vectors; nan if constant or non-finite."""
    a, b = _pair_1d(a, b)
    if _undefined(a, b):
        return float("nan")
    from scipy.stats import pearsonr

    return float(pearsonr(a, b).statistic)


def _pair_2d(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or A.shape != B.shape:
        raise ValueError(
            f"expected two 2-D score matrices (n_test, n_train) of the same shape; got {A.shape} and {B.shape}."
        )
    return A, B


def _rowwise_corr(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Row-wise Pearson of finite-checked matrices; nan for rows that are constant or non-finite."""
    bad = ~(np.all(np.isfinite(A), axis=1) & np.all(np.isfinite(B), axis=1))
    A = np.where(bad[:, None], 0.0, A)
    B = np.where(bad[:, None], 0.0, B)
    Ac = A - A.mean(axis=1, keepdims=True)
    Bc = B - B.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(Ac * Ac, axis=1) * np.sum(Bc * Bc, axis=1))
    bad |= denom == 0
    out = np.full(A.shape[0], np.nan)
    out[~bad] = np.sum(Ac * Bc, axis=1)[~bad] / denom[~bad]
    return np.clip(out, -1.0, 1.0)


def rowwise_pearson(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(n_rows, n) x (n_rows, n) -> (n_rows,) Pearson correlation of each pair of rows; nan where undefined."""
    A, B = _pair_2d(A, B)
    if A.shape[1] < 2:
        raise ValueError(f"a correlation needs at least 2 columns; got {A.shape[1]}.")
    return _rowwise_corr(A, B)


def rowwise_spearman(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(n_test, n_train) x (n_test, n_train) -> (n_test,) Spearman correlation of each pair of rows.

    Pearson correlation of the row-wise average ranks (``scipy.stats.rankdata(axis=1)``); nan for rows that are
    constant or hold NaN/inf.
    """
    A, B = _pair_2d(A, B)
    if A.shape[1] < 2:
        raise ValueError(f"a correlation needs at least 2 columns; got {A.shape[1]}.")
    bad = ~(np.all(np.isfinite(A), axis=1) & np.all(np.isfinite(B), axis=1))
    from scipy.stats import rankdata

    RA = rankdata(np.where(bad[:, None], 0.0, A), axis=1)
    RB = rankdata(np.where(bad[:, None], 0.0, B), axis=1)
    out = _rowwise_corr(RA, RB)
    out[bad] = np.nan
    return out


def _topk_sets(M: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """(r, n) -> (r, n) boolean membership of each row's top-k (ties broken by lower column index)."""
    order = np.argsort(-M if largest else M, axis=1, kind="stable")[:, :k]
    member = np.zeros(M.shape, dtype=bool)
    np.put_along_axis(member, order, True, axis=1)
    return member


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}] (the number of scores per row); got {k!r}.")
    return int(k)


def rowwise_topk_overlap(A: np.ndarray, B: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """(r, n) x (r, n) -> (r,) ``|topk(A_i) ∩ topk(B_i)| / k`` per row; nan for rows holding NaN/inf.

    ``largest=True`` compares the k largest scores (most helpful), False the k smallest (most harmful). Ties are
    broken by the lower column index.
    """
    A, B = _pair_2d(A, B)
    k = _check_k(k, A.shape[1])
    bad = ~(np.all(np.isfinite(A), axis=1) & np.all(np.isfinite(B), axis=1))
    out = np.sum(_topk_sets(A, k, largest) & _topk_sets(B, k, largest), axis=1) / k
    out[bad] = np.nan
    return out


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int, largest: bool = True) -> float:
    """``|topk(a) ∩ topk(b)| / k`` in [0, 1] for two (n,) score vectors (see :func:`rowwise_topk_overlap`)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1-D arrays of the same length; got shapes {a.shape} and {b.shape}.")
    return float(rowwise_topk_overlap(a[None], b[None], k, largest)[0])


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float | np.ndarray:
    """``||estimate - reference||_2 / ||reference||_2``: a float for 1-D inputs, an (r,) array for (r, d) rows.

    A zero reference gives 0 when the estimate is zero too and inf otherwise.
    """
    est = np.asarray(estimate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if est.shape != ref.shape or est.ndim not in (1, 2):
        raise ValueError(
            f"estimate and reference must be 1-D vectors or 2-D row batches of the same shape; got "
            f"{est.shape} and {ref.shape}."
        )
    num = np.linalg.norm(est - ref, axis=-1)
    den = np.linalg.norm(ref, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))
    return float(out) if est.ndim == 1 else out


def mean_std(values) -> tuple[float, float]:
    """(mean, sample std with ddof=1) of a 1-D sequence; std is 0 for a single value. NaNs propagate."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_std needs at least one value.")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
