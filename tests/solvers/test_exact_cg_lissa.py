"""Solvers against the exact solve: a dense SPD matrix with a known solution, and logistic regression on digits."""

import warnings

import numpy as np
import pytest
import torch

from influence_core.curvature.objective import Objective
from influence_core.solvers.base import SolverDivergedError, SolverError, SolverNotConvergedWarning
from influence_core.solvers.cg import solve_cg
from influence_core.solvers.exact import ExactInverse, solve_exact
from influence_core.solvers.lissa import solve_lissa


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
    for result in (
        solve_exact(A, B, 0.1),
        solve_cg(op, B, 0.1, tol=1e-10),
        solve_lissa(op, B, 0.1, tol=1e-10, max_iter=20_000),
    ):
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


@pytest.mark.slow
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


# ---------------------------------------------------------------- Gauss-Newton low-rank (Woodbury) exact solve
@pytest.fixture(scope="module")
def tiny_mlp64(digits):
    """A small float64 MLP (p = 610) so the dense Gauss-Newton matrix is the ground truth."""
    from influence_core import train_model

    return train_model(digits, "mlp", seed=0, epochs=3, hidden=(8,), dtype="float64")


@pytest.mark.parametrize("weighted", [False, True])
def test_low_rank_inverse_matches_dense_gauss_newton(digits, tiny_mlp64, weighted):
    """r = 9·40 = 360 < p = 610: Woodbury with the dense U, the matrix-free U and the r >= p Cholesky branch all
    equal the LU solve of the dense G_S + δI to 1e-8 relative."""
    from influence_core.solvers.low_rank import LowRankInverse

    obj = Objective(tiny_mlp64, digits.X_train, digits.y_train, tiny_mlp64.weight_decay)
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(digits.n_train, 40, replace=False))
    w = rng.uniform(0.5, 2.0, len(idx)) if weighted else None
    B = obj.per_sample_grads(torch.as_tensor(digits.X_test[:3]), torch.as_tensor(digits.y_test[:3]))
    want = ExactInverse(obj.hessian(idx, w, "gauss_newton"), 0.01).solve(B).x
    U = obj.gauss_newton_factors(idx, w)
    assert U.shape == (40 * 9, obj.n_params)
    c = obj.weight_decay + 0.01
    for source in (U, obj.gauss_newton_operator(idx, w)):
        got = LowRankInverse(source, c, damping=0.01).solve(B)
        assert got.info["inverse"] == "low_rank" and got.info["rank"] == 360 and got.damping == 0.01
        assert float((got.x - want).norm() / want.norm()) < 1e-8
    big = np.arange(80)  # r = 720 >= p: the p×p Cholesky branch
    wb = rng.uniform(0.5, 2.0, 80) if weighted else None
    want_big = ExactInverse(obj.hessian(big, wb, "gauss_newton"), 0.01).solve(B).x
    got_big = LowRankInverse(obj.gauss_newton_factors(big, wb), c).solve(B)
    assert got_big.info["inverse"] == "dense"
    assert float((got_big.x - want_big).norm() / want_big.norm()) < 1e-8


def test_low_rank_inverse_rejects_bad_input():
    from influence_core.solvers.low_rank import LowRankInverse

    with pytest.raises(ValueError, match="damping > 0"):
        LowRankInverse(torch.ones(2, 5), 0.0)
    with pytest.raises(ValueError, match="5 columns"):
        LowRankInverse(torch.ones(2, 5), 1.0).solve(torch.ones(1, 4))


def test_cg_zero_right_hand_side_column_is_converged_at_zero(spd):
    """A zero column of B is solved by x = 0: no false 'non-positive curvature' error, the other columns exact."""
    A, B, X_true = spd
    op = lambda V: V @ A  # noqa: E731
    B0 = B.clone()
    B0[1] = 0.0
    result = solve_cg(op, B0, 0.1, tol=1e-10)
    assert result.converged
    assert torch.equal(result.x[1], torch.zeros(40, dtype=B.dtype))
    assert torch.allclose(result.x[[0, 2]], X_true[[0, 2]], rtol=1e-6, atol=1e-8)
    everything_zero = solve_cg(op, torch.zeros(2, 40, dtype=B.dtype), 0.1)
    assert everything_zero.converged and everything_zero.iterations == 0
    assert torch.equal(everything_zero.x, torch.zeros(2, 40, dtype=B.dtype))


# ---------------------------------------------------------------- work without an end: stagnation
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cg_stops_on_stagnation_when_tol_is_out_of_reach(spd, dtype):
    """tol=1e-300 with an unbounded max_iter used to run forever (CG's updated residual keeps shrinking long after
    the true residual has hit the precision of the arithmetic)."""
    A, B, _ = spd
    X_true = torch.linalg.solve(A + 0.1 * torch.eye(40, dtype=A.dtype), B.T).T
    A, B = A.to(dtype), B.to(dtype)
    with pytest.warns(SolverNotConvergedWarning, match="stopped on stagnation"):
        result = solve_cg(lambda V: V @ A, B, 0.1, tol=1e-300, max_iter=10**30)
    assert result.stop == "stagnation" and not result.converged and result.iterations < 2000
    assert result.summary()["stop"] == "stagnation"
    err = ((result.x.double() - X_true).norm(dim=1) / X_true.norm(dim=1)).max()
    assert err < (1e-10 if dtype == torch.float64 else 1e-4)  # as accurate as the arithmetic allows
    with pytest.raises(SolverError, match="stagnation.*raise tol"):
        solve_cg(lambda V: V @ A, B, 0.1, tol=1e-300, max_iter=10**30, on_nonconvergence="raise")


def test_lissa_stops_on_stagnation_and_reports_why(spd):
    A, B, _ = spd
    with pytest.warns(SolverNotConvergedWarning, match="stagnation"):
        result = solve_lissa(lambda V: V @ A, B, 0.5, tol=1e-300, max_iter=10**30)
    assert result.stop == "stagnation" and result.iterations < 20_000
    assert torch.allclose(result.x, torch.linalg.solve(A + 0.5 * torch.eye(40, dtype=A.dtype), B.T).T, atol=1e-10)


def test_stop_reason_tolerance_and_max_iter(spd):
    A, B, _ = spd
    op = lambda V: V @ A  # noqa: E731
    assert solve_cg(op, B, 0.1, tol=1e-8).stop == "tolerance"
    assert solve_lissa(op, B, 0.5, tol=1e-6).stop == "tolerance"
    with pytest.warns(SolverNotConvergedWarning, match="max_iter"):
        assert solve_cg(op, B, 0.0, tol=1e-12, max_iter=3).stop == "max_iter"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stagnation_window": 0}, "stagnation_window"),
        ({"stagnation_window": 2.5}, "stagnation_window"),
        ({"damping": "small"}, "damping must be a finite number"),
        ({"damping": True}, "damping must be a finite number"),
    ],
)
def test_solver_options_are_type_checked(spd, options, message):
    A, B, _ = spd
    kwargs = {"damping": 0.1, **options}
    damping = kwargs.pop("damping")
    for solve in (solve_cg, solve_lissa):
        with pytest.raises(ValueError, match=message):
            solve(lambda V: V @ A, B, damping, **kwargs)
