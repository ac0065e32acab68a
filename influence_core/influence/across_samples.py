"""Influence under many Hessian samples at once (e.g. samplers × seeds), sharing everything that does not depend on
the sample.

For k samples S_1..S_k and test points t, the scores score_s[t, j] = (1/n) ∇ℓ_tᵀ (H_{S_s} + δI)⁻¹ ∇ℓ_j (the
convention of :mod:`influence_core.influence.calculator`) are computed with

- one fit per sample, where the exact Gauss-Newton solve with r = m(C−1) < p is the Woodbury inverse of
  :class:`~influence_core.solvers.low_rank.LowRankInverse` and its r×r Gram comes from per-point pieces computed
  once for the union of the samples (:func:`influence_core.curvature.gram.sample_grams`: for ``nn.Linear`` models
  r²·Σd_out flops instead of r²·p); other solvers are fitted one by one by
  :func:`~influence_core.solvers.registry.fit_inverse`;
- the test gradients ∇ℓ_t computed once (not once per sample);
- one scoring pass over the training set for all k·n_test iHVPs (``InfluenceCalculator.scores_from_ihvp``).

The result equals fitting an :class:`~influence_core.influence.calculator.InfluenceCalculator` per sample and
scoring (to rounding; ``tests/influence/test_across_samples.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from influence_core.curvature.gram import sample_grams
from influence_core.curvature.objective import GaussNewtonFactors, Objective
from influence_core.solvers.registry import ExactFit, FittedInverse, fit_inverse

__all__ = ["fit_across_samples", "scores_across_samples", "SHARED_SOLVERS"]

SHARED_SOLVERS = ("exact", "low_rank")
"""Solvers whose fits share the per-point Gauss-Newton pieces (the exact low-rank Woodbury solve)."""


def _arrays(sample: Any) -> tuple[np.ndarray, np.ndarray | None]:
    from influence_core.influence.calculator import hessian_arrays

    idx, w = hessian_arrays(sample)
    if idx is None:
        raise ValueError(
            "every sample must name its points (the full-data Hessian is not a sample: fit it with "
            "InfluenceCalculator.fit)"
        )
    return idx, w


def _shared_applies(
    objective: Objective, samples: list, solver: str, damping: float, curvature: str, options: dict
) -> bool:
    if solver not in SHARED_SOLVERS or curvature != "gauss_newton" or objective.weight_decay + damping <= 0:
        return False
    if set(options) - {"on_indefinite"}:
        return False
    R = objective.n_classes - 1
    return all(len(idx) * R < objective.n_params for idx, _ in samples)


def fit_across_samples(
    objective: Objective,
    samples: Sequence[Any],
    *,
    solver: str = "exact",
    damping: float = 0.0,
    curvature: str = "gauss_newton",
    gram: str = "auto",
    **options: Any,
) -> list[FittedInverse]:
    """One fitted inverse (H_S + δI)⁻¹ per sample (a ``HessianSample``, an index array, or (indices, weights)).

    With ``solver`` "exact"/"low_rank", Gauss-Newton curvature, wd + δ > 0 and r = m(C−1) < p for every sample,
    the fits share the per-point factors (``gram``: "auto", "linear" or "generic", see
    :func:`~influence_core.curvature.gram.sample_grams`); otherwise each sample is fitted by ``fit_inverse``
    exactly as ``InfluenceCalculator.fit`` does."""
    pairs = [s if isinstance(s, tuple) else _arrays(s) for s in samples]
    if not pairs:
        return []
    if not _shared_applies(objective, pairs, solver, float(damping), curvature, options):
        return [
            fit_inverse(objective, idx, w, solver=solver, damping=float(damping), curvature=curvature, **options)
            for idx, w in pairs
        ]
    recorded = {"on_indefinite": options.get("on_indefinite", "warn")} if solver == "exact" else {}
    if options.get("on_indefinite", "warn") not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_indefinite must be 'warn', 'raise' or 'ignore', got {options['on_indefinite']!r}")
    from influence_core.solvers.low_rank import LowRankInverse

    fits = []
    for g in sample_grams(objective, pairs, method=gram):
        operator = GaussNewtonFactors.from_roots(objective, g.indices, g.roots, g.weights)
        inverse = LowRankInverse(operator, objective.weight_decay + float(damping), gram=g.gram, damping=float(damping))
        fits.append(
            ExactFit(
                inverse,
                objective,
                solver,
                g.indices,
                g.weights,
                float(damping),
                curvature,
                recorded,
                info={"inverse": "low_rank", "rank": inverse.rank, "gram": g.method},
            )
        )
    return fits


def scores_across_samples(
    calc: Any, inverses: Sequence[FittedInverse], X_test: Any, y_test: Any
) -> tuple[np.ndarray, list]:
    """Scores (k, n_test, n_train) of the test points under each fitted inverse, and the k solve results.

    ``calc``: an :class:`~influence_core.influence.calculator.InfluenceCalculator` of the same model and training
    data (fitted or not: only its objective and scoring are used). The test gradients are computed once and all
    k·n_test iHVPs are scored in one pass over the training set."""
    G = calc.gradients(X_test, y_test)  # (n_test, p), once
    solves = [inv.solve(G) for inv in inverses]
    if not solves:
        return np.zeros((0, len(G), calc.n)), []
    S = torch.cat([s.x for s in solves])  # (k·n_test, p)
    scores = calc.scores_from_ihvp(S)
    return np.asarray(scores).reshape(len(solves), len(G), -1), solves
