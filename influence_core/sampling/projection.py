"""2-D maps of features or logits (PCA, UMAP), e.g. to show where a Hessian sample lies in the data.

PCA (scikit-learn) is fast and exactly deterministic. UMAP (umap-learn, an optional dependency imported only when
used) is slower, needs numba compilation on first use (call :func:`warm_up_umap` once at setup), and is
deterministic only because a seed is always passed (which also makes it single-threaded).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

__all__ = ["project_2d", "warm_up_umap", "PROJECTION_METHODS"]

PROJECTION_METHODS = ("pca", "umap")


def project_2d(
    X: np.ndarray,
    method: str = "pca",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    n_epochs: int | None = None,
    init: str | None = None,
) -> np.ndarray:
    """Embed the rows of X in the plane.

    Args:
        X: (n, d) finite values, n >= 3 (e.g. penultimate features or logits).
        method: ``"pca"`` (first two principal components; a zero second column when d == 1) or ``"umap"``.
        seed: random state (UMAP's ``random_state``; PCA is deterministic anyway).
        n_neighbors: UMAP neighbourhood size, >= 2; lowered to n - 1 when the data have fewer points.
        min_dist: UMAP minimum distance between embedded points, >= 0.
        n_epochs: UMAP optimisation epochs (None: umap-learn's default, 500 below 10,000 points); fewer is faster
            (the app uses 200 with ``init="pca"``, which starts the layout close to its end).
        init: UMAP initial layout, "spectral" (default; "random" below 11 points) or "pca" (faster, and stable
            across runs of similar data).
    Returns:
        (n, 2) float64 coordinates, row i for X[i].
    """
    if method not in PROJECTION_METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose one of {', '.join(PROJECTION_METHODS)}.")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (n points, d dims); got shape {X.shape}.")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError(f"X must hold real numbers; got dtype {X.dtype}.")
    n, d = X.shape
    if n < 3 or d < 1:
        raise ValueError(f"a 2-D map needs at least 3 points with at least 1 dimension; got shape {X.shape}.")
    X = X.astype(np.float64, copy=False)
    if not np.all(np.isfinite(X)):
        raise ValueError(
            f"X contains NaN or inf in {int(np.sum(~np.all(np.isfinite(X), axis=1)))} row(s); remove "
            "or fix those rows first."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")

    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, d)
        Y = PCA(n_components=k, svd_solver="full").fit_transform(X)
        return np.hstack([Y, np.zeros((n, 2 - k))]) if k < 2 else Y.astype(np.float64)

    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise ValueError(f"n_neighbors must be an integer >= 2; got {n_neighbors!r}.")
    if not np.isfinite(min_dist) or min_dist < 0:
        raise ValueError(f"min_dist must be a finite number >= 0; got {min_dist!r}.")
    try:
        import umap
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "method='umap' needs the umap-learn package: pip install 'influence-explorer[app]' "
            "(or pip install umap-learn), or use method='pca'."
        ) from exc
    # Spectral initialisation needs more points than the embedding has dimensions plus a margin.
    if init not in (None, "spectral", "pca", "random"):
        raise ValueError(f"init must be 'spectral', 'pca' or 'random'; got {init!r}.")
    if n_epochs is not None and (
        isinstance(n_epochs, bool) or not isinstance(n_epochs, (int, np.integer)) or n_epochs < 1
    ):
        raise ValueError(f"n_epochs must be a positive integer or None; got {n_epochs!r}.")
    init = "random" if n <= 10 else (init or "spectral")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=int(min(n_neighbors, n - 1)),
        min_dist=float(min_dist),
        random_state=int(seed),
        n_jobs=1,
        init=init,
        n_epochs=None if n_epochs is None else int(n_epochs),
    )
    with warnings.catch_warnings():
        # umap warns that a seed disables parallelism (we ask for that) and about tiny graphs.
        warnings.simplefilter("ignore", UserWarning)
        Y = reducer.fit_transform(X)
    return np.asarray(Y, dtype=np.float64)


def warm_up_umap() -> float:
    """Run UMAP once on tiny random data so numba compiles its kernels now; returns the seconds it took."""
    start = time.perf_counter()
    X = np.random.default_rng(0).normal(size=(40, 4))
    project_2d(X, method="umap", seed=0, n_neighbors=5)
    return time.perf_counter() - start
