"""Arnoldi (top-k eigenpairs of the curvature on the sample) against the exact solve on logistic regression."""

import numpy as np
import pytest
import torch

from influence_core import InfluenceCalculator
from influence_core.curvature.objective import Objective
from influence_core.solvers.arnoldi import ArnoldiInverse, fit_arnoldi
from influence_core.solvers.factor_io import FactorFileError
from influence_core.solvers.kfac import KFACInverse


@pytest.fixture(scope="module")
def obj(digits, digits_logreg64):
    return Objective(digits_logreg64, digits.X_train, digits.y_train, digits_logreg64.weight_decay)


@pytest.fixture(scope="module")
def rhs(obj):
    return obj.per_sample_grads(obj.X[:3], obj.y[:3])


def _exact(obj, B, idx=None, mode="hessian", damping=0.0):
    H = obj.hessian(idx, mode=mode)
    return torch.linalg.solve(H + damping * torch.eye(len(H), dtype=H.dtype), B.T).T


def test_full_rank_equals_exact_solve(obj, rhs):
    idx = np.arange(0, 500, 10)
    inv = fit_arnoldi(obj, idx, rank=obj.n_params, curvature="hessian", damping=0.0)
    assert inv.rank == obj.n_params
    exact = _exact(obj, rhs, idx)
    torch.testing.assert_close(inv.solve(rhs).x, exact, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(inv.with_damping(0.0, complement=True).solve(rhs).x, exact, rtol=1e-8, atol=1e-10)
    assert (fit_arnoldi(obj, idx, rank=30, curvature="hessian").solve(rhs).x - exact).norm() > 0.1 * exact.norm()


def test_lanczos_rank_covering_the_gauss_newton_range_is_exact_with_complement(obj, rhs):
    """G_S on m = 5 points is wd·I plus a rank <= 5·9 = 45 matrix: rank 50 < p and complement=True is exact;
    the projection alone is not (the rest of the spectrum is left out)."""
    idx = np.arange(0, 50, 10)
    inv = fit_arnoldi(obj, idx, rank=50, curvature="gauss_newton", damping=0.01, complement=True)
    assert inv.hvps > 0  # the Lanczos path, not the dense fallback
    exact = _exact(obj, rhs, idx, "gauss_newton", 0.01)
    torch.testing.assert_close(inv.solve(rhs).x, exact, rtol=1e-7, atol=1e-9)
    projected = inv.with_damping(0.01, complement=False).solve(rhs).x
    assert (projected - exact).norm() > 0.1 * exact.norm()


def test_top_eigenpairs_match_dense_eigendecomposition(obj):
    idx = np.arange(60)
    inv = fit_arnoldi(obj, idx, rank=8, curvature="hessian", seed=3)
    lam, V = np.linalg.eigh(obj.hessian(idx).numpy())
    np.testing.assert_allclose(inv.eigenvalues.numpy(), lam[::-1][:8], rtol=1e-9)
    overlap = np.abs(np.sum(inv.eigenvectors.numpy() * V[:, ::-1][:, :8], axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)


def test_sample_weights_change_the_operator(obj):
    idx = np.arange(30)
    w = np.linspace(0.1, 3.0, 30)
    inv = fit_arnoldi(obj, idx, w, rank=3, curvature="gauss_newton")
    lam = np.linalg.eigvalsh(obj.hessian(idx, w, mode="gauss_newton").numpy())[::-1][:3]
    np.testing.assert_allclose(inv.eigenvalues.numpy(), lam, rtol=1e-9)
    plain = fit_arnoldi(obj, idx, rank=3, curvature="gauss_newton")
    assert abs(plain.eigenvalues[0] - inv.eigenvalues[0]) > 1e-3 * inv.eigenvalues[0]


def test_save_reload_identical_scores(tmp_path, digits, digits_logreg64, obj):
    inv = fit_arnoldi(obj, np.arange(100), rank=20, damping=0.01, cache_dir=tmp_path)
    path = tmp_path / f"arnoldi-{inv.key}.npz"
    assert path.is_file()
    loaded = ArnoldiInverse.load(path, obj)
    calc = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train)
    B = calc.gradients(digits.X_test[:3], digits.y_test[:3])
    np.testing.assert_array_equal(calc.scores_from_ihvp(inv.solve(B).x), calc.scores_from_ihvp(loaded.solve(B).x))
    again = fit_arnoldi(obj, np.arange(100), rank=20, damping=0.01, cache_dir=tmp_path)  # found in the cache
    torch.testing.assert_close(again.eigenvectors, inv.eigenvectors, rtol=0, atol=0)
    with pytest.raises(FactorFileError, match="influence_core.solvers.kfac/1"):
        KFACInverse.load(path)
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:1000])
    with pytest.raises(FactorFileError, match="corrupt or truncated"):
        ArnoldiInverse.load(tmp_path / "cut.npz")


def test_bad_rank_and_damping_give_clear_errors(obj):
    p = obj.n_params
    with pytest.raises(ValueError, match="rank must be >= 1"):
        fit_arnoldi(obj, None, rank=0)
    with pytest.raises(ValueError, match=f"exceeds the number of parameters p = {p}"):
        fit_arnoldi(obj, None, rank=p + 1)
    with pytest.raises(ValueError, match="rank must be an integer"):
        fit_arnoldi(obj, None, rank=2.5)
    with pytest.raises(ValueError, match="damping"):
        fit_arnoldi(obj, None, rank=2, damping=-0.1)
    with pytest.raises(ValueError, match="unknown curvature"):
        fit_arnoldi(obj, None, rank=2, curvature="fisher")
    inv = fit_arnoldi(obj, np.arange(10), rank=2)
    with pytest.raises(ValueError, match=r"right-hand sides must be \(k, "):
        inv.solve(torch.zeros(1, 5, dtype=torch.float64))
