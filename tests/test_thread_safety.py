"""Engine computations called from several threads at once (Streamlit serves each browser session on a thread of one
process): every thread must get its own, correct answer.

torch's forward-mode AD levels (used by ``torch.func.jvp``) are process-wide state: before the fix, two threads
computing influence at once raised "Trying to access a forward AD level with an invalid index" or "Trying to create
a dual Tensor for forward AD but no level exists", or returned wrong scores silently.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from influence_core import InfluenceCalculator, train_model

ROUNDS = 12


def _run_in_threads(work, n_threads: int) -> list[str]:
    errors: list[str] = []
    barrier = threading.Barrier(n_threads)

    def target(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            errors.append(f"thread {i}: {type(exc).__name__}: {str(exc)[:160]}")

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors


@pytest.fixture(scope="module")
def two_models(digits):
    """Two different models (different seeds), so a mix-up between threads changes the answer."""
    return [
        train_model(digits, "mlp", seed=s, epochs=3, hidden=(16,), polish_steps=5, max_polish_steps=5) for s in (0, 1)
    ]


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_two_threads_computing_influence_get_their_own_correct_scores(digits, two_models, solver):
    """cg: Gauss-Newton products (jvp) at every iteration; exact: the low-rank Woodbury solve (jvp of the sample's
    logits) — both then score with the forward-mode ``grad_dot`` pass over the training set."""
    calcs = []
    for s, model in enumerate(two_models):
        calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
        calc.fit(
            hessian_indices=np.arange(48) + 48 * s,
            solver=solver,
            damping=0.01,
            curvature="gauss_newton",
            **({"tol": 1e-8, "max_iter": 300} if solver == "cg" else {}),
        )
        calcs.append(calc)
    X, y = digits.X_test[:3], digits.y_test[:3]
    expected = [calc.scores(X, y) for calc in calcs]
    assert not np.allclose(expected[0], expected[1], rtol=0.1)  # the threads' answers differ

    def work(i: int) -> None:
        for _ in range(ROUNDS):
            got = calcs[i].scores(X, y)
            np.testing.assert_allclose(got, expected[i], rtol=1e-4, atol=1e-8)

    assert _run_in_threads(work, 2) == []


def test_threads_fitting_and_scoring_at_once(digits, two_models):
    """One thread fits new samples (hvp/jvp at fit) while another scores: neither breaks the other."""
    model = two_models[0]
    scorer = InfluenceCalculator(model, digits.X_train, digits.y_train)
    scorer.fit(hessian_indices=np.arange(64), solver="exact", damping=0.01, curvature="gauss_newton")
    X, y = digits.X_test[:2], digits.y_test[:2]
    expected = scorer.scores(X, y)
    fitted_once = InfluenceCalculator(two_models[1], digits.X_train, digits.y_train)
    fitted_once.fit(
        hessian_indices=np.arange(100, 180), solver="cg", damping=0.01, curvature="gauss_newton", tol=1e-8, max_iter=300
    )
    expected_fit = fitted_once.scores(X[:1], y[:1])

    def work(i: int) -> None:
        for _ in range(ROUNDS // 2):
            if i == 0:
                np.testing.assert_allclose(scorer.scores(X, y), expected, rtol=1e-4, atol=1e-8)
            else:
                calc = InfluenceCalculator(two_models[1], digits.X_train, digits.y_train)
                calc.fit(
                    hessian_indices=np.arange(100, 180),
                    solver="cg",
                    damping=0.01,
                    curvature="gauss_newton",
                    tol=1e-8,
                    max_iter=300,
                )
                np.testing.assert_allclose(calc.scores(X[:1], y[:1]), expected_fit, rtol=1e-4, atol=1e-8)

    assert _run_in_threads(work, 2) == []


# ------------------------------------------------------------------ one model, many threads, every solver
SOLVER_OPTIONS = {
    "exact": {},
    "low_rank": {},
    "cg": {"tol": 1e-8, "max_iter": 300},
    "lissa": {"tol": 1e-4, "max_iter": 300},
    "kfac": {},
    "ekfac": {},
    "arnoldi": {"rank": 20},
}
THREADS = 4


def _model_state(model) -> dict:
    """Everything the engine must leave as it was: parameter identities and values, requires_grad, training flags,
    hooks."""
    return {
        "params": [(n, id(p), p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()],
        "buffers": [(n, id(b), b.clone()) for n, b in model.named_buffers()],
        "training": [m.training for m in model.modules()],
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()],
    }


def _assert_same_state(before: dict, after: dict) -> None:
    assert [(n, i, rg) for n, i, _, rg in before["params"]] == [(n, i, rg) for n, i, _, rg in after["params"]]
    for (_, _, a, _), (_, _, b, _) in zip(before["params"], after["params"]):
        assert torch.equal(a, b)
    assert [(n, i) for n, i, _ in before["buffers"]] == [(n, i) for n, i, _ in after["buffers"]]
    for (_, _, a), (_, _, b) in zip(before["buffers"], after["buffers"]):
        assert torch.equal(a, b)
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]


@pytest.fixture(scope="module")
def dropout_mlp(digits):
    """A digits MLP with Dropout, left in train mode by its user (as after a training loop)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 24), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(24, 10)
    )
    X, y = torch.as_tensor(digits.X_train), torch.as_tensor(digits.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.train()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("solver", sorted(SOLVER_OPTIONS))
def test_threads_scoring_different_test_points_on_one_calculator_match_sequential(digits, dropout_mlp, solver):
    """THREADS threads score different test points through ONE calculator on ONE model (in train mode), repeatedly,
    while a watcher thread checks that the shared model never changes (no parameter swapped in, no flag flipped).

    Equality: each thread runs the same float operations as the sequential call, on its own replica of the module
    tree; the results are compared to a float32 tolerance (rtol 1e-5), not bitwise, because BLAS may split a
    reduction differently when threads compete for its worker pool."""
    model = dropout_mlp
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
    calc.fit(
        hessian_indices=np.arange(0, 1400, 7),
        solver=solver,
        damping=0.01,
        curvature="gauss_newton",
        **SOLVER_OPTIONS[solver],
    )
    chunks = [np.arange(2 * i, 2 * i + 2) for i in range(THREADS)]
    expected = [calc.scores(digits.X_test[c], digits.y_test[c]) for c in chunks]
    assert not np.allclose(expected[0], expected[1], rtol=0.1)  # different test points, different answers
    before = _model_state(model)
    done = threading.Event()
    seen_changes: list[str] = []

    def watch() -> None:
        ids = [id(p) for p in model.parameters()]
        while not done.is_set():
            if [id(p) for p in model.parameters()] != ids or not all(m.training for m in model.modules()):
                seen_changes.append("the shared model changed while others computed")
                return
            time.sleep(0.0005)  # let the computing threads have the GIL

    watcher = threading.Thread(target=watch)
    watcher.start()

    def work(i: int) -> None:
        for _ in range(3):
            got = calc.scores(digits.X_test[chunks[i]], digits.y_test[chunks[i]])
            np.testing.assert_allclose(got, expected[i], rtol=1e-5, atol=1e-9 * np.abs(expected[i]).max())

    try:
        errors = _run_in_threads(work, THREADS)
    finally:
        done.set()
        watcher.join()
    assert errors == []
    assert seen_changes == []
    _assert_same_state(before, _model_state(model))


def test_two_calculators_on_one_model_fit_and_score_at_once(digits, dropout_mlp):
    """Two calculators on the same model object, each fitting its own sample and scoring in its own thread."""
    model = dropout_mlp
    settings = [("cg", np.arange(0, 200), {"tol": 1e-8, "max_iter": 300}), ("exact", np.arange(200, 300), {})]
    X, y = digits.X_test[:2], digits.y_test[:2]

    def compute(i: int) -> np.ndarray:
        solver, idx, opts = settings[i]
        calc = InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
        calc.fit(hessian_indices=idx, solver=solver, damping=0.01, curvature="gauss_newton", **opts)
        return calc.scores(X, y)

    expected = [compute(i) for i in range(2)]
    before = _model_state(model)

    def work(i: int) -> None:
        for _ in range(2):
            np.testing.assert_allclose(compute(i), expected[i], rtol=1e-5, atol=1e-9 * np.abs(expected[i]).max())

    assert _run_in_threads(work, 2) == []
    _assert_same_state(before, _model_state(model))


def test_threads_running_class_removal_on_one_model_match_sequential(digits, two_models):
    from influence_core import class_removal

    model = two_models[0]

    def run(c: int) -> float:
        return class_removal(
            model, digits, removed_class=c, sampler="random", m=64, seed=c, solver="cg", damping=0.01
        ).at_one["f1"]

    expected = [run(c) for c in (1, 2)]
    before = _model_state(model)

    def work(i: int) -> None:
        assert run((1, 2)[i]) == pytest.approx(expected[i], abs=1e-6)

    assert _run_in_threads(work, 2) == []
    _assert_same_state(before, _model_state(model))


class _Boom(RuntimeError):
    pass


@pytest.mark.parametrize("solver", ["exact", "cg", "kfac"])
def test_a_computation_that_raises_half_way_leaves_the_model_as_it_was(digits, dropout_mlp, solver):
    """A measurement that raises on its third call (inside scoring, after the fit's forward passes): the model's
    parameters, requires_grad, training flags, buffers and hooks are exactly as before, and the next computation
    on the same model gives the sequential answer."""
    from influence_core import Task

    model = dropout_mlp
    calls = [0]

    def measurement(logits, y):
        calls[0] += 1
        if calls[0] == 3:
            raise _Boom("half-way")
        return torch.nn.functional.cross_entropy(logits, y, reduction="none")

    calc_ok = InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
    calc_ok.fit(
        hessian_indices=np.arange(100), solver=solver, damping=0.01, curvature="gauss_newton", **SOLVER_OPTIONS[solver]
    )
    expected = calc_ok.scores(digits.X_test[:3], digits.y_test[:3])
    before = _model_state(model)
    calc = InfluenceCalculator(
        model, digits.X_train, digits.y_train, weight_decay=1e-3, task=Task(measurement=measurement)
    )
    calc.fit(
        hessian_indices=np.arange(100), solver=solver, damping=0.01, curvature="gauss_newton", **SOLVER_OPTIONS[solver]
    )
    with pytest.raises(_Boom):
        for t in range(3):
            calc.scores(digits.X_test[t : t + 1], digits.y_test[t : t + 1])
    _assert_same_state(before, _model_state(model))
    np.testing.assert_allclose(calc_ok.scores(digits.X_test[:3], digits.y_test[:3]), expected, rtol=1e-6)


class _Probe(torch.nn.Module):
    """Identity layer that records which module object ran."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[int] = []

    def forward(self, x):
        self.ran.append(id(self))
        return x


def test_the_engine_never_runs_the_callers_module_objects(digits):
    """Every forward pass runs on a private replica that shares the caller's tensors (no copy of the weights):
    the caller's own module objects never run, and a replaced parameter gets a fresh replica."""
    from influence_core import predict_logits
    from influence_core.models.task import replica, thread_replica

    torch.manual_seed(0)
    probe = _Probe()
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), probe, torch.nn.Tanh(), torch.nn.Linear(16, 10))
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train, weight_decay=1e-3)
    calc.fit(hessian_indices=np.arange(50), solver="cg", damping=0.01, curvature="gauss_newton")
    calc.scores(digits.X_test[:1], digits.y_test[:1])
    predict_logits(model, digits.X_test[:5])
    assert probe.ran == []
    private = replica(model)
    assert private is not model and not private.training and model.training
    assert all(a is b for a, b in zip(private.parameters(), model.parameters()))
    assert thread_replica(model) is thread_replica(model)  # cached per thread
    model[0].bias = torch.nn.Parameter(model[0].bias.detach().clone())  # a replaced tensor: a fresh replica
    assert thread_replica(model)[0].bias is model[0].bias
