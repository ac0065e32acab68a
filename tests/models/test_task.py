"""Contract tests for researchers' own models: train-mode layers, frozen and restricted parameters, integer inputs,
dict outputs, data sources, torch.compile, float64, the solver registry and the fixes of the bring-your-own-model
issue. Ground truths: the same model in eval mode, a closed-form last-layer (logistic regression on features)
computation, an equivalent one-hot model, and the array path."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from influence_core import (
    InfluenceCalculator,
    as_source,
    available_solvers,
    class_removal,
    fit_inverse,
    influence_scores,
    register_solver,
    sample_hessian_subset,
    train_model,
)
from influence_core.config import InfluenceConfig
from influence_core.curvature.objective import Objective
from influence_core.models.task import WeightDecayWarning
from influence_core.models.training import fit_full_batch
from influence_core.solvers.base import SolverError
from influence_core.solvers.exact import ExactInverse
from influence_core.solvers.registry import SOLVER_REGISTRY, ExactFit, IndefiniteHessianWarning

EXACT = InfluenceConfig.preset("exact")

N_TRAIN, WD = 300, 1e-2
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def data(digits):
    """300 digits training points and 4 test points (float64)."""
    return (
        digits.X_train[:N_TRAIN].astype(np.float64),
        digits.y_train[:N_TRAIN],
        digits.X_test[:4].astype(np.float64),
        digits.y_test[:4],
    )


def trained(model: nn.Module, data, steps: int = 60) -> nn.Module:
    """Fit a user model (float64) by full-batch L-BFGS on the objective mean CE + (wd/2)||θ||²."""
    torch.manual_seed(0)
    model = model.double()
    was = model.training
    model.eval()
    fit_full_batch(model, data[0], data[1], WD, max_iter=steps)
    model.train(was)
    return model


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(x))


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Tanh())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(x))


def scores(model, data, **kw):
    kw.setdefault("solver", "exact")
    kw.setdefault("damping", 0.01)
    kw.setdefault("curvature", "hessian")
    return influence_scores(model, data, [0, 1, 2, 3], weight_decay=WD, **kw)


# ---------------------------------------------------------------------------------------------- model preparation
@pytest.mark.parametrize("cls", [DropoutNet, BatchNormNet])
def test_train_mode_model_scores_equal_eval_mode_and_mode_is_restored(cls, data):
    model = trained(cls(), data)
    if cls is BatchNormNet:  # give the running statistics real values (one pass in train mode)
        model.train()
        with torch.no_grad():
            model(torch.as_tensor(data[0]))
    model.eval()
    want = scores(model, data)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    model.train()
    got = scores(model, data)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert model.training and all(m.training for m in model.modules())  # left in train mode
    for k, v in model.named_buffers():  # running statistics untouched
        assert torch.equal(v, buffers[k]), k


def test_mode_restored_after_an_error(data):
    model = DropoutNet().double().train()
    with pytest.raises(ValueError):
        InfluenceCalculator(model, data[0], data[1] + 100, weight_decay=WD)  # labels out of range
    assert all(m.training for m in model.modules())


def test_mixed_dtypes_and_weight_decay_messages(data):
    model = DropoutNet()
    model.head.double()
    with pytest.raises(ValueError, match=r"model\.float\(\) or model\.double\(\)"):
        InfluenceCalculator(model, data[0], data[1], weight_decay=WD)
    model = DropoutNet().double()
    with pytest.warns(WeightDecayWarning, match="weight_decay="):
        InfluenceCalculator(model, data[0], data[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightDecayWarning)
        InfluenceCalculator(model, data[0], data[1], weight_decay=0.0)  # given: no warning
        model.weight_decay = WD
        assert InfluenceCalculator(model, data[0], data[1]).objective.weight_decay == WD  # recorded: no warning


# ---------------------------------------------------------------------------------------------- parameters
def _last_layer_closed_form(model: DropoutNet, data, measurement: str = "loss") -> np.ndarray:
    """Influence restricted to the head, by hand: logistic regression on the fixed features f_i.

    logits z = W f + b, θ = (vec W row-major, b), J_i = [I_C ⊗ f_iᵀ, I_C] (C, p); ∇ℓ_i = J_iᵀ(p_i − e_y);
    H = (1/n) Σ J_iᵀ (diag p_i − p_i p_iᵀ) J_i + (wd + δ) I; score = (1/n) ∇f_tᵀ H⁻¹ ∇ℓ_j."""
    X, y, Xt, yt = data
    with torch.no_grad():
        model.eval()
        F_tr = model.body(torch.as_tensor(X)).numpy()
        F_te = model.body(torch.as_tensor(Xt)).numpy()
    W, b = model.head.weight.detach().numpy(), model.head.bias.detach().numpy()
    C = W.shape[0]

    def jac(f):
        return np.hstack([np.kron(np.eye(C), f[None, :]), np.eye(C)])

    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    n = len(X)
    H = sum(jac(f).T @ (np.diag(p) - np.outer(p, p)) @ jac(f) for f in F_tr for p in [softmax(W @ f + b)]) / n
    H += (WD + 0.01) * np.eye(H.shape[0])
    G_tr = np.stack([jac(f).T @ (softmax(W @ f + b) - np.eye(C)[c]) for f, c in zip(F_tr, y)])
    rows = []
    for f, c in zip(F_te, yt):
        z = W @ f + b
        if measurement == "loss":
            d = softmax(z) - np.eye(C)[c]
        else:  # f = logsumexp_{k≠y} z_k − z_y
            others = np.where(np.arange(C) == c, -np.inf, z)
            d = np.exp(others - others.max()) / np.exp(others - others.max()).sum() - np.eye(C)[c]
        rows.append(jac(f).T @ d)
    return np.stack(rows) @ np.linalg.solve(H, G_tr.T) / n


@pytest.mark.parametrize("measurement", ["loss", "margin"])
def test_last_layer_restriction_equals_hand_built_computation(data, measurement):
    model = trained(DropoutNet(), data)
    flags = {k: v.requires_grad for k, v in model.named_parameters()}
    got = scores(model, data, params="last_layer", measurement=measurement)
    np.testing.assert_allclose(got, _last_layer_closed_form(model, data, measurement), rtol=1e-8, atol=1e-13)
    assert {k: v.requires_grad for k, v in model.named_parameters()} == flags  # never mutated
    same = scores(model, data, params=[model.head], measurement=measurement)
    np.testing.assert_array_equal(same, got)
    full = scores(model, data, measurement=measurement)
    assert rel(full, got) > 1e-3  # restricting changes the answer (the test can tell them apart)


def test_frozen_layers_are_left_out_and_equal_an_explicit_restriction(data):
    model = trained(DropoutNet(), data)
    for p in model.body.parameters():
        p.requires_grad_(False)
    calc = InfluenceCalculator(model, data[0], data[1], weight_decay=WD)
    assert calc.objective.names == ["head.weight", "head.bias"] and calc.objective.n_params == 90
    np.testing.assert_array_equal(scores(model, data), scores(model, data, params=["head"]))
    assert not any(p.requires_grad for p in model.body.parameters())
    with pytest.raises(ValueError, match="matches no parameter"):
        InfluenceCalculator(model, data[0], data[1], weight_decay=WD, params=["decoder"])


# ---------------------------------------------------------------------------------------------- inputs and outputs
class TokenNet(nn.Module):
    """Embedding of token ids (n, L) -> mean over positions -> linear head."""

    def __init__(self, vocab=17, dim=6):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(1))


class OneHotNet(nn.Module):
    """The same function on one-hot float inputs (n, L, vocab): embed = one_hot @ E."""

    def __init__(self, token: TokenNet):
        super().__init__()
        self.E = nn.Parameter(token.embed.weight.detach().clone())
        self.head = copy.deepcopy(token.head)

    def forward(self, onehot):
        return self.head((onehot @ self.E).mean(1))


def test_embedding_model_on_integer_token_ids(digits):
    from sklearn.datasets import load_digits

    raw = load_digits()
    ids = torch.as_tensor(raw.data[:110].astype(np.int64))  # pixel intensities 0..16 as token ids (n, 64)
    y = torch.as_tensor(raw.target[:110])
    torch.manual_seed(0)
    model = TokenNet().double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ids[:100]), y[:100]).backward()
        opt.step()
    split = (ids[:100], y[:100], ids[100:], y[100:])
    got = influence_scores(
        model, split, [0, 1, 2], solver="exact", damping=0.01, weight_decay=0.0, curvature="gauss_newton"
    )
    onehot = nn.functional.one_hot(ids, 17).double()
    want = influence_scores(
        OneHotNet(model).double(),
        (onehot[:100], y[:100], onehot[100:], y[100:]),
        [0, 1, 2],
        solver="exact",
        damping=0.01,
        weight_decay=0.0,
        curvature="gauss_newton",
    )
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12 * np.abs(want).max())


class DictNet(nn.Module):
    def __init__(self, base: nn.Module, key: str):
        super().__init__()
        self.base, self.key = base, key

    def forward(self, x):
        return {self.key: self.base(x), "hidden": self.base.body(x)}


class TupleNet(DictNet):
    def forward(self, x):
        return self.base(x), self.base.body(x)


def test_dict_and_tuple_outputs_through_the_output_function(data):
    base = trained(DropoutNet(), data).eval()
    want = scores(base, data)
    np.testing.assert_allclose(scores(DictNet(base, "logits"), data), want, rtol=1e-12)  # default: "logits"
    np.testing.assert_allclose(
        scores(DictNet(base, "scores"), data, output_fn=lambda out: out["scores"]), want, rtol=1e-12
    )
    np.testing.assert_allclose(scores(TupleNet(base, ""), data), want, rtol=1e-12)  # default: first element
    with pytest.raises(TypeError, match="output_fn=lambda out: out\\[KEY\\]"):
        scores(DictNet(base, "scores"), data)
    with pytest.raises(ValueError, match="logits of shape \\(batch, classes\\)"):
        scores(DictNet(base, "scores"), data, output_fn=lambda out: out["scores"][:, 0])


def test_gauss_newton_needs_the_softmax_loss(data):
    model = trained(DropoutNet(), data).eval()

    def smoothed(logits, y):
        return nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)

    with pytest.raises(ValueError, match="curvature='hessian'"):
        scores(model, data, loss_fn=smoothed, curvature="gauss_newton")
    custom = scores(model, data, loss_fn=smoothed)
    assert rel(custom, scores(model, data)) > 1e-3  # the loss is used


# ---------------------------------------------------------------------------------------------- data sources
def test_dataloader_and_dataset_sources_give_the_array_scores(data):
    model = trained(DropoutNet(), data).eval()
    X, y, Xt, yt = data
    want = scores(model, data, solver="cg", curvature="gauss_newton", hessian_indices=np.arange(0, 300, 3))
    ds = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    loader = DataLoader(ds, batch_size=17, shuffle=True)
    for train in (loader, ds, as_source(X, y)):
        got = scores(
            model, (train, None, Xt, yt), solver="cg", curvature="gauss_newton", hessian_indices=np.arange(0, 300, 3)
        )
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-14)
    test_loader = DataLoader(TensorDataset(torch.as_tensor(Xt), torch.as_tensor(yt)), batch_size=2)
    np.testing.assert_allclose(
        scores(
            model,
            (loader, None, test_loader, None),
            solver="cg",
            curvature="gauss_newton",
            hessian_indices=np.arange(0, 300, 3),
        ),
        want,
        rtol=1e-9,
        atol=1e-14,
    )
    a = sample_hessian_subset(model, data, "logit", 20, seed=1)  # the (X, y, Xt, yt) tuple
    b = sample_hessian_subset(model, loader, "logit", 20, seed=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    calc = InfluenceCalculator(model, loader, weight_decay=WD)
    with pytest.raises(AttributeError, match="objective.batch"):
        _ = calc.objective.X


def test_iterable_dataset_is_refused():
    from torch.utils.data import IterableDataset

    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(3), 0

    with pytest.raises(TypeError, match="map-style"):
        as_source(Stream())


# ---------------------------------------------------------------------------------------------- dtype, compile, GPU
def test_float64_and_float32_agree(data):
    model64 = trained(DropoutNet(), data).eval()
    model32 = DropoutNet()
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    s64 = scores(model64, data)
    assert s64.dtype == np.float64
    assert rel(scores(model32.eval(), data), s64) < 1e-3
    cg = scores(model64, data, solver="cg", tol=1e-12, max_iter=5000)
    assert rel(cg, s64) < 1e-8


@pytest.mark.slow
def test_torch_compile(data):
    model = trained(DropoutNet(), data).eval()
    want = scores(model, data)
    try:
        compiled = torch.compile(model)
        compiled(torch.as_tensor(data[0][:2]))
    except Exception as exc:  # noqa: BLE001 - no compiler toolchain here
        pytest.skip(f"torch.compile cannot run on this machine: {type(exc).__name__}: {str(exc)[:200]}")
    got = scores(compiled, data)  # the wrapper's parameters (_orig_mod.*) are used through functional_call
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


@CUDA
def test_gpu_scores_equal_cpu_scores_and_train_model_runs_on_cuda(data, digits):
    model = trained(DropoutNet(), data).eval()
    want = scores(model, data)
    got = scores(model.cuda(), data)  # numpy inputs, moved chunk by chunk
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)
    gpu = train_model(digits, "mlp", seed=0, epochs=1, hidden=(8,), device="cuda")
    assert next(gpu.parameters()).is_cuda and gpu.training_report["test_accuracy"] > 0.5


# ---------------------------------------------------------------------------------------------- solver registry
def test_solver_options_are_checked_at_fit(data):
    model = trained(DropoutNet(), data).eval()
    calc = InfluenceCalculator(model, data[0], data[1], weight_decay=WD)
    with pytest.raises(ValueError, match="takes no options \\['tols'\\]"):
        calc.fit(None, solver="cg", damping=0.1, tols=1e-3)
    with pytest.raises(ValueError, match="on_nonconvergence must be 'warn' or 'raise'"):
        calc.fit(None, solver="cg", damping=0.1, on_nonconvergence="ignore")
    for bad in ({"max_iter": 0}, {"tol": float("nan")}, {"scale": -1.0}):
        with pytest.raises(ValueError):
            calc.fit(None, solver="lissa", damping=0.1, **bad)
    with pytest.raises(ValueError, match="unknown solver"):
        calc.fit(None, solver="newton")


def test_registered_solver_is_dispatched_everywhere(data, digits, digits_logreg64):
    """A user-registered solver (Cholesky of the dense matrix) is listed, validated, and gives the exact scores."""

    @register_solver("cholesky_test")
    def fit_cholesky(objective, indices, weights, damping, curvature, *, jitter: float = 0.0):
        H = objective.hessian(indices, weights, curvature)
        inv = ExactInverse(H, damping + jitter)
        L = torch.linalg.cholesky(H + (damping + jitter) * torch.eye(len(H), dtype=H.dtype))
        inv.inverse = torch.cholesky_inverse(L)
        return ExactFit(inv, objective, "cholesky_test", indices, weights, damping, curvature, {"jitter": jitter})

    try:
        assert "cholesky_test" in available_solvers()
        model = trained(DropoutNet(), data).eval()
        np.testing.assert_allclose(
            scores(model, data, solver="cholesky_test", curvature="gauss_newton"),
            scores(model, data, curvature="gauss_newton"),
            rtol=1e-8,
        )
        with pytest.raises(ValueError, match="jitter"):
            scores(model, data, solver="cholesky_test", jiter=1.0)
        a = class_removal(digits_logreg64, digits, 3, "random", 64, solver="cholesky_test", alphas=[1.0])
        b = class_removal(digits_logreg64, digits, 3, "random", 64, solver="exact", alphas=[1.0])
        np.testing.assert_allclose(a.delta.numpy(), b.delta.numpy(), rtol=1e-8, atol=1e-14)
    finally:
        del SOLVER_REGISTRY["cholesky_test"]


def test_class_removal_exact_uses_the_low_rank_path(digits):
    model = train_model(digits, "mlp", seed=0, epochs=3, hidden=(8,), dtype="float64")  # p = 610
    res = class_removal(model, digits, 2, "random", 40, solver="exact", alphas=[1.0])  # r = 360 < p
    assert res.solve["inverse"] == "low_rank"
    dense = class_removal(model, digits, 2, "random", 40, solver="cg", tol=1e-12, max_iter=5000, alphas=[1.0])
    assert rel(res.delta.numpy(), dense.delta.numpy()) < 1e-7
    last = class_removal(model, digits, 2, "random", 40, solver="exact", alphas=[1.0], params="last_layer")
    assert last.delta.numel() == 8 * 10 + 10


def test_fitted_inverse_pickles_without_its_operator(data):
    model = trained(DropoutNet(), data).eval()
    obj = Objective(model, data[0], data[1], WD)
    inv = fit_inverse(obj, np.arange(100), None, solver="cg", damping=0.1, curvature="gauss_newton", tol=1e-10)
    B = obj.query_grads(data[2], data[3])
    first = inv.solve(B).x
    assert inv._operator is not None
    copy = pickle.loads(pickle.dumps(inv))
    assert copy._operator is None
    np.testing.assert_allclose(copy.solve(B).x.numpy(), first.numpy(), rtol=1e-12)


def test_exact_solve_of_an_indefinite_hessian_warns_or_refuses(digits):
    model = train_model(digits, "mlp", seed=0, epochs=3, hidden=(8,))  # p = 610
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
    with pytest.warns(IndefiniteHessianWarning, match="damping > "):
        calc.fit(np.arange(64), config=EXACT)  # the true Hessian, δ = 0
    with pytest.raises(SolverError, match="curvature='gauss_newton'"):
        calc.fit(np.arange(64), config=EXACT, on_indefinite="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndefiniteHessianWarning)
        calc.fit(np.arange(64), solver="exact", damping=0.01, curvature="gauss_newton")  # PSD + δ: silent


def test_weighted_sample_keeps_its_weights(digits, digits_logreg64):
    sample = sample_hessian_subset(digits_logreg64, digits, "importance", 100, seed=0)
    assert sample.weights is not None
    got = influence_scores(digits_logreg64, digits, [0], sample, damping=0.01)
    want = influence_scores(digits_logreg64, digits, [0], sample.indices, damping=0.01, hessian_weights=sample.weights)
    np.testing.assert_array_equal(got, want)
    with pytest.warns(UserWarning, match="drops the importance weights"):
        bare = np.asarray(sample)
    assert rel(influence_scores(digits_logreg64, digits, [0], bare, damping=0.01), want) > 1e-6


def test_cli_params_last_layer(capsys):
    import json

    from influence_core.cli.main import main

    assert (
        main(
            [
                "influence",
                "--dataset",
                "digits",
                "--arch",
                "logreg",
                "--test-index",
                "0",
                "--params",
                "last_layer",
                "--solver",
                "exact",
                "--quiet",
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["params"] == ["head.weight", "head.bias"]
    assert main(["influence", "--dataset", "digits", "--arch", "logreg", "--params", "body"]) == 2


def test_readme_own_classifier_example_runs():
    """The README's "Your own classifier" example runs as written (train-mode Dropout model, DataLoader source,
    last-layer restriction, margin measurement) and leaves the model in train mode."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Your own classifier") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["scores"].shape == (2, 1437) and namespace["margins"].shape == (2, 1437)
    assert namespace["model"].training
