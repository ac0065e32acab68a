"""Influence scores against ground truth: leave-one-out retraining of a convex model, the full-data exact solve,
invariance to chunking, and bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from influence_core import (
    InfluenceCalculator,
    NotFittedError,
    dataset_from_arrays,
    influence_scores,
    sample_hessian_subset,
    top_influences,
    train_model,
)
from influence_core.config import InfluenceConfig
from influence_core.evaluation.leave_one_out import leave_one_out_check
from influence_core.models.training import fit_full_batch

EXACT = InfluenceConfig.preset("exact")


def test_leave_one_out_retraining_matches_predicted_loss_change(digits, digits_logreg64):
    """Logistic regression on digits (float64, wd = 1e-2, trained to the optimum). For several test points,
    retrain without each of the most influential training points (warm-started L-BFGS on the same objective with
    the point's weight set to 0) and compare the actual change of the test loss with score[t, j]."""
    check = leave_one_out_check(digits_logreg64, digits, [0, 7, 42], n_retrain=6)
    assert check["predicted"].shape == check["actual"].shape == (3, len(check["retrained_indices"]))
    assert check["max_retrain_grad_norm"] < 1e-7  # every retrained model is at its optimum
    for t, r in zip(check["test_indices"], check["pearson"]):
        assert r >= 0.9, f"test point {t}: Pearson {r:.3f}"
    # sign convention: positive score = removing the point increases the test loss
    assert check["sign_agreement"] > 0.9


def test_solvers_and_full_pool_sample_agree_with_exact(digits, digits_logreg64):
    model = digits_logreg64
    exact = influence_scores(model, digits, [3, 4], config=EXACT)  # true Hessian, δ = 0, solved exactly
    whole_pool = influence_scores(model, digits, [3, 4], hessian_indices=np.arange(digits.n_train), config=EXACT)
    np.testing.assert_allclose(whole_pool, exact, rtol=1e-9, atol=1e-14)
    uniform = influence_scores(
        model,
        digits,
        [3, 4],
        hessian_indices=np.arange(digits.n_train),
        hessian_weights=np.full(digits.n_train, 2.5),
        config=EXACT,
    )
    np.testing.assert_allclose(uniform, exact, rtol=1e-9, atol=1e-14)
    cg = influence_scores(model, digits, [3, 4], config=EXACT, solver="cg", tol=1e-8)
    np.testing.assert_allclose(cg, exact, rtol=1e-4, atol=1e-6 * np.abs(exact).max())
    gn = influence_scores(model, digits, [3, 4], config=EXACT, curvature="gauss_newton")  # = H for softmax regression
    np.testing.assert_allclose(gn, exact, rtol=1e-8, atol=1e-14)


def test_scores_do_not_depend_on_chunk_size(digits, digits_logreg64, digits_mlp):
    for model, solver, chunks, rtol in (
        (digits_logreg64, "exact", (7, 100, 5000), 1e-10),
        (digits_mlp, "cg", (97, 5000), 1e-4),
    ):
        results = [
            influence_scores(
                model,
                digits,
                [0, 5, 9],
                solver=solver,
                damping=0.01,
                chunk_size=c,
                curvature="gauss_newton",
                **({"tol": 1e-7} if solver == "cg" else {}),
            )
            for c in chunks
        ]
        for other in results[1:]:
            np.testing.assert_allclose(other, results[0], rtol=rtol, atol=rtol * np.abs(results[0]).max())


def test_sampled_hessian_is_deterministic_and_carries_weights(digits, digits_mlp):
    a = sample_hessian_subset(digits_mlp, digits, "importance", 64, seed=3)
    b = sample_hessian_subset(digits_mlp, digits, "importance", 64, seed=3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    s1 = influence_scores(
        digits_mlp, digits, [1], hessian_indices=a, solver="cg", damping=0.01, curvature="gauss_newton"
    )
    s2 = influence_scores(
        digits_mlp,
        digits,
        [1],
        hessian_indices=np.asarray(a),
        hessian_weights=a.weights,
        solver="cg",
        damping=0.01,
        curvature="gauss_newton",
    )
    s3 = influence_scores(
        digits_mlp, digits, [1], hessian_indices=np.asarray(a), solver="cg", damping=0.01, curvature="gauss_newton"
    )
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, s3)  # the importance weights are used


def test_self_influence_is_the_diagonal(digits, digits_logreg64):
    calc = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train).fit(config=EXACT)
    idx = np.array([2, 40, 400])
    full = calc.scores(digits.X_train[idx], digits.y_train[idx])
    np.testing.assert_allclose(calc.self_influence(idx), full[np.arange(3), idx], rtol=1e-9)
    assert np.all(calc.self_influence(idx) > 0)  # H is positive definite


def test_user_module_and_tensors():
    """A plain nn.Sequential (no features(), no recorded weight decay) on tensors works."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    fit_full_batch(model, X, y, 0.1, max_iter=200)
    scores = influence_scores(model, (X, y, X[:10], y[:10]), [0, 1], weight_decay=0.1)
    assert scores.shape == (2, 60) and np.all(np.isfinite(scores))
    # self-influence of a training point on itself (as a test point) is positive at a minimum
    assert scores[0, 0] > 0 and scores[1, 1] > 0


def test_top_influences_orders_scores():
    top = top_influences(np.array([0.5, -2.0, 3.0, -0.1, 1.0]), 2)
    np.testing.assert_array_equal(top["helpful"], [2, 4])
    np.testing.assert_array_equal(top["harmful"], [1, 3])
    np.testing.assert_allclose(top["harmful_scores"], [-2.0, -0.1])
    with pytest.raises(ValueError, match="one non-empty row"):
        top_influences(np.zeros((2, 3)))


def test_top_influences_refuses_nan_scores_instead_of_ranking_them_harmful():
    scores = np.array([0.3, -0.1, np.nan, 0.2, -0.4])
    with pytest.raises(ValueError, match="NaN or infinite.*training point 2"):
        top_influences(scores, 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        top_influences(np.array([0.1, -np.inf, 0.2]), 1)


@pytest.mark.parametrize("k", [0, -3, 1.5, True])
def test_top_influences_refuses_a_bad_k_instead_of_clamping(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_influences(np.array([0.1, 0.2, -0.3]), k)


def test_bad_input_is_reported(digits, digits_logreg64):
    model = digits_logreg64
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
    with pytest.raises(NotFittedError, match="fit"):
        calc.scores(digits.X_test[:1], digits.y_test[:1])
    with pytest.raises(ValueError, match="test_indices must lie"):
        influence_scores(model, digits, [digits.n_test])
    with pytest.raises(ValueError, match="damping"):
        calc.fit(damping=-0.1)
    with pytest.raises(ValueError, match="unknown solver"):
        calc.fit(solver="newton")
    with pytest.raises(ValueError, match="unknown curvature"):
        calc.fit(curvature="fisher")
    with pytest.raises(ValueError, match="duplicates"):
        calc.fit([1, 2, 2])
    with pytest.raises(ValueError, match="hessian_indices must lie"):
        calc.fit([0, digits.n_train])
    with pytest.raises(ValueError, match="hessian_indices is empty"):
        calc.fit([])
    with pytest.raises(TypeError, match="dataset must be"):
        influence_scores(model, digits.X_train, [0])
    with pytest.raises(ValueError, match="exact' takes no options"):
        calc.fit(solver="exact", tol=1e-3)


def test_gauss_newton_exact_uses_low_rank_and_equals_dense(digits):
    """influence_scores(curvature="gauss_newton", solver="exact") on a sample with m(C−1) < p takes the Woodbury
    path and equals the dense ground truth: G_S formed column by column (Objective.hessian), LU-solved, then scored."""
    from influence_core import train_model
    from influence_core.solvers.exact import ExactInverse

    model = train_model(digits, "mlp", seed=0, epochs=3, hidden=(8,), dtype="float64")
    idx = np.arange(0, 400, 10)  # m = 40, r = 360 < p = 610
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(idx))
    got = influence_scores(
        model, digits, [0, 5], idx, solver="exact", damping=0.01, hessian_weights=w, curvature="gauss_newton"
    )
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
    calc.fit(idx, w, solver="exact", damping=0.01, curvature="gauss_newton")
    assert calc.fit_info == {"inverse": "low_rank", "rank": 360}
    G = calc.gradients(digits.X_test[[0, 5]], digits.y_test[[0, 5]])
    S = ExactInverse(calc.objective.hessian(idx, w, "gauss_newton"), 0.01).solve(G).x
    want = calc.scores_from_ihvp(S)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * np.abs(want).max())


def test_gauss_newton_exact_refuses_when_factor_too_big(digits, digits_mlp, monkeypatch):
    import influence_core.solvers.low_rank as low_rank  # the exact solver's Woodbury path reads its memory limit

    monkeypatch.setattr(low_rank, "LOW_RANK_MAX_BYTES", 1000)
    calc = InfluenceCalculator(digits_mlp, digits.X_train, digits.y_train)
    with pytest.raises(ValueError, match="solver='cg'"):
        calc.fit(np.arange(50), solver="exact", damping=0.01, curvature="gauss_newton")


def test_automatic_score_chunk_and_cached_lissa_scale(digits, digits_mlp):
    """The automatic scoring chunk gives the same scores as 256-point chunks; LiSSA's power iteration runs once
    per fit (λ_max kept and reported on later solves)."""
    calc = InfluenceCalculator(digits_mlp, digits.X_train, digits.y_train)
    calc.fit(np.arange(100), solver="lissa", damping=0.1, curvature="gauss_newton", tol=1e-3)
    assert calc._train_chunk(None, 1, None) >= digits.n_train  # a small model is scored in one block
    auto = calc.scores(digits.X_test[:2], digits.y_test[:2])
    first = calc.last_solve.info["lambda_max"]
    assert calc.last_scoring.train_chunk_size >= digits.n_train
    fixed = calc.scores(digits.X_test[:2], digits.y_test[:2], train_chunk_size=256)
    np.testing.assert_allclose(auto, fixed, rtol=1e-5, atol=1e-6 * np.abs(fixed).max())
    assert calc._lissa_lambda_max == first and calc.last_solve.info["lambda_max"] == first
    calc.fit(np.arange(50), solver="lissa", damping=0.1, curvature="gauss_newton", tol=1e-3)
    assert calc._lissa_lambda_max is None  # a new fit forgets it


# ------------------------------------------------------------------------------------------ hostile options
@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda m, ds: InfluenceCalculator(m, ds.X_train, ds.y_train, chunk_size=2.5),
            r"chunk_size must be an integer >= 1, got 2.5",
        ),  # was truncated to 2
        (
            lambda m, ds: InfluenceCalculator(m, ds.X_train, ds.y_train, chunk_size="big"),
            "chunk_size must be an integer",
        ),
        (lambda m, ds: InfluenceCalculator(m, ds.X_train, ds.y_train).fit(damping="small"), "damping must be a finite"),
        (
            lambda m, ds: InfluenceCalculator(m, ds.X_train, ds.y_train).fit([0, 1, 2], ["a", "b", "c"], damping=0.1),
            "hessian_weights must be real numbers",
        ),
        (
            lambda m, ds: InfluenceCalculator(m, ds.X_train, ds.y_train).fit([0, 1, 2], [1, 1j, 1], damping=0.1),
            "hessian_weights must be real numbers",
        ),
        (lambda m, ds: top_influences(["a", "b"]), "top_influences takes real numbers"),
        (lambda m, ds: top_influences(np.array([1 + 1j, 2])), "top_influences takes real numbers"),
    ],
)
def test_calculator_options_are_type_checked_at_the_entry(digits, digits_logreg64, make, message):
    with pytest.raises(ValueError, match=message):
        make(digits_logreg64, digits)


@pytest.mark.parametrize(
    "model, message",
    [
        (lambda: nn.Linear(64, 10, device="meta"), "on the 'meta' device and holds no values"),
        (lambda: nn.Linear(64, 10).half(), "float16; influence needs float32 or float64"),  # was "increase damping"
        (lambda: nn.Linear(64, 10).bfloat16(), "bfloat16; influence needs float32 or float64"),
    ],
)
def test_models_without_usable_values_are_refused(digits, model, message):
    with pytest.raises(ValueError, match=message):
        InfluenceCalculator(model(), digits.X_train, digits.y_train, weight_decay=0.0).fit(damping=0.1)


def test_user_functions_returning_the_wrong_thing_are_named(digits, digits_logreg64):
    X = digits.X_train.astype(np.float64)
    with pytest.raises(TypeError, match="output_fn must return the logits as a tensor"):
        InfluenceCalculator(digits_logreg64, X, digits.y_train, output_fn=lambda out: out.detach().numpy())
    with pytest.raises(ValueError, match=r"loss_fn must return one loss per sample.*got \(\)"):
        InfluenceCalculator(
            digits_logreg64, X, digits.y_train, loss_fn=lambda z, t: nn.functional.cross_entropy(z, t)
        )  # was an IndexError later


# ------------------------------------------------------------------------------ your own data: labels and inputs
X4 = np.random.default_rng(0).normal(size=(40, 4))
Y4 = np.arange(40) % 2


@pytest.fixture(scope="module")
def tiny_logreg():
    """Logistic regression on 40 random 4-feature points, two classes."""
    ds = dataset_from_arrays(X4, Y4, X4[:6], Y4[:6], name="tiny")
    return train_model(ds, "logreg", seed=0, polish_steps=5)


@pytest.mark.parametrize("y, message", [(Y4 + 0.7, "integer"), (Y4 - 0.5, "integer"), (Y4 + 0j, "integer")])
def test_calculator_refuses_non_integer_labels_for_your_own_data(tiny_logreg, y, message):
    with pytest.raises(ValueError, match=message):
        InfluenceCalculator(tiny_logreg, X4.astype(np.float32), y)


def test_calculator_refuses_complex_inputs(tiny_logreg):
    with pytest.raises(ValueError, match="complex"):
        InfluenceCalculator(tiny_logreg, X4 + 1j, Y4)
