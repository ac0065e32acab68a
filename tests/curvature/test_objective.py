"""Curvature against closed forms: a tiny multinomial logistic regression, where gradients, the Hessian and the
Gauss-Newton matrix are known analytically (for softmax cross-entropy on a linear model they coincide)."""

import numpy as np
import pytest
import torch

from influence_core.curvature.objective import Objective, largest_eigenvalue
from influence_core.models.zoo import LogisticRegression

N, D, C, WD = 23, 3, 4, 0.05


@pytest.fixture(scope="module")
def tiny():
    gen = np.random.default_rng(1)
    X = gen.normal(size=(N, D))
    y = gen.integers(0, C, size=N)
    torch.manual_seed(1)
    model = LogisticRegression(D, C).double()
    return model, X, y


def analytic(model, X, y, idx, weights=None):
    """Per-sample Jacobians J_i (C, p) of logits in the parameter order (weight (C, D) row-major, then bias (C,)),
    gradients J_iᵀ(p_i − e_y) and H_S = Σ w_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i / Σ w_i + wd·I."""
    W = model.head.weight.detach().numpy()
    b = model.head.bias.detach().numpy()
    p_dim = C * D + C
    w = np.ones(len(idx)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    H = WD * np.eye(p_dim)
    grads = []
    for wi, i in zip(w, idx):
        z = W @ X[i] + b
        p = np.exp(z - z.max())
        p /= p.sum()
        J = np.zeros((C, p_dim))
        for c in range(C):
            J[c, c * D : (c + 1) * D] = X[i]
            J[c, C * D + c] = 1.0
        H += wi * J.T @ (np.diag(p) - np.outer(p, p)) @ J
        grads.append(J.T @ (p - np.eye(C)[y[i]]))
    return H, np.array(grads)


def test_per_sample_gradients_match_closed_form(tiny):
    model, X, y = tiny
    obj = Objective(model, X, y, WD, chunk_size=5)
    _, G = analytic(model, X, y, np.arange(N))
    ours = torch.cat([g for _, g in obj.train_grads()]).numpy()
    np.testing.assert_allclose(ours, G, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obj.grad_sum(np.arange(5, 17)).numpy(), G[5:17].sum(0), rtol=1e-10)


@pytest.mark.parametrize("mode", ["hessian", "gauss_newton"])
def test_hessian_and_hvp_match_closed_form_on_subset_with_weights(tiny, mode):
    model, X, y = tiny
    obj = Objective(model, X, y, WD, chunk_size=4)
    idx = np.array([0, 3, 4, 10, 11, 20])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.5])
    H_true, _ = analytic(model, X, y, idx, w)
    np.testing.assert_allclose(obj.hessian(idx, w, mode).numpy(), H_true, rtol=1e-10, atol=1e-12)
    V = torch.as_tensor(np.random.default_rng(2).normal(size=(3, H_true.shape[0])))
    np.testing.assert_allclose(obj.hvp(V, idx, w, mode).numpy(), V.numpy() @ H_true, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obj.hvp(V[0], idx, w, mode).numpy(), H_true @ V[0].numpy(), rtol=1e-10)


def test_full_data_hessian_and_largest_eigenvalue(tiny):
    model, X, y = tiny
    obj = Objective(model, X, y, WD)
    H_true, _ = analytic(model, X, y, np.arange(N))
    np.testing.assert_allclose(obj.hessian().numpy(), H_true, rtol=1e-10, atol=1e-12)
    lam = np.linalg.eigvalsh(H_true)[-1]
    assert obj.largest_eigenvalue(tol=1e-8, max_iter=2000) == pytest.approx(lam, rel=1e-4)
    op = lambda V: V @ torch.as_tensor(H_true)  # noqa: E731
    assert largest_eigenvalue(op, H_true.shape[0], dtype=torch.float64, tol=1e-8, max_iter=2000) == pytest.approx(
        lam, rel=1e-4
    )


def test_forward_mode_grad_dot_equals_per_sample_gradients(tiny):
    model, X, y = tiny
    obj = Objective(model, X, y, WD)
    V = torch.as_tensor(np.random.default_rng(3).normal(size=(2, obj.n_params)))
    G = obj.per_sample_grads(torch.as_tensor(X), torch.as_tensor(y))
    np.testing.assert_allclose(
        obj.grad_dot(V, torch.as_tensor(X), torch.as_tensor(y)).numpy(), (G @ V.T).numpy(), rtol=1e-10, atol=1e-12
    )


def test_grad_dot_forms_per_sample_gradients_for_many_vectors_on_a_convolutional_model(monkeypatch):
    """A model that reuses its weights (convolutions) with >= MATERIALIZE_MIN_VECTORS vectors takes the per-sample
    path; it equals forward mode (the closed form's role is played by the explicit per-sample gradients), also when
    the gradients are split into several blocks; dense models and few vectors keep forward mode."""
    from influence_core.curvature import objective as objective_module
    from influence_core.models.zoo import build_model

    gen = np.random.default_rng(4)
    X = gen.normal(size=(12, 64))
    y = gen.integers(0, 3, size=12)
    torch.manual_seed(0)
    cnn = build_model("cnn", 64, 3, image_shape=(8, 8)).double()
    obj = Objective(cnn, X, y)
    k = objective_module.MATERIALIZE_MIN_VECTORS
    assert obj.forward_flops > objective_module.WEIGHT_REUSE_MIN * 2 * obj.n_params
    assert obj.materializes_grads(k) and not obj.materializes_grads(k - 1)
    x, t = torch.as_tensor(X), torch.as_tensor(y)
    V = torch.as_tensor(gen.normal(size=(k, obj.n_params)))
    want = (obj.per_sample_grads(x, t) @ V.T).numpy()
    forward = torch.cat([obj.grad_dot(V[i : i + 1], x, t) for i in range(k)], dim=1).numpy()  # k = 1: forward mode
    np.testing.assert_allclose(forward, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(obj.grad_dot(V, x, t, path="forward").numpy(), want, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="path must be"):
        obj.grad_dot(V, x, t, path="reverse")
    np.testing.assert_allclose(obj.grad_dot(V, x, t).numpy(), want, rtol=1e-9, atol=1e-12)
    monkeypatch.setattr(objective_module, "GRAD_BLOCK_BYTES", 5 * obj.n_params * 8)  # blocks of 5, 5 and 2 points
    np.testing.assert_allclose(obj.grad_dot(V, x, t).numpy(), want, rtol=1e-9, atol=1e-12)
    dense = Objective(build_model("mlp", 64, 3).double(), X, y)
    assert dense.forward_flops < objective_module.WEIGHT_REUSE_MIN * 2 * dense.n_params
    assert not dense.materializes_grads(1000)


def test_objective_rejects_bad_input(tiny):
    model, X, y = tiny
    with pytest.raises(ValueError, match="weight_decay"):
        Objective(model, X, y, -1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        Objective(model, X, y, WD, chunk_size=0)
    with pytest.raises(ValueError, match="labels must lie"):
        Objective(model, X, np.full(N, C), WD)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Objective(model, bad, y, WD)
    obj = Objective(model, X, y, WD)
    with pytest.raises(ValueError, match="duplicates"):
        obj.hvp(obj.theta, [1, 1])
    with pytest.raises(ValueError, match=r"\[0, 23\)"):
        obj.hvp(obj.theta, [0, 99])
    with pytest.raises(ValueError, match="weights must have shape"):
        obj.hvp(obj.theta, [0, 1], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        obj.hvp(obj.theta, [0, 1], [1.0, -1.0])
    with pytest.raises(ValueError, match="curvature mode"):
        obj.hvp(obj.theta, None, None, "fisher")
