"""Shared fixtures: small real datasets and models, trained once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influence_core import load_dataset, train_model

# The tests' tensors are small: one intra-op thread is as fast as two on an idle machine and avoids the 10-20x
# slow-down of torch's spinning thread pool when another process holds the second core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_mlp(digits):
    return train_model(digits, "mlp", seed=0, epochs=15)


@pytest.fixture(scope="session")
def digits_logreg64(digits):
    """Logistic regression on digits in float64, trained to the optimum (for exact ground-truth checks)."""
    return train_model(digits, "logreg", seed=0, weight_decay=1e-2, dtype="float64")


@pytest.fixture(scope="session")
def tiny_digits_mlp(digits):
    """A 16-unit MLP trained briefly: the executor and fault tests need many solves, not a good model."""
    return train_model(digits, "mlp", seed=0, epochs=3, hidden=(16,), polish_steps=20)


@pytest.fixture(scope="session")
def fitted_calculator():
    """``fit(dataset, model, solver)``: an InfluenceCalculator fitted on the first 300 training points
    (Gauss-Newton, damping 0.01)."""
    from influence_core import InfluenceCalculator

    def fit(dataset, model, solver: str):
        calc = InfluenceCalculator(model, dataset.X_train, dataset.y_train, chunk_size=128)
        return calc.fit(np.arange(300), solver=solver, damping=0.01, curvature="gauss_newton")

    return fit


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield
