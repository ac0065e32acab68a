"""Ground-truth check by leave-one-out retraining.

For a model trained to the optimum of L(θ) = (1/n)Σℓ_i + (wd/2)||θ||² (logistic regression: convex), remove training
point j by setting its weight to 0 (the mean still divides by n, exactly the perturbation ε = −1/n that the
influence convention linearises), retrain warm-started with full-batch L-BFGS, and compare the actual change of each
test loss, ℓ_t(θ_{−j}) − ℓ_t(θ), with the predicted score[t, j] = (1/n)∇ℓ_tᵀH⁻¹∇ℓ_j.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from influence_core.config import InfluenceConfig
from influence_core.data.datasets import Dataset
from influence_core.influence.calculator import influence_scores
from influence_core.models.training import fit_full_batch
from influence_core.models.zoo import model_device_dtype, predict_logits
from influence_core.progress import Progress

__all__ = ["leave_one_out_check"]


def _test_losses(model: nn.Module, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    device, dtype = model_device_dtype(model)
    logits = torch.as_tensor(predict_logits(model, X), device=device, dtype=dtype)  # eval mode, model untouched
    with torch.no_grad():
        return F.cross_entropy(logits, torch.as_tensor(y, device=device), reduction="none").double().cpu().numpy()


def leave_one_out_check(
    model: nn.Module,
    dataset: Dataset,
    test_indices: Any,
    n_retrain: int = 6,
    tol: float = 1e-10,
    max_iter: int = 100,
    progress: Progress | None = None,
    **influence_options: Any,
) -> dict[str, Any]:
    """Retrain without each of the ``n_retrain`` most influential training points of every test point (by |score|)
    and return predicted and actual loss changes (n_test, n_chosen), the chosen indices, and the Pearson
    correlation per test point. ``influence_options`` go to :func:`influence_scores` (default: the ``"exact"``
    preset, the true Hessian without damping solved exactly, the setting whose predictions retraining checks).
    Use a convex model trained to the optimum (``train_model(..., arch="logreg", dtype="float64")``)."""
    test_idx = np.atleast_1d(np.asarray(test_indices))
    if n_retrain < 2:
        raise ValueError(f"n_retrain must be >= 2 to compute a correlation, got {n_retrain}")
    wd = float(getattr(model, "weight_decay", influence_options.get("weight_decay", 0.0)))
    influence_options.setdefault("config", InfluenceConfig.preset("exact"))
    scores = influence_scores(model, dataset, test_idx, **influence_options)
    chosen = np.unique(np.concatenate([np.argsort(-np.abs(row))[:n_retrain] for row in scores]))
    X_test, y_test = dataset.X_test[test_idx], dataset.y_test[test_idx]
    base = _test_losses(model, X_test, y_test)
    actual = np.empty((len(test_idx), len(chosen)))
    grad_norms = np.empty(len(chosen))
    for col, j in enumerate(chosen):
        retrained = copy.deepcopy(model)
        weight = np.ones(dataset.n_train)
        weight[j] = 0.0
        report = fit_full_batch(
            retrained, dataset.X_train, dataset.y_train, wd, sample_weight=weight, max_iter=max_iter, tol=tol
        )
        grad_norms[col] = report["grad_norm"]
        actual[:, col] = _test_losses(retrained, X_test, y_test) - base
        if progress:
            progress((col + 1) / len(chosen), f"retrained without training point {j}")
    predicted = scores[:, chosen]
    pearson = np.array([np.corrcoef(p, a)[0, 1] for p, a in zip(predicted, actual)])
    return {
        "test_indices": test_idx,
        "retrained_indices": chosen,
        "predicted": predicted,
        "actual": actual,
        "pearson": pearson,
        "sign_agreement": float(np.mean(np.sign(predicted) == np.sign(actual))),
        "max_retrain_grad_norm": float(grad_norms.max()),
    }
