"""Influence under many Hessian samples at once (influence_core.influence.across_samples, curvature.gram): the shared
fast path gives the scores of fitting one InfluenceCalculator per sample, on the digits MLP."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import influence_core as ic
from influence_core.curvature.gram import sample_grams
from influence_core.influence.across_samples import fit_across_samples, scores_across_samples

DAMPING = 0.01


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def mlp64(digits, tiny_digits_mlp):
    return copy.deepcopy(tiny_digits_mlp).double()


def _samples(model, digits, m=60):
    """Unweighted (random, logit) and weighted (importance) samples, two seeds each."""
    return [
        ic.sample_hessian_subset(model, digits, name, m, seed=s)
        for name in ("random", "logit", "importance")
        for s in (0, 1)
    ]


@pytest.mark.parametrize("method", ["linear", "generic"])
def test_sample_grams_equal_the_gram_of_the_dense_gauss_newton_factor(digits, mlp64, method):
    calc = ic.InfluenceCalculator(mlp64, digits.X_train, digits.y_train)
    obj, samples = calc.objective, _samples(mlp64, digits)
    assert samples[-1].weights is not None and np.ptp(samples[-1].weights) > 0  # a weighted sample is covered
    grams = sample_grams(obj, [(s.indices, s.weights) for s in samples], method=method)
    for g, s in zip(grams, samples):
        U = obj.gauss_newton_factors(s.indices, s.weights)  # U_S (m(C-1), p), one sample alone
        assert g.method == method and g.gram.shape == (U.shape[0], U.shape[0])
        assert _rel(g.gram, U @ U.T) < 1e-12


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_scores_across_samples_equal_one_calculator_per_sample(digits, tiny_digits_mlp, mlp64, dtype):
    model = mlp64 if dtype == "float64" else tiny_digits_mlp
    calc = ic.InfluenceCalculator(model, digits.X_train, digits.y_train)
    samples = _samples(model, digits)
    X, y = digits.X_test[:3], digits.y_test[:3]
    inverses = fit_across_samples(calc.objective, samples, solver="exact", damping=DAMPING)
    assert all(inv.info["inverse"] == "low_rank" and inv.info["gram"] == "linear" for inv in inverses)
    fast, solves = scores_across_samples(calc, inverses, X, y)
    assert fast.shape == (len(samples), 3, digits.n_train) and len(solves) == len(samples)
    tol = 1e-10 if dtype == "float64" else 2e-5  # float32: measured 1.3e-6 (rounding of the two Gram formulas)
    for k, sample in enumerate(samples):
        ref = (
            ic.InfluenceCalculator(model, digits.X_train, digits.y_train)
            .fit(sample, solver="exact", damping=DAMPING, curvature="gauss_newton")
            .scores(X, y)
        )
        assert _rel(fast[k], ref) < tol, (k, _rel(fast[k], ref))
    assert _rel(fast[0], fast[1]) > 1e-2  # the samples' answers differ: a mix-up of samples would be caught


class _Scaled(nn.Module):
    """An MLP with a learned output scale: a parameter outside nn.Linear, so the Linear-layer Gram does not apply."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.mlp, self.scale = mlp, nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def forward(self, x):
        return self.mlp(x) * self.scale


def test_a_model_outside_linear_layers_takes_the_generic_gram_with_the_same_scores(digits, mlp64):
    model = _Scaled(copy.deepcopy(mlp64))
    calc = ic.InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
    samples = [ic.sample_hessian_subset(mlp64, digits, "importance", 40, seed=s) for s in (0, 1)]
    with pytest.raises(ValueError, match="nn.Linear"):
        sample_grams(calc.objective, [(s.indices, s.weights) for s in samples], method="linear")
    inverses = fit_across_samples(calc.objective, samples, solver="exact", damping=DAMPING)
    assert [inv.info["gram"] for inv in inverses] == ["generic", "generic"]
    fast, _ = scores_across_samples(calc, inverses, digits.X_test[:2], digits.y_test[:2])
    for k, sample in enumerate(samples):
        ref = (
            ic.InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
            .fit(sample, solver="exact", damping=DAMPING, curvature="gauss_newton")
            .scores(digits.X_test[:2], digits.y_test[:2])
        )
        assert _rel(fast[k], ref) < 1e-10


def test_other_solvers_are_fitted_one_by_one_with_the_same_scores(digits, tiny_digits_mlp):
    calc = ic.InfluenceCalculator(tiny_digits_mlp, digits.X_train, digits.y_train)
    samples = [ic.sample_hessian_subset(tiny_digits_mlp, digits, "random", 50, seed=s) for s in (0, 1)]
    inverses = fit_across_samples(calc.objective, samples, solver="cg", damping=DAMPING, tol=1e-6, max_iter=500)
    assert [inv.solver for inv in inverses] == ["cg", "cg"]
    fast, _ = scores_across_samples(calc, inverses, digits.X_test[:1], digits.y_test[:1])
    ref = (
        ic.InfluenceCalculator(tiny_digits_mlp, digits.X_train, digits.y_train)
        .fit(samples[1], solver="cg", damping=DAMPING, curvature="gauss_newton", tol=1e-6, max_iter=500)
        .scores(digits.X_test[:1], digits.y_test[:1])
    )
    assert _rel(fast[1], ref) < 1e-6
    with pytest.raises(ValueError, match="name its points"):
        fit_across_samples(calc.objective, [None], solver="exact", damping=DAMPING)


def test_the_structured_gauss_newton_matrix_equals_the_one_from_hvps(digits, mlp64):
    from influence_core.curvature.gram import gauss_newton_matrix

    obj = ic.InfluenceCalculator(mlp64, digits.X_train, digits.y_train).objective
    s = ic.sample_hessian_subset(mlp64, digits, "importance", 200, seed=0)
    for idx, w in ((None, None), (s.indices, s.weights)):
        G = gauss_newton_matrix(obj, idx, w)
        assert _rel(G, obj.hessian(idx, w, "gauss_newton")) < 1e-12


def test_exact_with_the_structured_matrix_gives_the_scores_of_the_hvp_matrix(digits, mlp64):
    X, y = digits.X_test[:2], digits.y_test[:2]
    fast = ic.InfluenceCalculator(mlp64, digits.X_train, digits.y_train).fit(
        None, solver="exact", damping=DAMPING, curvature="gauss_newton", matrix="structured"
    )
    assert fast.fit_info == {"inverse": "cholesky", "matrix": "structured"}
    ref = ic.InfluenceCalculator(mlp64, digits.X_train, digits.y_train).fit(
        None, solver="exact", damping=DAMPING, curvature="gauss_newton"
    )
    assert ref.fit_info["inverse"] == "lu"
    assert _rel(fast.scores(X, y), ref.scores(X, y)) < 1e-10
    scaled = _Scaled(copy.deepcopy(mlp64))  # not only nn.Linear: falls back to the HVP matrix and LU
    other = ic.InfluenceCalculator(scaled, digits.X_train, digits.y_train, weight_decay=1e-3).fit(
        np.arange(300), solver="exact", damping=DAMPING, curvature="gauss_newton", matrix="structured"
    )
    assert other.fit_info["inverse"] == "lu"
    with pytest.raises(ValueError, match="matrix must be"):
        ic.InfluenceCalculator(mlp64, digits.X_train, digits.y_train).fit(
            None, solver="exact", damping=DAMPING, curvature="gauss_newton", matrix="dense"
        )


class _Tied(nn.Module):
    """Two Linear layers where the second reuses the first layer's weight outside its module (F.linear): the
    hooks see every module once, but J is not the per-module outer product; the check against forward mode must
    send it to the generic path."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = nn.Linear(64, 64).double(), nn.Linear(64, 10).double()

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(torch.tanh(nn.functional.linear(h, self.fc1.weight)))


def test_a_weight_used_outside_its_module_takes_the_generic_gram(digits):
    from influence_core.curvature.gram import gauss_newton_matrix, linear_layer_pieces

    model = _Tied()
    calc = ic.InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
    obj = calc.objective
    assert linear_layer_pieces(obj, np.arange(20)) is None and gauss_newton_matrix(obj, np.arange(20)) is None
    (g,) = sample_grams(obj, [(np.arange(20), None)])
    U = obj.gauss_newton_factors(np.arange(20))
    assert g.method == "generic" and _rel(g.gram, U @ U.T) < 1e-12
