"""Solvers against the exact solve: a dense SPD matrix with a known solution, and logistic regression on digits."""

import warnings

import numpy as np
import pytest
import torch

from influence_core.curvature import Objective
from influence_core.solvers import (
    ExactInverse, SolverDivergedError, SolverError, SolverNotConvergedWarning, solve_cg, solve_exact, solve_lissa,
)


@pytest.fixture(scope="module")
def spd():
    gen = np.random.default_rng(0)
    Q, _ = np.linalg.qr(gen.normal(size=(40, 40)))
    A = torch.as_tensor(Q @ np.diag(np.linspace(0.05, 2.0, 40)) @ Q.T)
    X_true = torch.as_tensor(gen.normal(size=(3, 40)))
    B = X_true @ (A + 0.1 * torch.eye(40))  # (A + δI) x = b with δ = 0.1
    return A, B, X_true


def test_solvers_recover_known_solution(spd):
    A, B, X_true = spd
    op = lambda V: V @ A  # noqa: E731
    for result in (solve_exact(A, B, 0.1), solve_cg(op, B, 0.1, tol=1e-10),
                   solve_lissa(op, B, 0.1, tol=1e-10, max_iter=20_000)):
        assert result.converged
        np.testing.assert_allclose(result.x.numpy(), X_true.numpy(), rtol=1e-7, atol=1e-8)
    cg = solve_cg(op, B, 0.1, tol=1e-10)
    assert cg.iterations <= 40 + 1  # CG converges in at most dim iterations in exact arithmetic
    assert cg.trace[-1] <= 1e-10 and len(cg.trace) == cg.iterations


def test_cg_and_lissa_within_2_percent_of_exact_on_logistic_regression(digits, digits_logreg64):
    """Convex model (wd = 1e-2): CG and LiSSA, the latter with its automatic scale, match the direct solve."""
    obj = Objective(digits_logreg64, digits.X_train, digits.y_train, digits_logreg64.weight_decay)
    G = obj.per_sample_grads(torch.as_tensor(digits.X_test[:5]), torch.as_tensor(digits.y_test[:5]))
    exact = solve_exact(obj.hessian(), G, 0.0).x
    rel = lambda x: ((x - exact).norm(dim=1) / exact.norm(dim=1)).max().item()  # noqa: E731
    cg = solve_cg(obj.operator(), G, 0.0, tol=1e-6)
    lissa = solve_lissa(obj.operator(), G, 0.0, tol=1e-4)  # no scale given: set from power iteration
    assert cg.converged and lissa.converged
    assert lissa.scale > obj.largest_eigenvalue()  # the automatic scale bounds the spectrum
    assert rel(cg.x) < 0.02
    assert rel(lissa.x) < 0.02
    # the trace is the relative residual, and it ends below the tolerance
    assert lissa.trace[-1] <= 1e-4 < lissa.trace[0]


def test_lissa_with_too_small_scale_raises_documented_error(digits, digits_logreg64):
    obj = Objective(digits_logreg64, digits.X_train, digits.y_train, digits_logreg64.weight_decay)
    g = obj.per_sample_grads(torch.as_tensor(digits.X_test[:1]), torch.as_tensor(digits.y_test[:1]))
    lam = obj.largest_eigenvalue()
    with pytest.raises(SolverDivergedError, match="scale") as info:
        solve_lissa(obj.operator(), g, 0.0, scale=0.3 * lam, max_iter=500)
    assert "damping" in str(info.value) and len(info.value.trace) > 1
    assert info.value.trace[-1] > info.value.trace[0]


def test_indefinite_hessian_is_reported_not_returned(digits, digits_mlp):
    """The Hessian of a small subset of an MLP is indefinite: CG says so and suggests what to change."""
    obj = Objective(digits_mlp, digits.X_train, digits.y_train, digits_mlp.weight_decay)
    idx = np.random.default_rng(0).choice(digits.n_train, 32, replace=False)
    H = obj.hessian(idx)
    lam_min = torch.linalg.eigvalsh(H.double())[0].item()
    assert lam_min < 0
    g = obj.per_sample_grads(torch.as_tensor(digits.X_test[:4]), torch.as_tensor(digits.y_test[:4]))
    with pytest.raises(SolverError, match="gauss_newton"):
        solve_cg(obj.operator(idx), g, 0.0, tol=1e-8, max_iter=5000)
    # Gauss-Newton on the same sample is positive definite and CG converges
    assert solve_cg(obj.operator(idx, mode="gauss_newton"), g, 0.0, tol=1e-6).converged


def test_nonconvergence_warns_or_raises_with_trace(spd):
    A, B, _ = spd
    op = lambda V: V @ A  # noqa: E731
    with pytest.warns(SolverNotConvergedWarning, match="did not reach"):
        result = solve_cg(op, B, 0.0, tol=1e-12, max_iter=3)
    assert not result.converged and len(result.trace) == 3
    with pytest.raises(SolverError, match="increase max_iter"):
        solve_lissa(op, B, 0.0, tol=1e-12, max_iter=5, on_nonconvergence="raise")


def test_solver_input_validation(spd):
    A, B, _ = spd
    op = lambda V: V @ A  # noqa: E731
    with pytest.raises(ValueError, match="damping"):
        solve_cg(op, B, -1.0)
    with pytest.raises(ValueError, match="damping"):
        solve_lissa(op, B, float("nan"))
    bad = B.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        solve_cg(op, bad)
    with pytest.raises(SolverError, match="singular"):
        ExactInverse(torch.zeros(4, 4, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="square"):
        ExactInverse(torch.zeros(4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_cg(op, B, 0.1, tol=1e-8)  # a converging solve emits no warning
