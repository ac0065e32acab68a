"""Engine computations called from several threads at once (Streamlit serves each browser session on a thread of one
process): every thread must get its own, correct answer.

torch's forward-mode AD levels (used by ``torch.func.jvp``) are process-wide state: before the fix, two threads
computing influence at once raised "Trying to access a forward AD level with an invalid index" or "Trying to create
a dual Tensor for forward AD but no level exists", or returned wrong scores silently.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

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
    return [train_model(digits, "mlp", seed=s, epochs=3, hidden=(16,), polish_steps=5, max_polish_steps=5)
            for s in (0, 1)]


@pytest.mark.parametrize("solver", ["cg", "exact"])
def test_two_threads_computing_influence_get_their_own_correct_scores(digits, two_models, solver):
    """cg: Gauss-Newton products (jvp) at every iteration; exact: the low-rank Woodbury solve (jvp of the sample's
    logits) — both then score with the forward-mode ``grad_dot`` pass over the training set."""
    calcs = []
    for s, model in enumerate(two_models):
        calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
        calc.fit(hessian_indices=np.arange(48) + 48 * s, solver=solver, damping=0.01, curvature="gauss_newton",
                 **({"tol": 1e-8, "max_iter": 300} if solver == "cg" else {}))
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
    fitted_once.fit(hessian_indices=np.arange(100, 180), solver="cg", damping=0.01, curvature="gauss_newton",
                    tol=1e-8, max_iter=300)
    expected_fit = fitted_once.scores(X[:1], y[:1])

    def work(i: int) -> None:
        for _ in range(ROUNDS // 2):
            if i == 0:
                np.testing.assert_allclose(scorer.scores(X, y), expected, rtol=1e-4, atol=1e-8)
            else:
                calc = InfluenceCalculator(two_models[1], digits.X_train, digits.y_train)
                calc.fit(hessian_indices=np.arange(100, 180), solver="cg", damping=0.01, curvature="gauss_newton",
                         tol=1e-8, max_iter=300)
                np.testing.assert_allclose(calc.scores(X[:1], y[:1]), expected_fit, rtol=1e-4, atol=1e-8)

    assert _run_in_threads(work, 2) == []
