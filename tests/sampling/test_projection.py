"""Tests of influence_core.sampling.projection (PCA and UMAP 2-D maps)."""

from __future__ import annotations

import numpy as np
import pytest

from influence_core.sampling.projection import project_2d, warm_up_umap


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 70)[:200]
    X = rng.normal(size=(200, 10)) + 6 * np.eye(3, 10)[labels]
    return X, labels


def test_pca_shape_determinism_and_variance_order(blobs):
    X, _ = blobs
    Y = project_2d(X, "pca")
    assert Y.shape == (200, 2) and Y.dtype == np.float64
    np.testing.assert_array_equal(Y, project_2d(X, "pca"))
    assert Y[:, 0].var() >= Y[:, 1].var()
    # the two axes capture the top-2 singular values of the centred data
    s = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(np.sort(np.linalg.norm(Y, axis=0))[::-1], s[:2], rtol=1e-8)


def test_pca_one_dimensional_input():
    Y = project_2d(np.arange(5.0)[:, None], "pca")
    assert Y.shape == (5, 2) and np.all(Y[:, 1] == 0)
    np.testing.assert_allclose(np.abs(Y[:, 0]), [2, 1, 0, 1, 2])


@pytest.mark.parametrize(
    "X,msg",
    [
        (np.ones(5), "2-D"),
        (np.ones((2, 3)), "at least 3 points"),
        (np.array([[1.0, np.nan]] * 4), "NaN or inf"),
        (np.array([["a", "b"]] * 4), "real numbers"),
    ],
)
def test_bad_input(X, msg):
    with pytest.raises(ValueError, match=msg):
        project_2d(X)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown projection method 'tsne'.*pca, umap"):
        project_2d(np.ones((5, 2)), method="tsne")


@pytest.mark.slow
def test_umap_runs_and_is_deterministic_with_seed(blobs):
    X, labels = blobs
    warm_up_umap()
    a = project_2d(X, "umap", seed=1)
    b = project_2d(X, "umap", seed=1)
    c = project_2d(X, "umap", seed=2)
    assert a.shape == (200, 2) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # well-separated blobs stay separated: each point's nearest embedded neighbour shares its blob
    d = np.linalg.norm(a[:, None] - a[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert np.mean(labels[d.argmin(axis=1)] == labels) > 0.95


def test_umap_tiny_data_and_bad_options():
    Y = project_2d(np.random.default_rng(0).normal(size=(6, 3)), "umap", n_neighbors=15)  # lowered to n - 1
    assert Y.shape == (6, 2) and np.all(np.isfinite(Y))
    with pytest.raises(ValueError, match="n_neighbors"):
        project_2d(np.ones((5, 2)), "umap", n_neighbors=1)
    with pytest.raises(ValueError, match="min_dist"):
        project_2d(np.ones((5, 2)), "umap", min_dist=-1.0)


def test_umap_options_are_checked_before_any_fit():
    import pytest

    from influence_core.sampling.projection import project_2d

    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="init must be"):
        project_2d(X, "umap", init="tsne")
    with pytest.raises(ValueError, match="n_epochs must be a positive integer"):
        project_2d(X, "umap", n_epochs=0)
