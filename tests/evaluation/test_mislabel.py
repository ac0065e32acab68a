"""Mislabel detection by self-influence (influence_core.evaluation.mislabel) and self-influence itself against a
direct computation: autograd Hessian (logistic regression) and an explicit Gauss-Newton matrix (MLP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from influence_core import InfluenceCalculator, train_model
from influence_core.evaluation.mislabel import detection_curve, flip_labels, found_at, mislabel_detection


def test_flip_labels_flips_the_share_to_other_classes_deterministically():
    y = np.repeat(np.arange(10), 50)
    noisy, flipped = flip_labels(y, 10, 0.1, seed=3)
    assert len(flipped) == 50 and len(np.unique(flipped)) == 50
    assert np.all(noisy[flipped] != y[flipped])  # every flipped label changed
    assert np.array_equal(np.flatnonzero(noisy != y), flipped)  # and nothing else did
    assert noisy.min() >= 0 and noisy.max() < 10
    again, same = flip_labels(y, 10, 0.1, seed=3)
    assert np.array_equal(again, noisy) and np.array_equal(same, flipped)
    assert not np.array_equal(flip_labels(y, 10, 0.1, seed=4)[1], flipped)
    # the new labels are spread over the other classes, not shifted by a constant
    assert len(np.unique((noisy[flipped] - y[flipped]) % 10)) > 3


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_flip_labels_refuses_a_bad_share(fraction):
    with pytest.raises(ValueError, match="fraction"):
        flip_labels(np.arange(10) % 2, 2, fraction)


def test_flip_labels_refuses_labels_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        flip_labels(np.array([0, 1, 5]), 3, 0.5)


def test_detection_curve_perfect_reversed_and_random_rankings():
    n, flipped = 100, np.arange(10)
    perfect = detection_curve(-np.arange(n, dtype=float), flipped)  # flipped points ranked first
    assert found_at(perfect, 0.1) == 1.0 and perfect["found"][5] == 0.5
    assert perfect["auc"] == pytest.approx(1 - 0.1 / 2 + 0.1 / (2 * 10), abs=1e-12)
    reversed_ = detection_curve(np.arange(n, dtype=float), flipped)  # flipped points ranked last
    assert found_at(reversed_, 0.9) == 0.0 and reversed_["found"][-1] == 1.0
    np.testing.assert_allclose(perfect["random"], np.arange(n + 1) / n)
    rng = np.random.default_rng(0)
    aucs = [detection_curve(rng.random(n), flipped)["auc"] for _ in range(200)]
    assert abs(np.mean(aucs) - 0.5) < 0.03


def test_detection_curve_refuses_nan_and_wrong_sizes():
    with pytest.raises(ValueError, match="NaN"):
        detection_curve(np.array([0.1, np.nan, 0.3]), [0])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        detection_curve(np.zeros(3), [3])
    with pytest.raises(ValueError, match="nothing to find"):
        detection_curve(np.zeros(3), [])


def _flat(model):
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def unflatten(t):
        out, i = {}, 0
        for k, s in zip(names, shapes):
            size = int(np.prod(s))
            out[k] = t[i : i + size].reshape(s)
            i += size
        return out

    return theta, unflatten


def _direct_self_influence(model, X, y, wd, damping, rows, curvature):
    """(1/n) g_jᵀ (H + δI)⁻¹ g_j with H formed explicitly: the autograd Hessian of (1/n)Σℓ_i + (wd/2)‖θ‖², or the
    Gauss-Newton matrix (1/n)Σ J_iᵀ(diag p_i − p_i p_iᵀ)J_i + wd·I."""
    theta, unflatten = _flat(model)
    X, y = torch.as_tensor(X, dtype=theta.dtype), torch.as_tensor(y)
    n = len(y)

    def logits(t, x):
        return functional_call(model, unflatten(t), (x,))

    if curvature == "hessian":

        def objective(t):
            return torch.nn.functional.cross_entropy(logits(t, X), y) + 0.5 * wd * (t * t).sum()

        H = torch.autograd.functional.hessian(objective, theta, vectorize=True)
    else:
        J = jacrev(lambda t: logits(t, X))(theta)  # (n, C, p)
        p = torch.softmax(logits(theta, X), dim=1).detach()  # (n, C)
        M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, C, C)
        H = torch.einsum("ncp,ncd,ndq->pq", J, M, J) / n + wd * torch.eye(len(theta), dtype=theta.dtype)
    A = H + damping * torch.eye(len(theta), dtype=theta.dtype)
    out = []
    for j in rows:
        g = _grad_j(logits, theta, X, y, j)
        out.append(float(g @ torch.linalg.solve(A, g)) / n)
    return np.array(out)


def _grad_j(logits, theta, X, y, j):
    t = theta.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(logits(t, X[j : j + 1]), y[j : j + 1])
    return torch.autograd.grad(loss, t)[0]


@pytest.mark.parametrize(
    "arch,curvature,kwargs", [("logreg", "hessian", {}), ("mlp", "gauss_newton", {"hidden": (4,), "epochs": 5})]
)
def test_self_influence_matches_a_direct_computation(digits, arch, curvature, kwargs):
    import dataclasses

    small = dataclasses.replace(digits, X_train=digits.X_train[:400], y_train=digits.y_train[:400])  # n = 400
    model = train_model(small, arch, seed=0, dtype="float64", polish_steps=20, **kwargs)
    wd, damping = model.weight_decay, 0.05
    rows = [0, 17, 222, 399]
    calc = InfluenceCalculator(model, small.X_train, small.y_train)
    calc.fit(solver="exact", damping=damping, curvature=curvature)
    got = calc.self_influence(rows)
    want = _direct_self_influence(model, small.X_train, small.y_train, wd, damping, rows, curvature)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.all(got > 0)


def test_self_influence_ranks_flipped_labels_first(digits):
    result = mislabel_detection(digits, "logreg", fraction=0.1, seed=0)
    assert len(result.flipped) == round(0.1 * digits.n_train)
    si = result.curves["self-influence"]
    # far better than random inspection (which finds 10% after inspecting 10%, AUC 0.5)
    assert found_at(si, 0.1) > 0.4 and si["auc"] > 0.8, result.summary()
    assert {r["ranking"] for r in result.summary()} == {"self-influence", "training loss"}
    np.testing.assert_array_equal(result.noisy_labels, flip_labels(digits.y_train, 10, 0.1, 0)[0])
