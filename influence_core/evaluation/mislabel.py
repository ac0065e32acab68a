"""Mislabel detection by self-influence: a classic use of influence functions (Koh & Liang 2017, §5.4).

Flip the labels of a share of the training points (seeded), train on the noisy labels, and rank the training points
by their **self-influence**

    I_jj = (1/n) ∇ℓ_jᵀ (H + δI)⁻¹ ∇ℓ_j        (H: the full-data Hessian or Gauss-Newton matrix of the objective
                                             (1/n)Σℓ_i + (wd/2)‖θ‖², δ: damping)

i.e. the predicted increase of point j's own loss if j were removed: a point the model can only fit by
memorising it (a wrong label) has a large self-influence. Inspecting the training set in that order, the
**detection curve** is the fraction of flipped labels found against the fraction of the training set inspected;
random inspection finds them at the diagonal rate (expected found = inspected). The training loss of each point
(the simplest ranking) is reported beside it as a baseline.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.datasets import Dataset
from ..influence.calculator import InfluenceCalculator
from ..models.training import train_model
from ..models.zoo import predict_logits

__all__ = ["flip_labels", "detection_curve", "mislabel_detection", "MislabelResult"]

Progress = Callable[[float, str], None]


def flip_labels(y: Any, n_classes: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip round(fraction · n) labels of ``y`` (n,) to a different class drawn uniformly among the other
    ``n_classes − 1`` (``default_rng(seed)``). Returns (noisy labels (n,), sorted flipped indices (k,))."""
    labels = np.asarray(y)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if int(n_classes) < 2:
        raise ValueError(f"flipping labels needs at least 2 classes, got n_classes={n_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be in [0, {n_classes}), found {labels.min()}..{labels.max()}")
    if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) < 1.0):
        raise ValueError(f"fraction must be a share strictly between 0 and 1 (e.g. 0.1 for 10%), got {fraction!r}")
    n = labels.size
    k = int(round(float(fraction) * n))
    if k < 1:
        raise ValueError(f"fraction {fraction} of {n} labels flips no label; use a larger fraction")
    rng = np.random.default_rng(int(seed))
    flipped = np.sort(rng.choice(n, size=k, replace=False))
    noisy = labels.astype(np.int64).copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, int(n_classes), size=k)) % int(n_classes)
    return noisy, flipped


def detection_curve(priority: Any, flipped: Any, n: int | None = None) -> dict[str, np.ndarray | float]:
    """Inspect the points in decreasing ``priority`` (n,) (ties: lower index first). Returns ``inspected`` and
    ``found`` (n + 1,): after inspecting k points, the fraction k/n of the set inspected and the fraction of the
    ``flipped`` indices found; ``random`` (n + 1,) the expected fraction found by random inspection (= inspected);
    ``auc`` the mean of ``found`` over k = 1..n (random: about 0.5; perfect: 1 − share/2)."""
    p = np.asarray(priority, dtype=np.float64).reshape(-1)
    n = p.size if n is None else int(n)
    if p.size != n or n < 1:
        raise ValueError(f"priority must have one value per training point ({n}), got {p.size}")
    if not np.all(np.isfinite(p)):
        raise ValueError("priority holds NaN/inf; the ranking is undefined")
    is_flipped = np.zeros(n, dtype=bool)
    idx = np.asarray(flipped, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError("no flipped indices: nothing to find")
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"flipped indices must be in [0, {n})")
    is_flipped[idx] = True
    order = np.argsort(-p, kind="stable")
    found = np.concatenate([[0.0], np.cumsum(is_flipped[order]) / is_flipped.sum()])
    inspected = np.arange(n + 1) / n
    return {
        "inspected": inspected,
        "found": found,
        "random": inspected.copy(),
        "auc": float(found[1:].mean()),
        "order": order,
    }


def found_at(curve: dict[str, Any], share: float) -> float:
    """Fraction of flipped labels found after inspecting the first ``share`` of the training set."""
    n = len(curve["found"]) - 1
    return float(curve["found"][int(round(share * n))])


@dataclass
class MislabelResult:
    """The flipped indices, the noisy labels, the rankings (self-influence, training loss) and their curves."""

    fraction: float
    seed: int
    flipped: np.ndarray
    noisy_labels: np.ndarray
    self_influence: np.ndarray
    train_loss: np.ndarray
    curves: dict[str, dict[str, Any]]
    test_accuracy: float
    config: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, shares: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)) -> list[dict[str, float]]:
        """Per ranking: the fraction found after inspecting each share of the training set, and the AUC."""
        rows = []
        for name, curve in self.curves.items():
            rows.append(
                {
                    "ranking": name,
                    **{f"found after {s:.0%}": found_at(curve, s) for s in shares},
                    "AUC": float(curve["auc"]),
                }
            )
        return rows


def mislabel_detection(
    dataset: Dataset,
    arch: str = "logreg",
    fraction: float = 0.1,
    seed: int = 0,
    *,
    damping: float = 0.01,
    curvature: str = "gauss_newton",
    solver: str = "exact",
    train_settings: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> MislabelResult:
    """Flip ``fraction`` of the training labels (``seed``), train ``arch`` on them (``train_model``, seed ``seed``,
    ``train_settings``), and rank the training points by self-influence (full-data Hessian, ``curvature`` +
    ``damping``, ``solver``) and by training loss. ``progress(fraction, message)`` is called between the phases."""
    start = time.perf_counter()
    noisy, flipped = flip_labels(dataset.y_train, dataset.n_classes, fraction, seed)
    corrupted = dataclasses.replace(dataset, y_train=noisy)
    if progress:
        progress(0.05, f"training {arch} on labels with {len(flipped)} flipped ({fraction:.0%})")
    model = train_model(
        corrupted,
        arch,
        seed=int(seed),
        **(train_settings or {}),
        progress=progress and (lambda f, m: progress(0.05 + 0.45 * f, f"training {arch}: {m}")),
    )
    t_train = time.perf_counter()
    if progress:
        progress(0.5, "self-influence of every training point (full-data Hessian)")
    calc = InfluenceCalculator(model, corrupted.X_train, noisy)
    calc.fit(solver=solver, damping=float(damping), curvature=curvature)
    self_inf = calc.self_influence()
    t_self = time.perf_counter()
    logits = torch.as_tensor(predict_logits(model, corrupted.X_train), dtype=torch.float64)
    loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(noisy), reduction="none").numpy()
    test_pred = predict_logits(model, dataset.X_test).argmax(1)
    curves = {"self-influence": detection_curve(self_inf, flipped), "training loss": detection_curve(loss, flipped)}
    if progress:
        progress(1.0, "done")
    return MislabelResult(
        fraction=float(fraction),
        seed=int(seed),
        flipped=flipped,
        noisy_labels=noisy,
        self_influence=self_inf,
        train_loss=loss,
        curves=curves,
        test_accuracy=float(np.mean(test_pred == dataset.y_test)),
        config={
            "dataset": dataset.name,
            "arch": arch,
            "fraction": float(fraction),
            "seed": int(seed),
            "damping": float(damping),
            "curvature": curvature,
            "solver": solver,
            "train_settings": dict(train_settings or {}),
            "n_flipped": int(len(flipped)),
            "score": "(1/n) g_j^T (H + damping I)^-1 g_j, H on all training points (noisy labels)",
        },
        seconds={"training": t_train - start, "self_influence": t_self - t_train, "total": time.perf_counter() - start},
    )
