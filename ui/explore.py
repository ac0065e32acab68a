"""Explorer helpers (no Streamlit): nearest neighbours in feature space, named slices of the training set and how
each sampler's Hessian sample treats a slice.

A **slice** is a set of training rows (kept by name, e.g. from a box or lasso selection on the map). For a slice A
of the n training points and a Hessian sample S with weights w (H_S = Σ_{i∈S} w_i ∇²ℓ_i / Σ_{i∈S} w_i):

- ``in sample``: |S ∩ A|, against the ``expected`` m·|A|/n of a uniform draw;
- ``weight share``: Σ_{i∈S∩A} w_i / Σ_{i∈S} w_i, the share of the Hessian estimate that A's points carry, against
  the ``population share`` |A|/n they carry in the full-data Hessian;
- ``curvature share``: the same with each point's Gauss-Newton curvature proxy c_i = 1 − Σ_k p_ik²
  (``influence_core.sampling.samplers.curvature_proxy``): Σ_{S∩A} w_i c_i / Σ_S w_i c_i against
  Σ_A c_i / Σ_all c_i;
- ``slice influence``: Σ_{j∈A} score[t, j] on the chosen test point t, the first-order predicted increase of t's
  loss if the whole slice were removed, under that sample's Hessian (and the full-data one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

MAX_SLICES = 12
MAX_SLICE_NAME = 40


def nearest_neighbours(
    features: np.ndarray, query: np.ndarray, k: int = 8, exclude: int | None = None, metric: str = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` training rows nearest to ``query`` (d,) among ``features`` (n, d) (cosine distance by default:
    the k-means samplers cluster L2-normalised features), excluding row ``exclude`` (the query itself when it is a
    training point). Returns (rows (k,), distances (k,)), nearest first."""
    X = np.asarray(features, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64).reshape(1, -1)
    if X.ndim != 2 or q.shape[1] != X.shape[1]:
        raise ValueError(f"query has {q.shape[1]} features but the training features have shape {X.shape}")
    k = int(k)
    if not 1 <= k < len(X):
        raise ValueError(f"k must be between 1 and {len(X) - 1}, got {k}")
    extra = 1 if exclude is not None else 0
    nn_ = NearestNeighbors(n_neighbors=k + extra, metric=metric).fit(X)
    dist, rows = nn_.kneighbors(q)
    dist, rows = dist[0], rows[0]
    if exclude is not None:
        keep = rows != int(exclude)
        dist, rows = dist[keep][:k], rows[keep][:k]
    return rows.astype(np.int64), dist


def clean_slice_name(name: str, existing: Mapping[str, Any]) -> str:
    """A slice name: stripped, at most 40 characters; refused when empty or when 12 slices are kept already
    (a new name; an existing one is replaced)."""
    text = " ".join(str(name or "").split())[:MAX_SLICE_NAME]
    if not text:
        raise ValueError("give the slice a name (e.g. 'thin ones')")
    if text not in existing and len(existing) >= MAX_SLICES:
        raise ValueError(f"at most {MAX_SLICES} slices are kept; delete one first")
    return text


def class_mix(labels: np.ndarray, rows: Sequence[int], n_classes: int) -> np.ndarray:
    """(C,) class shares of ``rows`` (sums to 1; zeros for an empty slice)."""
    counts = np.bincount(np.asarray(labels)[np.asarray(rows, dtype=np.int64)], minlength=n_classes).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def slice_against_sample(
    rows: Sequence[int], n: int, sample_indices: np.ndarray, sample_weights: np.ndarray | None, curvature: np.ndarray
) -> dict[str, float]:
    """How one Hessian sample treats the slice ``rows`` (see the module doc): in sample, expected, weight share,
    population share, curvature share in the sample and in the population."""
    A = np.zeros(int(n), dtype=bool)
    A[np.asarray(rows, dtype=np.int64)] = True
    idx = np.asarray(sample_indices, dtype=np.int64)
    w = np.ones(len(idx)) if sample_weights is None else np.asarray(sample_weights, dtype=np.float64)
    c = np.asarray(curvature, dtype=np.float64)
    inside = A[idx]
    wc = w * c[idx]
    return {
        "in sample": int(inside.sum()),
        "expected (uniform)": float(len(idx) * A.sum() / n),
        "weight share": float(w[inside].sum() / w.sum()) if w.sum() > 0 else float("nan"),
        "population share": float(A.sum() / n),
        "curvature share (sample)": float(wc[inside].sum() / wc.sum()) if wc.sum() > 0 else float("nan"),
        "curvature share (population)": float(c[A].sum() / c.sum()) if c.sum() > 0 else float("nan"),
    }


def slice_influence(scores: np.ndarray, rows: Sequence[int]) -> dict[str, float]:
    """Σ and mean of the scores (n,) of the slice's rows: the predicted change of the test loss if the slice were
    removed (first order), and per point."""
    s = np.asarray(scores, dtype=np.float64)[np.asarray(rows, dtype=np.int64)]
    return {"slice influence (sum)": float(s.sum()), "mean score": float(s.mean()) if s.size else float("nan")}
