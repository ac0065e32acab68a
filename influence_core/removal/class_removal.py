"""Class removal by an influence (Newton) update, the validation protocol of Koh et al. 2024.

For a model trained on n points with objective L(θ) = (1/n) Σ_j ℓ_j(θ) + (wd/2)||θ||², removing class c (n_r
points left) is predicted by one Newton step on the objective of the retrained model,

    L_r(θ) = (1/n) Σ_{j: y_j ≠ c} ℓ_j(θ) + (wd/2)||θ||²,   ∇²L_r = (n_r/n)·mean_{j: y_j≠c} ∇²ℓ_j + wd·I,

from θ̂ (where ∇L(θ̂) = 0, so ∇L_r(θ̂) = −(1/n) g_c)::

    g_c  = Σ_{j: y_j = c} ∇ℓ_j(θ̂)                                  (p,)  summed loss gradients of the removed class
    Δ    = (1/n) · ((n_r/n)(H_S + δI) + wd·I)⁻¹ g_c
         = (1/n_r) · (H_S + (wd·n/n_r + δ)·I)⁻¹ g_c                 (p,)  H_S = weighted mean curvature of m points S
    θ(α) = θ̂ + α·Δ                                                  α = 1 is the pure influence prediction

The sampled mean H_S (drawn from the REMAINING classes) estimates mean_{j∉c} ∇²ℓ_j; the solve uses the second form
(the objective times n/n_r, whose weight decay is wd·n/n_r, as in the retraining below), so δ is on the scale of the
mean curvature. With S the whole pool, the true Hessian and δ = 0, Δ is exactly the Newton step on L_r.
H_S (or the Gauss-Newton G_S, ``curvature="gauss_newton"``) is the weighted mean curvature of the sample
(:class:`~influence_core.curvature.objective.Objective`, built with weight decay wd·n/n_r); δ is the damping. The step
is evaluated along an α path with

    forget = 1 − accuracy on the removed class's test points, retain = accuracy on the other test points,
    F1 = 2·forget·retain / (forget + retain), 0 when both are 0
    (:func:`~influence_core.evaluation.metrics.forget_retain_f1`),
    self_loss = mean test cross-entropy on the removed class; consistency = agreement with the original model's
    predictions on the other classes' test points,

Honest α selection: the test set is split once (stratified by class, seeded: :func:`split_test_set`) into an
α-selection half and a reporting half. α is chosen by the best F1 on the selection half (smallest α on ties), and
the headline metrics (``selected``) are measured on the reporting half at that α. When the chosen α sits at an edge
of the default grid, the grid is extended an octave at a time (up to :data:`ALPHA_LIMITS`) until it is interior;
``alpha_edge`` says "low"/"high" if it still is. ``best`` is the paper's protocol, the best F1 over the α path on
the whole test set (a test-set oracle, kept as a labelled secondary column); ``at_one`` is α = 1 on the whole test
set.

Reference (``retrain_reference=True``): the minimiser of the objective the update approximates,
(1/n) Σ_{j: y_j ≠ c} ℓ_j + (wd/2)||θ||², found by retraining from scratch with the same architecture, settings and
seed on the remaining n_r points with weight decay wd·n/n_r (the same objective times n/n_r, hence the same
minimiser; logistic regression runs L-BFGS to the optimum). Distance to retraining: prediction agreement with the
retrained model and the relative parameter distance ||θ(α) − θ_ret|| / ||θ̂ − θ_ret|| (1 = no closer than not
updating), at α = 1 and at the selected α. References are cached per (parameters, training configuration, data,
class, weight decay) in this process, so repeated :func:`class_removal` calls retrain once.

Peak memory of the solve (``measure_memory=True``) is MEASURED, never estimated: the same solve runs again in a fresh
Python process that loads only the model, the m sampled rows and g_c, warms up with one product on one point, then
resets the kernel's peak-RSS counter (``/proc/self/clear_refs`` ← 5, Linux) and reports VmHWM − VmRSS after the
solve: the resident memory the solve added at its peak. Without ``clear_refs`` it falls back to the
``getrusage`` ru_maxrss delta; on CUDA it reports ``torch.cuda.max_memory_allocated`` above the allocation before.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from influence_core.config import FULL_SAMPLE, InfluenceConfig
from influence_core.curvature.objective import Objective
from influence_core.data.datasets import Dataset
from influence_core.evaluation.memory import status_kib as _status_kb
from influence_core.evaluation.metrics import consistency, forget_retain_f1, per_class_accuracy
from influence_core.io_safety import jsonable
from influence_core.keys import content_key
from influence_core.models.task import resolve_weight_decay
from influence_core.models.training import train_model
from influence_core.progress import Progress
from influence_core.sampling.samplers import HessianSample, SamplerInputs
from influence_core.sampling.subsets import sample_hessian_subset, sampler_inputs
from influence_core.solvers.base import SolveResult, SolverNotConvergedWarning
from influence_core.solvers.registry import available_solvers, fit_inverse

__all__ = [
    "RemovalResult",
    "ClassRemoval",
    "class_removal",
    "retrain_without_class",
    "measure_solve_memory",
    "default_alphas",
    "DEFAULT_DAMPING",
    "DEFAULT_CURVATURE",
    "DEFAULT_SOLVER",
    "removal_solvers",
    "split_test_set",
    "METRICS",
]

_DEFAULT = InfluenceConfig()
DEFAULT_DAMPING = _DEFAULT.damping
"""δ of the removal solve: :class:`~influence_core.config.InfluenceConfig`'s default (kept as a name for callers)."""
DEFAULT_SOLVER = _DEFAULT.solver
"""Solver of the removal: the configuration's default, CG (docs/removal/README.md, "Solver of the removal",
compares it with LiSSA and the exact solve)."""
ALPHA_LIMITS = (2.0**-12, 2.0**16)
"""How far the default α grid is extended when the selected α sits at its edge."""
DEFAULT_CURVATURE = _DEFAULT.curvature
"""Gauss-Newton (the configuration's default): PSD on any sample, where the Hessian of a small sample of a
non-convex model is often indefinite and CG/LiSSA with small damping fail."""
METRICS = ("forget", "retain", "f1", "self_loss", "consistency")


def default_alphas(low: float = 0.125, high: float = 128.0, per_octave: int = 4) -> np.ndarray:
    """Geometric α grid 2^(k/per_octave) from ``low`` to ``high`` (both powers of 2); it contains α = 1."""
    if not (0 < low <= 1 <= high) or per_octave < 1:
        raise ValueError("need 0 < low <= 1 <= high and per_octave >= 1")
    k = np.arange(round(math.log2(low) * per_octave), round(math.log2(high) * per_octave) + 1)
    return 2.0 ** (k / per_octave)


# --------------------------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RemovalResult:
    """One class removal: configuration, the sampled Hessian points, cost, and quality along the α path.

    Attributes:
        removed_class: c. sampler, m, seed: the Hessian sample's rule, size and seed (sampler "full" = whole pool).
        solver, curvature, damping: how (H_S + δI)⁻¹ g_c was solved.
        alphas: (a,) the α path. path: metric name -> (a,) values along it (see :data:`METRICS`).
        at_one, best: metrics at α = 1 and at the best-F1 α of the path on the whole test set (``best`` is the
            test-set oracle of the paper's protocol).
        selected: the headline: α chosen on the selection half (``alpha``, ``selection_f1``) and the metrics on the
            reporting half at it. at_one_report: metrics at α = 1 on the reporting half. alpha_edge: "low"/"high"
            when the chosen α is still at the grid's edge, else None. split: sizes and seed of the test split.
        original: metrics of the unmodified model (α = 0).
        sampler_seconds, solver_seconds: wall time of drawing the sample and of the solve (operator set-up,
            power iteration and iterations included). iterations, converged: of the solver.
        solve: the solver's summary (scale, λ_max, final residual, tolerance) and its residual trace.
        delta_norm: ||Δ||₂. peak_memory: measured memory of the solve (see module doc), or None.
        reference: retrained-without-c metrics and distances of θ(1), θ(best α) and θ to it, or None.
        hessian_sample: the drawn sample (indices into the training set, weights). config: everything else needed
            to reproduce the numbers (dataset, training configuration, options). warnings: solver warnings.
        delta: the update Δ (p,) itself (θ(α) = θ + α·Δ in ``named_parameters`` order); not in :meth:`to_dict`.
    """

    removed_class: int
    sampler: str
    m: int
    seed: int
    solver: str
    curvature: str
    damping: float
    alphas: np.ndarray
    path: dict[str, np.ndarray]
    at_one: dict[str, float]
    best: dict[str, float]
    original: dict[str, float]
    sampler_seconds: float
    solver_seconds: float
    iterations: int
    converged: bool
    solve: dict[str, Any]
    delta_norm: float
    hessian_sample: HessianSample
    config: dict[str, Any]
    peak_memory: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    delta: torch.Tensor | None = field(default=None, repr=False)
    per_class_accuracy: dict[str, list[float]] = field(default_factory=dict)
    selected: dict[str, float] = field(default_factory=dict)
    at_one_report: dict[str, float] = field(default_factory=dict)
    alpha_edge: str | None = None
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def selected_f1(self) -> float:
        """Headline F1: on the reporting half, at the α chosen on the selection half."""
        return self.selected["f1"]

    @property
    def selected_alpha(self) -> float:
        return self.selected["alpha"]

    @property
    def f1(self) -> float:
        """F1 at α = 1."""
        return self.at_one["f1"]

    @property
    def best_f1(self) -> float:
        return self.best["f1"]

    @property
    def best_alpha(self) -> float:
        return self.best["alpha"]

    def to_dict(self, include_trace: bool = True, include_indices: bool = True) -> dict[str, Any]:
        """JSON-serialisable record: full configuration, seeds, sampled indices (and weights), metrics, costs."""
        solve = dict(self.solve)
        if not include_trace:
            solve.pop("trace", None)
        sample = self.hessian_sample.to_dict()
        if not include_indices:
            sample.pop("indices"), sample.pop("weights")
        return jsonable(
            {
                "removed_class": self.removed_class,
                "sampler": self.sampler,
                "m": self.m,
                "seed": self.seed,
                "solver": self.solver,
                "curvature": self.curvature,
                "damping": self.damping,
                "alphas": self.alphas,
                "path": self.path,
                "at_one": self.at_one,
                "best": self.best,
                "original": self.original,
                "sampler_seconds": self.sampler_seconds,
                "solver_seconds": self.solver_seconds,
                "iterations": self.iterations,
                "converged": self.converged,
                "solve": solve,
                "delta_norm": self.delta_norm,
                "peak_memory": self.peak_memory,
                "reference": self.reference,
                "hessian_sample": sample,
                "config": self.config,
                "warnings": self.warnings,
                "per_class_accuracy": self.per_class_accuracy,
                "selected": self.selected,
                "at_one_report": self.at_one_report,
                "alpha_edge": self.alpha_edge,
                "split": self.split,
            }
        )


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def split_test_set(y_test: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of the test indices into (selection, reporting) halves: within each class a seeded
    permutation, the first floor(n_k/2) to selection and the rest to reporting (so reporting has every class)."""
    y = np.asarray(y_test)
    rng = np.random.default_rng(seed)
    sel, rep = [], []
    for k in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == k))
        half = members.size // 2
        sel.append(members[:half])
        rep.append(members[half:])
    return np.sort(np.concatenate(sel)), np.sort(np.concatenate(rep))


_REFERENCE_CACHE: dict[str, dict[str, torch.Tensor]] = {}
_REFERENCE_CACHE_SIZE = 32


def _reference_key(model: nn.Module, dataset: Dataset, c: int) -> str:
    """Content key of (parameters, training configuration, training data, class, weight decay)."""
    return content_key(
        *model.state_dict().values(),
        getattr(model, "training_config", None),
        np.asarray(dataset.X_train),
        np.asarray(dataset.y_train),
        int(c),
        float(getattr(model, "weight_decay", 0.0)),
    )


def _check_class(dataset: Dataset, removed_class: Any) -> int:
    if isinstance(removed_class, bool) or not isinstance(removed_class, numbers.Integral):
        raise ValueError(
            f"removed_class must be an integer class id in [0, {dataset.n_classes}); got "
            f"{removed_class!r}. Classes: {_class_list(dataset)}."
        )
    c = int(removed_class)
    if not 0 <= c < dataset.n_classes:
        raise ValueError(
            f"class {c} does not exist: this dataset has classes 0..{dataset.n_classes - 1} "
            f"({_class_list(dataset)}). Pick one of them."
        )
    if not np.any(dataset.y_train == c):
        raise ValueError(
            f"class {c} has no training points, so there is nothing to remove; pick a class that "
            "occurs in the training set."
        )
    if not np.any(dataset.y_train != c):
        raise ValueError(
            f"class {c} is the only class in the training set: after removing it nothing is left to "
            "retain (and to estimate the Hessian on). Use a dataset with at least two classes."
        )
    if not np.any(dataset.y_test == c):
        raise ValueError(
            f"the test set has no point of class {c}, so forgetting cannot be measured; use a test "
            "split that contains it."
        )
    if not np.any(dataset.y_test != c):
        raise ValueError(
            f"every test point has class {c}, so retention cannot be measured; use a test split with other classes too."
        )
    return c


def _class_list(dataset: Dataset) -> str:
    names = list(dataset.class_names)
    shown = ", ".join(f"{i}={n}" for i, n in enumerate(names[:12]))
    return shown + (", ..." if len(names) > 12 else "")


def _check_alphas(alphas: Any) -> np.ndarray:
    if alphas is None:
        return default_alphas()
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(
            "the alpha path is empty; pass at least one step size (e.g. alphas=[1.0]) or None for the "
            "default geometric grid 1/8..128"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("alphas must be finite numbers")
    return a


def removal_solvers() -> list[str]:
    """Solvers of the removal: every registered solver (exact, cg, lissa, low_rank: the exact Gauss-Newton solve by
    Woodbury, rank m·(C−1); and any registered by the user)."""
    return available_solvers()


def _removal_config(
    config: InfluenceConfig | None,
    sampler: str | None,
    m: int | None,
    seed: int | None,
    solver: str | None,
    damping: float | None,
    curvature: str | None,
    solver_options: dict[str, Any],
) -> InfluenceConfig:
    """``config`` (None = the defaults) with the keyword shortcuts of :meth:`ClassRemoval.run` applied."""
    config = (config if config is not None else InfluenceConfig()).with_overrides(
        solver=solver, damping=damping, curvature=curvature, **solver_options
    )
    sample = {k: v for k, v in (("sampler", sampler), ("m", m), ("seed", seed)) if v is not None}
    return config.replace(**sample) if sample else config


def _chunk_alias(chunk_size: int | None, options: dict[str, Any]) -> int | None:
    """``chunk_size``, or the value of its deprecated name ``hessian_batch`` (removed from ``options``)."""
    if "hessian_batch" in options:
        warnings.warn(
            "hessian_batch is deprecated; pass chunk_size (points per vectorised chunk of the Hessian sample)",
            DeprecationWarning,
            stacklevel=3,
        )
        old = options.pop("hessian_batch")
        if chunk_size is None:
            return old
    return chunk_size


def _solve(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    weights: np.ndarray | None,
    rhs: torch.Tensor,
    *,
    weight_decay: float,
    solver: str,
    damping: float,
    curvature: str,
    chunk_size: int,
    solver_options: dict[str, Any],
    params: Any = None,
) -> SolveResult:
    """(H_S + δI)⁻¹ rhs with H_S the curvature of the rows (X, y) (weights optional): (1, p) solution, by the
    solver registry (so ``exact`` takes the low-rank Woodbury path for Gauss-Newton when m(C−1) < p)."""
    obj = Objective(model, X, y, weight_decay, chunk_size, params=params)
    return fit_inverse(obj, None, weights, solver=solver, damping=damping, curvature=curvature, **solver_options).solve(
        rhs
    )


def retrain_without_class(
    model: nn.Module, dataset: Dataset, removed_class: int, progress: Progress | None = None
) -> nn.Module:
    """Retrain from scratch without class c: same architecture, settings and seed as ``model`` (which must come from
    :func:`~influence_core.models.training.train_model`), on the n_r remaining points with weight decay wd·n/n_r, so
    that
    it minimises (1/n) Σ_{y_j≠c} ℓ_j + (wd/2)||θ||², the objective the influence update approximates. The model keeps
    all C outputs."""
    c = _check_class(dataset, removed_class)
    cfg = getattr(model, "training_config", None)
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise ValueError(
            "retraining needs a model made by influence_core.train_model (it reads "
            "model.training_config); for your own model, retrain it yourself and pass "
            "reference_model=... instead"
        )
    keep = dataset.y_train != c
    n, n_r = dataset.n_train, int(keep.sum())
    reduced = dataclasses.replace(
        dataset, X_train=dataset.X_train[keep], y_train=dataset.y_train[keep], info={**dataset.info, "removed_class": c}
    )
    settings = {
        k: cfg[k]
        for k in ("epochs", "batch_size", "lr", "polish_steps", "dtype", "grad_tol", "max_polish_steps", "width")
        if k in cfg
    }
    if cfg["arch"] == "mlp" and "hidden" in cfg:
        settings["hidden"] = tuple(cfg["hidden"])
    settings["weight_decay"] = float(cfg.get("weight_decay", getattr(model, "weight_decay", 0.0))) * n / n_r
    device = next(model.parameters()).device
    ref = train_model(reduced, cfg["arch"], seed=int(cfg.get("seed", 0)), progress=progress, device=device, **settings)
    ref.weight_decay = float(cfg.get("weight_decay", 0.0))  # in the (1/n) convention of the original objective
    return ref


# --------------------------------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------------------------------


class ClassRemoval:
    """Cached state for many class removals on one trained model and dataset (the study runs thousands).

    Computed once and reused: θ, the sampler inputs (logits, penultimate features), the original test predictions,
    g_c for each class, and the retrained reference for each class.

    Args:
        model: trained classifier (``model.weight_decay`` is used unless ``weight_decay`` is given).
        dataset: the :class:`Dataset` it was trained on.
        chunk_size: points per vectorised chunk for the class-gradient sums.
        split_seed: seed of the stratified test split into α-selection and reporting halves.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        *,
        weight_decay: float | None = None,
        chunk_size: int = 256,
        params: Any = None,
        split_seed: int = 0,
    ):
        if not isinstance(dataset, Dataset):
            raise TypeError(f"dataset must be an influence_core Dataset, got {type(dataset).__name__}")
        self.model = model
        self.dataset = dataset
        self.weight_decay = resolve_weight_decay(model, weight_decay)
        self.train_objective = Objective(
            model, dataset.X_train, dataset.y_train, self.weight_decay, chunk_size, params=params
        )
        self.test_objective = Objective(
            model, dataset.X_test, dataset.y_test, self.weight_decay, chunk_size, params=params
        )
        self.params = self.train_objective.names  # the parameters θ (and the update Δ) are made of
        self.theta = self.train_objective.theta.clone()
        self.y_test = np.asarray(dataset.y_test)
        self.pred0 = self._predict(self.theta)[0]
        self._inputs: SamplerInputs | None = None
        self._grads: dict[int, torch.Tensor] = {}
        self._references: dict[int, nn.Module] = {}
        self.split_seed = int(split_seed)
        self.selection_idx, self.report_idx = split_test_set(self.y_test, self.split_seed)

    # ---------------------------------------------------------------- cached pieces
    @property
    def inputs(self) -> SamplerInputs:
        """Labels, logits and penultimate features of the training set (for the samplers)."""
        if self._inputs is None:
            self._inputs = sampler_inputs(self.model, self.dataset)
        return self._inputs

    def pool(self, removed_class: int) -> np.ndarray:
        """Training indices of the remaining classes (where the Hessian sample is drawn)."""
        return np.flatnonzero(self.dataset.y_train != removed_class)

    def gradient_sum(self, removed_class: int) -> torch.Tensor:
        """g_c = Σ_{j: y_j = c} ∇ℓ_j(θ) (p,), cached per class."""
        c = _check_class(self.dataset, removed_class)
        if c not in self._grads:
            self._grads[c] = self.train_objective.grad_sum(np.flatnonzero(self.dataset.y_train == c))
        return self._grads[c]

    def reference_model(self, removed_class: int, progress: Progress | None = None) -> nn.Module:
        """The model retrained without class c (:func:`retrain_without_class`), cached per class."""
        c = _check_class(self.dataset, removed_class)
        if c not in self._references:
            key = _reference_key(self.model, self.dataset, c)
            if key in _REFERENCE_CACHE:  # retrained earlier in this process for the same model, data and class
                ref = copy.deepcopy(self.model)
                ref.load_state_dict(_REFERENCE_CACHE[key]["state"])
                ref.training_report = _REFERENCE_CACHE[key]["report"]
                ref.training_config = _REFERENCE_CACHE[key]["config"]
            else:
                ref = retrain_without_class(self.model, self.dataset, c, progress)
                while len(_REFERENCE_CACHE) >= _REFERENCE_CACHE_SIZE:
                    _REFERENCE_CACHE.pop(next(iter(_REFERENCE_CACHE)))
                _REFERENCE_CACHE[key] = {
                    "state": {k: v.detach().clone() for k, v in ref.state_dict().items()},
                    "report": getattr(ref, "training_report", None),
                    "config": getattr(ref, "training_config", None),
                }
            self._references[c] = ref
        return self._references[c]

    def parameters_of(self, model: nn.Module) -> torch.Tensor:
        """θ (p,) of another model of the same architecture (e.g. a retrained reference), in the order of the
        parameters the update is made of (``self.params``)."""
        named = dict(model.named_parameters())
        theta = torch.cat([named[k].detach().reshape(-1) for k in self.params if k in named])
        if theta.shape != self.theta.shape:
            raise ValueError(
                f"the model has {theta.numel()} parameters where {self.theta.numel()} are updated; it "
                "must have the same architecture"
            )
        return theta.to(self.theta.device, self.theta.dtype)

    def set_reference_model(self, removed_class: int, model: nn.Module) -> None:
        """Use your own retrained-without-c model as the reference for class c."""
        self._references[_check_class(self.dataset, removed_class)] = model

    def removal_weight_decay(self, removed_class: int) -> float:
        """wd·n/n_r: the weight decay of the retrained objective L_r times n/n_r (whose curvature the solve uses)."""
        c = _check_class(self.dataset, removed_class)
        return self.weight_decay * self.train_objective.n / int(np.sum(self.dataset.y_train != c))

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _predict(self, theta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Test predictions (n_test,) and per-point losses (n_test,) at parameters θ."""
        obj = self.test_objective
        logits = obj.logits(theta.to(obj.device, obj.dtype), obj.X)
        losses = F.cross_entropy(logits, obj.y, reduction="none")
        return logits.argmax(1).cpu().numpy(), losses.double().cpu().numpy()

    def metrics(self, theta: torch.Tensor, removed_class: int) -> dict[str, float]:
        """forget, retain, f1, self_loss, consistency of the parameters θ (p,) for removing class c."""
        pred, losses = self._predict(theta)
        return self._metrics(pred, losses, removed_class)

    def per_class_accuracy(self, pred: np.ndarray) -> list[float]:
        """Test accuracy of each class (C,) for predictions (n_test,)."""
        return per_class_accuracy(self.y_test, pred, self.dataset.n_classes).tolist()

    def _metrics(
        self, pred: np.ndarray, losses: np.ndarray, c: int, subset: np.ndarray | None = None
    ) -> dict[str, float]:
        """Metrics on the test points ``subset`` (indices; None = all)."""
        y, pred0 = self.y_test, self.pred0
        if subset is not None:
            y, pred0, pred, losses = y[subset], pred0[subset], pred[subset], losses[subset]
        removed = y == c
        out = forget_retain_f1(y, pred, c)
        out["self_loss"] = float(losses[removed].mean()) if removed.any() else float("nan")
        out["consistency"] = consistency(pred0, pred, ~removed)
        return out

    def _select_alpha(self, delta: torch.Tensor, alphas: np.ndarray, c: int, extend: bool):
        """Evaluate the α path; choose α by F1 on the selection half (extending the grid when the choice is at
        its edge and ``extend``). Returns (alphas, preds, losses, chosen index, selection F1 path, edge)."""
        sel = self.selection_idx
        usable = np.any(self.y_test[sel] == c) and np.any(self.y_test[sel] != c)
        if not usable:  # a tiny test set: no removed (or retained) point in the selection half
            sel = np.arange(self.y_test.size)
        cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        while True:
            for a in alphas:
                if float(a) not in cache:
                    cache[float(a)] = self._predict(self.theta + float(a) * delta)
            preds, losses = zip(*(cache[float(a)] for a in alphas))
            sel_f1 = np.array([forget_retain_f1(self.y_test[sel], p[sel], c)["f1"] for p in preds])
            best = sel_f1.max()
            ties = np.flatnonzero(sel_f1 == best)
            i = int(ties[np.argmin(np.abs(alphas[ties]))])  # the smallest α on ties
            edge = None
            if alphas.size > 1:
                edge = "low" if alphas[i] == alphas.min() else "high" if alphas[i] == alphas.max() else None
            if edge is None or not extend:
                return alphas, preds, losses, i, sel_f1, edge
            lo, hi = alphas.min(), alphas.max()
            if edge == "low" and lo / 2 >= ALPHA_LIMITS[0] * (1 - 1e-12):
                alphas = np.concatenate([lo * 2.0 ** (np.arange(-4, 0) / 4), alphas])
            elif edge == "high" and hi * 2 <= ALPHA_LIMITS[1] * (1 + 1e-12):
                alphas = np.concatenate([alphas, hi * 2.0 ** (np.arange(1, 5) / 4)])
            else:
                return alphas, preds, losses, i, sel_f1, edge

    # ---------------------------------------------------------------- one removal
    def run(
        self,
        removed_class: int,
        sampler: str | None = None,
        m: int | None = None,
        seed: int | None = None,
        *,
        config: InfluenceConfig | None = None,
        solver: str | None = None,
        damping: float | None = None,
        curvature: str | None = None,
        alphas: Any = None,
        chunk_size: int | None = None,
        retrain_reference: bool = False,
        measure_memory: bool = False,
        progress: Progress | None = None,
        extend_grid: bool | None = None,
        **solver_options: Any,
    ) -> RemovalResult:
        """Remove ``removed_class`` with the Hessian on m points of the remaining classes drawn by ``sampler``.

        ``config``: the :class:`~influence_core.config.InfluenceConfig` (None = the defaults: Gauss-Newton,
        δ = 0.01, CG, the whole remaining pool; the sampler's options come from it); ``sampler``, ``m``, ``seed``,
        ``solver``, ``damping``, ``curvature`` and ``**solver_options`` (e.g. ``tol``, ``max_iter``) override its
        fields (None = keep). The whole remaining pool (m None, or sampler "full") is recorded as sampler "full".
        ``chunk_size``: points per vectorised chunk of the Hessian sample (None: the whole sample in one batch, so
        memory follows m; ``hessian_batch`` is its deprecated name). ``extend_grid``: extend the α grid while the
        selected α is at its edge (default: only for the default grid, ``alphas=None``).
        See :func:`class_removal` for the rest.
        """
        c = _check_class(self.dataset, removed_class)
        chunk_size = _chunk_alias(chunk_size, solver_options)
        config = _removal_config(config, sampler, m, seed, solver, damping, curvature, solver_options)
        solver, damping, curvature = config.solver, config.damping, config.curvature
        solver_options = dict(config.solver_options)
        sampler, m, seed = config.sampler, config.m, config.seed
        extend_grid = alphas is None if extend_grid is None else bool(extend_grid)
        alphas = _check_alphas(alphas)
        pool = self.pool(c)
        full = config.full
        if m is not None and m > pool.size:
            raise ValueError(
                f"m = {m!r} is invalid: removing class {c} leaves a pool of {pool.size} training points "
                f"for the Hessian sample, so choose 1 <= m <= {pool.size} (or m=None for all of them)"
            )
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        if sampler == FULL_SAMPLE and m is not None and m != pool.size:
            raise ValueError(f"sampler 'full' uses the whole pool of {pool.size} points; pass m=None or m={pool.size}")
        if progress:
            progress(0.0, f"class {c}: drawing the Hessian sample")

        start = time.perf_counter()
        if full:
            sample = HessianSample(indices=pool, weights=None, sampler=FULL_SAMPLE, m=int(pool.size), seed=int(seed))
        else:
            sample = sample_hessian_subset(
                self.model,
                self.dataset,
                sampler,
                int(m),
                seed=seed,
                pool=pool,
                inputs=self.inputs,
                **config.sampler_options,
            )
        sampler_seconds = time.perf_counter() - start

        g = self.gradient_sum(c)
        n, n_r = self.train_objective.n, int(pool.size)
        solve_wd = self.removal_weight_decay(c)
        X_s, y_s = self.train_objective.batch(sample.indices)
        batch = int(chunk_size or len(sample))
        if progress:
            progress(0.2, f"class {c}: solving with {solver} on {len(sample)} points")
        caught: list[str] = []
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always", SolverNotConvergedWarning)
            result = _solve(
                self.model,
                X_s,
                y_s,
                sample.weights,
                g.unsqueeze(0),
                weight_decay=solve_wd,
                solver=solver,
                damping=damping,
                curvature=curvature,
                chunk_size=batch,
                solver_options=solver_options,
                params=self.params,
            )
        solver_seconds = time.perf_counter() - start
        for w in record:
            if issubclass(w.category, SolverNotConvergedWarning):
                caught.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        delta = result.x[0] / n_r  # (1/n_r)(H_S + (wd n/n_r + δ) I)⁻¹ g_c: the Newton step on L_r (module doc)

        if progress:
            progress(0.6, f"class {c}: evaluating {alphas.size} step sizes")
        alphas, preds, losses, i_sel, sel_f1, edge = self._select_alpha(delta, alphas, c, extend_grid)
        rows = [self._metrics(p, ls, c) for p, ls in zip(preds, losses)]
        path = {k: np.array([r[k] for r in rows]) for k in METRICS}
        path["selection_f1"] = sel_f1
        ties = np.flatnonzero(path["f1"] == path["f1"].max())
        ib = int(ties[np.argmin(np.abs(alphas[ties]))])  # test-set oracle: the smallest α on ties
        best = {**rows[ib], "alpha": float(alphas[ib])}
        selected = {
            **self._metrics(preds[i_sel], losses[i_sel], c, self.report_idx),
            "alpha": float(alphas[i_sel]),
            "selection_f1": float(sel_f1[i_sel]),
        }
        pred1, loss1 = self._predict(self.theta + delta)
        at_one = self._metrics(pred1, loss1, c)
        at_one_report = self._metrics(pred1, loss1, c, self.report_idx)
        original = self._metrics(*self._predict(self.theta), c)
        per_class = {
            "original": self.per_class_accuracy(self.pred0),
            "alpha_1": self.per_class_accuracy(pred1),
            "best_alpha": self.per_class_accuracy(preds[ib]),
            "selected_alpha": self.per_class_accuracy(preds[i_sel]),
        }

        reference = None
        if retrain_reference:
            if progress:
                progress(0.7, f"class {c}: retraining without the class (reference)")
            retrain_progress = progress and (lambda f, m: progress(0.7 + 0.2 * f, f"class {c}: retraining: {m}"))
            reference = self._reference_record(
                c, delta, float(alphas[ib]), preds[ib], pred1, float(alphas[i_sel]), preds[i_sel], retrain_progress
            )
        peak = None
        if measure_memory:
            if progress:
                progress(0.9, f"class {c}: measuring the solve's peak memory in a fresh process")
            peak = measure_solve_memory(
                self.model,
                X_s,
                y_s,
                sample.weights,
                g.unsqueeze(0),
                weight_decay=solve_wd,
                solver=solver,
                damping=damping,
                curvature=curvature,
                chunk_size=batch,
                solver_options=solver_options,
                params=self.params,
            )
        summary = result.summary()
        summary["trace"] = list(result.trace)
        config = {
            "dataset": self.dataset.describe(),
            "training": getattr(self.model, "training_config", None),
            "weight_decay": self.weight_decay,
            "solve_weight_decay": solve_wd,
            "n_train": n,
            "n_remaining_train": n_r,
            "objective": "L_r = (1/n) sum_{y_j != c} l_j + (wd/2)|theta|^2; "
            "Delta = (1/n_r)(H_S + (wd n/n_r + damping) I)^-1 g_c",
            "n_removed_train": int(np.sum(self.dataset.y_train == c)),
            "pool_size": int(pool.size),
            "n_params": self.train_objective.n_params,
            "hessian_batch": batch,
            "solver_options": dict(solver_options),
            "sampler_options": dict(sample.options),
            "device": str(self.train_objective.device),
            "dtype": str(self.train_objective.dtype),
            "torch_threads": torch.get_num_threads(),
        }
        if progress:
            progress(1.0, f"class {c}: done (F1 {at_one['f1']:.3f} at α=1, {best['f1']:.3f} at α={best['alpha']:g})")
        return RemovalResult(
            removed_class=c,
            sampler=sample.sampler,
            m=len(sample),
            seed=int(seed),
            solver=solver,
            curvature=curvature,
            damping=damping,
            alphas=alphas,
            path=path,
            at_one=at_one,
            best=best,
            original=original,
            sampler_seconds=sampler_seconds,
            solver_seconds=solver_seconds,
            iterations=int(result.iterations),
            converged=bool(result.converged),
            solve=summary,
            delta_norm=float(delta.norm()),
            hessian_sample=sample,
            config=config,
            peak_memory=peak,
            reference=reference,
            warnings=caught,
            delta=delta.detach(),
            per_class_accuracy=per_class,
            selected=selected,
            at_one_report=at_one_report,
            alpha_edge=edge,
            split={
                "seed": self.split_seed,
                "n_selection": int(self.selection_idx.size),
                "n_report": int(self.report_idx.size),
                "stratified_by": "class",
            },
        )

    def _reference_record(
        self,
        c: int,
        delta: torch.Tensor,
        best_alpha: float,
        pred_best: np.ndarray,
        pred_one: np.ndarray,
        sel_alpha: float,
        pred_sel: np.ndarray,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        ref = self.reference_model(c, progress)
        theta_ref = self.parameters_of(ref)
        pred_ref, loss_ref = self._predict(theta_ref)
        dist = lambda th: float((th - theta_ref).norm())  # noqa: E731
        d0 = dist(self.theta)
        rep = self.report_idx
        return {
            "metrics": self._metrics(pred_ref, loss_ref, c),
            "per_class_accuracy": self.per_class_accuracy(pred_ref),
            "param_distance": {
                "original": d0,
                "alpha_1": dist(self.theta + delta),
                "best_alpha": dist(self.theta + best_alpha * delta),
                "selected_alpha": dist(self.theta + sel_alpha * delta),
            },
            "relative_distance": {
                k: dist(self.theta + a * delta) / d0 if d0 > 0 else float("nan")
                for k, a in (("alpha_1", 1.0), ("selected_alpha", sel_alpha), ("best_alpha", best_alpha))
            },
            "prediction_agreement": {
                "original": float(np.mean(self.pred0 == pred_ref)),
                "alpha_1": float(np.mean(pred_one == pred_ref)),
                "best_alpha": float(np.mean(pred_best == pred_ref)),
                "selected_alpha": float(np.mean(pred_sel == pred_ref)),
            },
            "report_agreement": {
                "original": float(np.mean(self.pred0[rep] == pred_ref[rep])),
                "alpha_1": float(np.mean(pred_one[rep] == pred_ref[rep])),
                "selected_alpha": float(np.mean(pred_sel[rep] == pred_ref[rep])),
            },
            "training_report": getattr(ref, "training_report", None),
            "definition": "retrained from scratch without the class (same arch, settings, seed; weight decay "
            "wd*n/n_r); distances are L2 over all parameters, relative = divided by the original "
            "model's distance; prediction_agreement over all test points, report_agreement over "
            "the reporting half",
        }


def class_removal(
    model: nn.Module,
    dataset: Dataset,
    removed_class: int,
    sampler: str | None = None,
    m: int | None = None,
    seed: int | None = None,
    *,
    config: InfluenceConfig | None = None,
    solver: str | None = None,
    damping: float | None = None,
    curvature: str | None = None,
    alphas: Any = None,
    retrain_reference: bool = False,
    reference_model: nn.Module | None = None,
    measure_memory: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    params: Any = None,
    **solver_options: Any,
) -> RemovalResult:
    """Remove class ``removed_class`` from a trained ``model`` by the influence update θ + α·Δ (module doc).

    Args:
        model, dataset: a trained classifier and its :class:`Dataset`.
        removed_class: c, an existing class with training and test points (and other classes to retain).
        config: the :class:`~influence_core.config.InfluenceConfig` (None = the defaults: Gauss-Newton, δ = 0.01,
            CG, the whole remaining pool). The shortcuts below override its fields (None = keep).
        sampler, m, seed: the Hessian sample: m points of the remaining classes drawn by a registered sampler
            (``m=None``: all of them). 1 <= m <= pool size.
        solver: e.g. "cg", "lissa", "exact" (dense) or "low_rank" (the exact Gauss-Newton solve by Woodbury).
            damping: δ >= 0. curvature: "gauss_newton" (PSD) or "hessian" (needs damping above |λ_min| of the
            sample).
        alphas: the α path (non-empty; default :func:`default_alphas`, 1/8..128, 4 per octave).
        retrain_reference: also retrain without c (or use ``reference_model``) and compare.
        measure_memory: re-run the solve in a fresh process to measure its peak memory.
        chunk_size: points per vectorised chunk of the Hessian sample (None: all at once).
        **solver_options: e.g. ``tol``, ``max_iter``.
    Returns:
        a :class:`RemovalResult`.
    Raises:
        ValueError for a class that does not exist, a dataset with nothing left to retain, an empty α path, m
        outside [1, pool size]; :class:`~influence_core.solvers.base.SolverError` when the solver fails (message says
        what to change).
    """
    chunk_size = _chunk_alias(chunk_size, solver_options)
    task = ClassRemoval(model, dataset, params=params)  # params: the parameters updated (None = all trainable)
    if reference_model is not None:
        task.set_reference_model(removed_class, reference_model)
    return task.run(
        removed_class,
        sampler,
        m,
        seed,
        config=config,
        solver=solver,
        damping=damping,
        curvature=curvature,
        alphas=alphas,
        chunk_size=chunk_size,
        retrain_reference=retrain_reference or reference_model is not None,
        measure_memory=measure_memory,
        progress=progress,
        **solver_options,
    )


# --------------------------------------------------------------------------------------------------------------------
# Peak memory of a solve, measured in a fresh process
# --------------------------------------------------------------------------------------------------------------------

_WORKER = "import sys; from influence_core.removal.class_removal import _memory_worker; _memory_worker(sys.argv[1])"


def measure_solve_memory(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    weights: np.ndarray | None,
    rhs: torch.Tensor,
    *,
    weight_decay: float,
    solver: str = "lissa",
    damping: float = DEFAULT_DAMPING,
    curvature: str = DEFAULT_CURVATURE,
    chunk_size: int | None = None,
    solver_options: dict[str, Any] | None = None,
    threads: int | None = None,
    timeout: float = 600.0,
    params: Any = None,
) -> dict[str, Any]:
    """Peak memory of solving (H_S + δI) x = rhs on the rows (X, y), measured in a fresh Python process.

    Returns ``{"peak_kb": memory the solve added at its peak (KiB), "baseline_rss_kb": resident memory before
    the solve, "peak_rss_kb": baseline + peak, "method": how it was measured, "seconds": the worker's solve time,
    "iterations": ...}``. The model must be picklable (its class importable by module path).
    """
    payload = {
        "model": model,
        "X": X.detach(),
        "y": y.detach(),
        "weights": None if weights is None else np.asarray(weights, dtype=np.float64),
        "rhs": rhs.detach(),
        "weight_decay": float(weight_decay),
        "solver": solver,
        "damping": float(damping),
        "curvature": curvature,
        "chunk_size": int(chunk_size or len(y)),
        "solver_options": dict(solver_options or {}),
        "threads": int(threads or torch.get_num_threads()),
        "params": None if params is None else list(params),
    }
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryDirectory(prefix="removal-mem-") as tmp:
        path = os.path.join(tmp, "payload.pt")
        try:
            torch.save(payload, path)
        except Exception as exc:  # e.g. a model class defined inside a function
            raise ValueError(
                f"measure_memory needs a picklable model (class importable by module path): {exc}"
            ) from exc
        proc = subprocess.run(
            [sys.executable, "-c", _WORKER, path], capture_output=True, text=True, env=env, timeout=timeout
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the memory worker failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def _memory_worker(path: str) -> None:
    """Entry point of the measuring process (see :func:`measure_solve_memory`); prints one JSON line."""
    payload = torch.load(path, weights_only=False)  # our own temporary file, written by the parent
    torch.set_num_threads(payload["threads"])
    model = payload["model"]
    X, y, rhs, weights = payload["X"], payload["y"], payload["rhs"], payload["weights"]
    options = dict(payload["solver_options"])
    kwargs = dict(
        weight_decay=payload["weight_decay"],
        solver=payload["solver"],
        damping=payload["damping"],
        curvature=payload["curvature"],
        chunk_size=payload["chunk_size"],
        params=payload.get("params"),
    )
    # warm-up: one product on one point loads kernels and torch.func machinery (a fixed cost, not the solve's)
    Objective(model, X[:1], y[:1], payload["weight_decay"], 1, params=payload.get("params")).operator(
        None, None, payload["curvature"]
    )(rhs)
    cuda = rhs.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        method = "torch.cuda.max_memory_allocated minus the allocation before the solve"
    else:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset the peak resident set size (VmHWM) to the current one
            base = _status_kb("VmRSS")
            method = "Linux VmHWM after the solve minus VmRSS before it (peak counter reset via clear_refs)"
        except OSError:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = "getrusage ru_maxrss delta over the solve (a lower bound if an earlier peak was higher)"
        if base is None:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            method = "getrusage ru_maxrss delta over the solve (a lower bound if an earlier peak was higher)"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverNotConvergedWarning)
        result = _solve(model, X, y, weights, rhs, solver_options=options, **kwargs)
    seconds = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        peak_kb = (torch.cuda.max_memory_allocated() - base) / 1024
        base_kb = base / 1024
    else:
        hwm = _status_kb("VmHWM") if method.startswith("Linux") else None
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_kb, base_kb = float(max(hwm - base, 0)), float(base)
    print(
        json.dumps(
            {
                "peak_kb": peak_kb,
                "baseline_rss_kb": base_kb,
                "peak_rss_kb": base_kb + peak_kb,
                "method": method,
                "seconds": seconds,
                "iterations": int(result.iterations),
                "m": int(len(y)),
                "pid": os.getpid(),
            }
        )
    )
