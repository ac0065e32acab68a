"""``pcg``: the full-data Gauss-Newton solve preconditioned by a Hessian sample, against the dense exact solve."""

import numpy as np
import pytest
import torch

from influence_core.curvature.objective import Objective
from influence_core.solvers.base import SolverError
from influence_core.solvers.cg import solve_cg
from influence_core.solvers.exact import ExactInverse
from influence_core.solvers.pcg import PreconditionedFit, SamplePreconditioner, solve_pcg
from influence_core.solvers.registry import SOLVER_REGISTRY, available_solvers, fit_inverse

DAMPING = 0.01


@pytest.fixture(scope="module")
def small(digits):
    """A float64 MLP with p = 610 on 300 training points: the dense G is the ground truth, and the whole training set
    (r = 9·300 = 2700 >= p) can be the 'sample'."""
    from influence_core import train_model

    model = train_model(digits, "mlp", seed=0, epochs=3, hidden=(8,), dtype="float64")
    obj = Objective(model, digits.X_train[:300], digits.y_train[:300], model.weight_decay)
    B = obj.per_sample_grads(torch.as_tensor(digits.X_test[:4]), torch.as_tensor(digits.y_test[:4]))
    G = obj.hessian(None, None, "gauss_newton")
    want = ExactInverse(G, DAMPING).solve(B).x
    plain = solve_cg(obj.operator(None, None, "gauss_newton"), B, DAMPING, tol=1e-8)
    return obj, B, G, want, plain


@pytest.fixture(scope="module")
def whole(small, digits):
    """The same model on 100 training points (r = 900 >= p = 610): the whole set as the sample is cheap to factor."""
    model = small[0].model
    obj = Objective(model, digits.X_train[:100], digits.y_train[:100], model.weight_decay)
    B = small[1]
    want = ExactInverse(obj.hessian(None, None, "gauss_newton"), DAMPING).solve(B).x
    plain = solve_cg(obj.operator(None, None, "gauss_newton"), B, DAMPING, tol=1e-8)
    return obj, B, want, plain


def rel(x, y):
    return float((x - y).norm() / y.norm())


def test_registered_with_its_options():
    assert "pcg" in available_solvers()
    spec = SOLVER_REGISTRY["pcg"]
    assert {"tol", "max_iter", "rank", "keep", "complement", "eigenvalues", "on_nonconvergence"} == set(spec.options)
    assert "preconditioned" in spec.description


@pytest.mark.parametrize(
    "options", [{}, {"complement": "shift"}, {"eigenvalues": "full", "rank": 20}], ids=["nystrom", "shift", "ritz"]
)
def test_answer_is_the_full_data_solve_whatever_the_sample(small, options):
    """A weighted sample of 40 of the 300 points: the answer is the dense full-data solve, not the sample's."""
    obj, B, G, want, _ = small
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(obj.n, 40, replace=False))
    w = rng.uniform(0.5, 2.0, 40)
    fit = fit_inverse(obj, idx, w, solver="pcg", damping=DAMPING, curvature="gauss_newton", tol=1e-9, **options)
    assert isinstance(fit, PreconditionedFit)
    result = fit.solve(B)
    assert result.converged and result.info["stop"] == "tol" and result.method == "pcg"
    assert len(result.trace) == result.iterations and result.trace[-1] <= 1e-9
    assert rel(result.x, want) < 1e-7
    sample_only = fit_inverse(obj, idx, w, solver="low_rank", damping=DAMPING, curvature="gauss_newton").solve(B).x
    assert rel(sample_only, want) > 0.05  # the sample's own answer is far from it: pcg is not returning that


@pytest.mark.parametrize("m", [30, 80], ids=["r<p", "r>=p"])
def test_preconditioner_equals_its_dense_definition(small, m):
    """P⁻¹ applied matrix-free equals the dense matrix built from the eigenpairs of the sample's G_S, both from the
    (r, r) Gram matrix (30 points: r = 270 < p = 610) and from the (p, p) matrix (80 points: r = 720 >= p)."""
    obj, B, *_ = small
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(obj.n, m, replace=False))
    w = rng.uniform(0.5, 2.0, m)
    GS = obj.hessian(idx, w, "gauss_newton") - obj.weight_decay * torch.eye(obj.n_params, dtype=torch.float64)
    lam, Q = torch.linalg.eigh(GS)
    c = obj.weight_decay + DAMPING
    for complement in ("smallest", "shift"):
        pre = SamplePreconditioner(obj, idx, w, DAMPING, rank=25, complement=complement)
        kept = lam > DAMPING
        order = torch.argsort(lam[kept], descending=True)[:25]
        E, vals = Q[:, kept][:, order], lam[kept][order] + c
        rho = float(vals[-1]) if complement == "smallest" else c
        P_inv = E @ torch.diag(1 / vals) @ E.T + (torch.eye(obj.n_params, dtype=torch.float64) - E @ E.T) / rho
        assert pre.rank == 25 and pre.complement == pytest.approx(rho, rel=1e-9)
        assert (pre.factors is None) == (m * (obj.n_classes - 1) >= obj.n_params)
        np.testing.assert_allclose(
            pre.apply(B).numpy(), (B @ P_inv).numpy(), rtol=1e-7, atol=1e-9 * float(B.abs().max()) / c
        )


def test_whole_training_set_as_the_sample_converges_at_once(whole):
    """Sample = all points: with every eigenpair kept and the complement at wd + δ, P = G + δI, so PCG converges in
    one iteration; the default (eigenpairs above wd + δ) in a few; plain CG takes many more."""
    obj, B, want, plain = whole
    exact_p = fit_inverse(
        obj, None, solver="pcg", damping=DAMPING, curvature="gauss_newton", tol=1e-8, keep="all", complement="shift"
    ).solve(B)
    assert exact_p.iterations == 1 and rel(exact_p.x, want) < 1e-7
    default = fit_inverse(obj, None, solver="pcg", damping=DAMPING, curvature="gauss_newton", tol=1e-8).solve(B)
    assert default.converged and default.iterations <= 15 < 2 * 15 <= plain.iterations
    assert rel(default.x, want) < 1e-7


def test_a_wrong_preconditioner_is_caught(whole):
    """The same iteration with a broken P (eigenvalues on the wrong directions) still converges (P is SPD) but
    needs many more iterations: the iteration counts the benchmark reports depend on P being right."""
    import copy

    obj, B, want, _ = whole
    right = SamplePreconditioner(obj, None, None, DAMPING, keep="all", complement="shift")
    broken = copy.copy(right)
    broken.scale = right.scale.flip(0)  # eigenvalues paired with the wrong eigenvectors
    op = obj.operator(None, None, "gauss_newton")
    good = solve_pcg(op, B, DAMPING, right.apply, tol=1e-8)
    bad = solve_pcg(op, B, DAMPING, broken.apply, tol=1e-8, max_iter=500)
    assert good.iterations == 1 and bad.iterations > 10 * good.iterations
    assert rel(good.x, want) < 1e-7


def test_nonconvergence_is_recorded(small):
    obj, B, *_ = small
    fit = fit_inverse(
        obj, np.arange(20), solver="pcg", damping=DAMPING, curvature="gauss_newton", tol=1e-12, max_iter=3
    )
    with pytest.warns(UserWarning, match="pcg did not reach"):
        result = fit.solve(B)
    assert not result.converged and result.iterations == 3 and result.info["stop"] == "max_iter"
    with pytest.raises(SolverError, match="did not reach"):
        fit_inverse(
            obj,
            np.arange(20),
            solver="pcg",
            damping=DAMPING,
            curvature="gauss_newton",
            tol=1e-12,
            max_iter=3,
            on_nonconvergence="raise",
        ).solve(B)


def test_pickles_and_solves_the_same(small):
    import pickle

    obj, B, *_ = small
    fit = fit_inverse(obj, np.arange(50), solver="pcg", damping=DAMPING, curvature="gauss_newton", tol=1e-9)
    x = fit.solve(B).x
    clone = pickle.loads(pickle.dumps(fit))
    assert rel(clone.solve(B).x, x) < 1e-9


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"curvature": "hessian"}, r"^solver 'pcg' preconditions .*curvature='gauss_newton'"),
        ({"damping": 0.0, "weight_decay": 0.0}, "weight_decay \\+ damping > 0"),
        ({"complement": "largest"}, "complement must be one of"),
        ({"eigenvalues": "exact"}, "eigenvalues must be one of"),
        ({"keep": "some"}, "keep must be one of"),
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"tol": -1.0}, "tol must be a positive"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ],
)
def test_bad_input_one_clear_line(small, digits, kwargs, msg):
    obj, *_ = small
    kwargs = dict(kwargs)
    if kwargs.pop("weight_decay", None) is not None:
        obj = Objective(obj.model, digits.X_train[:300], digits.y_train[:300], 0.0)
    options = {"damping": DAMPING, "curvature": "gauss_newton", **kwargs}
    with pytest.raises(ValueError, match=msg) as info:
        fit_inverse(obj, np.arange(20), solver="pcg", **options)
    assert "\n" not in str(info.value)


def test_influence_scores_with_pcg_are_the_full_data_scores(small, digits):
    """Through the public entry point, a sample with solver='pcg' scores like the full-data solve."""
    from influence_core import influence_scores

    obj = small[0]
    data = (digits.X_train[:300], digits.y_train[:300], digits.X_test, digits.y_test)
    common = {"damping": DAMPING, "curvature": "gauss_newton", "tol": 1e-9}
    full = influence_scores(obj.model, data, [0, 1], solver="cg", **common)
    got = influence_scores(obj.model, data, [0, 1], hessian_indices=np.arange(0, 300, 7), solver="pcg", **common)
    assert got.shape == (2, 300)
    np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-7 * np.abs(full).max())


def test_a_sample_too_large_to_factor_is_refused_before_any_work(small, monkeypatch):
    """The sample only preconditions: one whose factor and Gram matrix pass the memory limit is refused in one line
    (the whole of a large training set as the 'sample' once exhausted the machine's memory)."""
    import influence_core.solvers.pcg as pcg

    obj, *_ = small
    r = 20 * (obj.n_classes - 1)
    limit = r * (obj.n_params + r) * torch.finfo(obj.dtype).bits // 8  # bytes of a 20-point sample
    monkeypatch.setattr(pcg, "LOW_RANK_MAX_BYTES", limit)
    fit_inverse(obj, np.arange(20), solver="pcg", damping=DAMPING, curvature="gauss_newton")  # at the limit: fits
    with pytest.raises(ValueError, match="pass a smaller one") as info:
        fit_inverse(obj, np.arange(21), solver="pcg", damping=DAMPING, curvature="gauss_newton")
    assert "\n" not in str(info.value) and "21 points" in str(info.value)
