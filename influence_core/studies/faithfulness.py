"""The sampler faithfulness study: how close is influence with the Hessian estimated on m sampled training points to
influence with the Hessian of the full training set, per sampler, per m, across seeds?

For one trained model and T fixed test points (drawn once with ``test_seed``), with test gradients G (T, p):

    reference   s_t   = (H_full + δI)⁻¹ g_t        (engine: exact LU when p <= 20,000, else tightly converged CG)
    sample S    ŝ_t   = (H_S + δI)⁻¹ g_t           H_S = Σ_{i∈S} w_i H_i / Σ w_i + wd·I
    scores      R[t, j] = (1/n) g_jᵀ s_t,  R̂[t, j] = (1/n) g_jᵀ ŝ_t      (n_train columns, train gradients kept once)

and per (sampler, m, seed) it records:

- ``rel_error``: mean over t of ||ŝ_t − s_t|| / ||s_t|| (iHVP relative error);
- ``spearman``: mean over t of the Spearman correlation of R̂[t] and R[t];
- ``topk_helpful`` / ``topk_harmful``: mean over t of |top-k(R̂[t]) ∩ top-k(R[t])| / k (largest / most negative);
- ``sampler_seconds``, ``solve_seconds`` (wall clock) and ``peak_mb``: the peak resident memory added by the
  sampler + solve step, measured by resetting the process's high-water mark (``/proc/self/clear_refs`` ← 5, after
  ``malloc_trim``) and reading ``VmHWM − VmRSS`` at the start (Linux only; NaN elsewhere).

Per (sampler, m) the summary gives mean ± std across seeds (the paper's "consistency") and the seed-to-seed agreement:
the mean over seed pairs and test points of the Spearman correlation (and top-k helpful overlap) between two seeds'
score rows, which needs no reference at all.

Subset solves (``solver="auto"`` with Gauss-Newton curvature) use the **exact** low-rank structure of the
Gauss-Newton matrix instead of p Hessian-vector products: with A_i = diag(p_i) − p_i p_iᵀ = Q_i Λ_i Q_iᵀ (rank C − 1)
and J_i = ∂z_i/∂θ (C, p) from ``torch.func.jacrev`` (the engine's ``Objective.gauss_newton_factors`` and
``solvers.LowRankInverse``), each point contributes U_i = Λ_i^{1/2} Q_iᵀ J_i ((C−1), p) and

    G_S + δI = c·I + U_Sᵀ U_S,  c = wd + δ,  U_S = stack_i √(w_i/Σw) U_i   (r = m(C−1) rows)
    (G_S + δI)⁻¹ g = (g − U_Sᵀ (c·I_r + U_S U_Sᵀ)⁻¹ U_S g) / c          (Woodbury; Cholesky of an r×r matrix)

(or the p×p Cholesky of c·I + U_SᵀU_S when r > p). When the (n(C−1))² Gram matrix of all training points fits in
``gram_budget_mb`` it is formed once and each subset only gathers its r×r block (``solve_seconds`` and ``peak_mb`` then
measure the per-subset Cholesky and solve, and the one-off cost is reported as ``precompute_seconds``). Other
choices (``exact``, ``cg``, ``lissa``, or ``curvature="hessian"``) go through the engine's
:class:`~influence_core.influence.calculator.InfluenceCalculator`; a solver failure (e.g. CG meeting negative curvature
on an
indefinite small-sample Hessian) is recorded as the row's ``status`` with NaN metrics, not hidden.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from influence_core.config import preset_values
from influence_core.curvature.objective import CURVATURE_MODES, EXACT_MAX_PARAMS, Objective
from influence_core.data.datasets import Dataset, load_dataset
from influence_core.evaluation.memory import PeakMemory
from influence_core.evaluation.metrics import (
    mean_std,
    relative_error,
    rowwise_pearson,
    rowwise_spearman,
    rowwise_topk_overlap,
)
from influence_core.influence.calculator import InfluenceCalculator
from influence_core.io_safety import check_output_dir, check_output_name
from influence_core.models.training import train_model
from influence_core.models.zoo import ARCHITECTURES
from influence_core.progress import Progress
from influence_core.sampling.samplers import available_samplers, draw_sample, sampler_needs
from influence_core.sampling.subsets import sampler_inputs
from influence_core.solvers.base import SolverError, SolverNotConvergedWarning
from influence_core.solvers.low_rank import LowRankInverse
from influence_core.solvers.registry import SOLVER_REGISTRY, available_solvers
from influence_core.studies.output import pyplot, save_matplotlib, save_plotly, write_csv, write_json, write_text

__all__ = [
    "StudyConfig",
    "StudyResult",
    "GaussNewtonSubsetSolver",
    "PeakMemory",
    "run_study",
    "write_outputs",
    "summarise",
    "METRICS",
    "subset_solvers",
]

METRICS = ("rel_error", "spearman", "topk_helpful", "topk_harmful")
"""Quality columns of every run row (vs the full-data reference)."""
COST = ("sampler_seconds", "solve_seconds", "peak_mb")

DEFAULT_MS = (32, 64, 128, 256, 512)


def reference_solvers() -> list[str]:
    """Full-data reference solvers of the study: "auto" (exact for p <= 20,000, else cg) and every registered
    solver."""
    return ["auto", *available_solvers()]


def subset_solvers() -> list[str]:
    """Subset solvers of the study: "auto" and every registered solver. ``low_rank`` (the exact Gauss-Newton solve by
    Woodbury) runs on the study's shared Gram matrix: one precomputation serves every sample."""
    return ["auto", *available_solvers()]


LEGACY_SOLVER_NAMES = {"woodbury": "low_rank"}
"""Older names of a subset solver, still read (committed studies record ``woodbury``)."""


# --------------------------------------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------------------------------------


_STUDY = preset_values("study")  # the committed studies name their preset, so the engine's defaults may move


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a faithfulness run (recorded in the JSON output).

    dataset/dataset_options/arch/seed/train_settings: data, split and training (``seed`` also fixes the split).
    samplers: registry names (empty = all registered). ms: Hessian sample sizes. n_seeds: sampler seeds 0..n_seeds−1.
    n_test_points/test_seed: how many test points are scored and the seed that picks them. k: top-k size.
    damping δ and curvature ("gauss_newton" | "hessian") are shared by the subsets and the reference.
    solver: subset solver ("auto" = low_rank for Gauss-Newton, else exact for p <= 20,000, else cg).
    reference_solver: "auto" (exact for p <= 20,000, else cg), "exact", "cg" or any registered solver (e.g.
    "ekfac": the subsets' agreement is then measured against EK-FAC fitted on all data); tol/max_iter: iterative
    solvers (reference_tol for the reference CG). solver_options: options of a registered subset solver (e.g.
    {"fisher": "empirical"} for ekfac, {"rank": 100} for arnoldi), also given to the reference when it is the same
    solver. hessian_reference: also score against the exact full *Hessian*
    (not Gauss-Newton) reference, p <= 20,000 only. gram_budget_mb: memory allowed for the precomputed Gram matrix.
    """

    dataset: str = "digits"
    arch: str = "mlp"
    seed: int = 0
    samplers: tuple[str, ...] = ()
    ms: tuple[int, ...] = DEFAULT_MS
    n_seeds: int = 10
    n_test_points: int = 100
    test_seed: int = 0
    k: int = 10
    damping: float = _STUDY["damping"]
    curvature: str = _STUDY["curvature"]
    solver: str = "auto"
    reference_solver: str = "auto"
    solver_options: dict[str, Any] = field(default_factory=dict)
    tol: float = 1e-6
    max_iter: int = 1000
    reference_tol: float = 1e-6
    hessian_reference: bool = False
    chunk_size: int = 256
    gram_budget_mb: float = 1500.0
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        samplers = tuple(self.samplers) or tuple(available_samplers())
        unknown = [s for s in samplers if s not in available_samplers()]
        if unknown:
            raise ValueError(
                f"unknown sampler(s) {unknown}; choose from {available_samplers()} "
                "(or register your own with influence_core.register_sampler)"
            )
        if len(set(samplers)) != len(samplers):
            raise ValueError(f"samplers are listed twice: {list(samplers)}; list each once")
        object.__setattr__(self, "samplers", samplers)
        ms = tuple(self.ms)
        if not ms or any(isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1 for m in ms):
            raise ValueError(f"subset sizes m must be integers >= 1, got {list(ms)}; e.g. --m 32 64 128")
        object.__setattr__(self, "ms", tuple(sorted({int(m) for m in ms})))
        for name, value, low in (
            ("n_seeds", self.n_seeds, 1),
            ("n_test_points", self.n_test_points, 1),
            ("k", self.k, 1),
            ("max_iter", self.max_iter, 1),
            ("chunk_size", self.chunk_size, 1),
            ("seed", self.seed, 0),
            ("test_seed", self.test_seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {list(ARCHITECTURES)}")
        if self.curvature not in CURVATURE_MODES:
            raise ValueError(f"unknown curvature {self.curvature!r}; choose one of {list(CURVATURE_MODES)}")
        if self.solver in LEGACY_SOLVER_NAMES:
            object.__setattr__(self, "solver", LEGACY_SOLVER_NAMES[self.solver])
        if self.solver not in subset_solvers():
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {subset_solvers()}")
        if self.solver == "low_rank" and self.curvature != "gauss_newton":
            raise ValueError(
                "solver 'low_rank' needs curvature='gauss_newton' (the Hessian has no such low-rank "
                "factor); use solver 'auto', 'exact' or 'cg' with curvature='hessian'"
            )
        if self.reference_solver not in reference_solvers():
            raise ValueError(f"unknown reference solver {self.reference_solver!r}; choose one of {reference_solvers()}")
        if self.solver_options and self.solver == "auto":
            raise ValueError(
                f"solver_options {sorted(self.solver_options)} need a registered subset solver (e.g. "
                f"solver='ekfac'), not {self.solver!r}"
            )
        if self.solver_options:
            known = SOLVER_REGISTRY[self.solver].options
            unknown = sorted(set(self.solver_options) - set(known))
            if unknown:
                raise ValueError(f"solver {self.solver!r} takes no options {unknown}; its options are {sorted(known)}")
        for name, value in (
            ("damping", self.damping),
            ("tol", self.tol),
            ("reference_tol", self.reference_tol),
            ("gram_budget_mb", self.gram_budget_mb),
        ):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.tol == 0 or self.reference_tol == 0:
            raise ValueError("tol and reference_tol must be > 0 (e.g. 1e-6)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["samplers"], out["ms"] = list(self.samplers), list(self.ms)
        return out


@dataclass
class StudyResult:
    """Rows (one per sampler × m × seed), the summary (one per sampler × m), and everything needed to reproduce.

    ``reference_scores`` (T, n_train), ``test_indices`` (T,) and ``scores`` {(sampler, m, seed): (T, n_train)} are
    kept in memory for callers and tests; only the records go to disk.
    """

    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    context: dict[str, Any]
    samples: list[dict[str, Any]]
    test_indices: np.ndarray
    reference_scores: np.ndarray
    scores: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "context": self.context,
            "summary": self.summary,
            "runs": self.rows,
            "test_indices": self.test_indices.tolist(),
            "samples": self.samples,
        }


# --------------------------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------------
# Exact Gauss-Newton subset solves (Woodbury)
# --------------------------------------------------------------------------------------------------------------------


class GaussNewtonSubsetSolver:
    """Exact (G_S + δI)⁻¹ B for the fixed right-hand sides B (T, p) and many index subsets S (see the module doc).

    ``objective`` supplies θ, the model and the training data; c = wd + δ must be > 0. The per-point factors U_i
    ((C−1), p) are the engine's (:meth:`Objective.gauss_newton_factors`) and the solve is the engine's
    :class:`~influence_core.solvers.base.LowRankInverse`; this class adds the all-points cache. If the factors of all n
    points and their Gram matrix fit in ``gram_budget_mb``, both are computed once (``precompute_seconds``) and a
    subset only gathers rows. ``planned_sizes`` (the m of every solve
    to come, repeats included) lets it form the Gram matrix only when that is cheaper than forming each subset's:
    Σ (m(C−1))² over the solves with m(C−1) <= p must exceed (n(C−1))².
    """

    def __init__(
        self,
        objective: Objective,
        B: torch.Tensor,
        damping: float,
        gram_budget_mb: float = 1500.0,
        planned_sizes: list[int] | None = None,
    ):
        self.obj = objective
        self.c = objective.weight_decay + float(damping)
        if self.c <= 0:
            raise ValueError("the Woodbury solve needs weight_decay + damping > 0; pass damping > 0 (e.g. 0.01)")
        self.B = B.to(objective.device, objective.dtype)
        with torch.no_grad():
            self.n_classes = int(objective.logits(objective.theta, objective.X[:1]).shape[-1])
        self.rank = self.n_classes - 1
        self.p = objective.n_params
        bytes_per = torch.finfo(objective.dtype).bits // 8
        n_rows = objective.n * self.rank
        factor_mb = n_rows * self.p * bytes_per / 2**20
        gram_mb = n_rows * n_rows * bytes_per / 2**20
        planned = [m * self.rank for m in (planned_sizes or [objective.n])]
        gram_pays = planned_sizes is None or sum(r * r for r in planned if r <= self.p) > n_rows * n_rows
        self.factors_stored = factor_mb <= gram_budget_mb
        self.precomputed = self.factors_stored and gram_pays and factor_mb + gram_mb <= gram_budget_mb
        self.precompute_seconds = 0.0
        self.U_all = self.K_all = self.P_all = None
        start = time.perf_counter()
        if self.factors_stored:
            self.U_all = self.factors(np.arange(objective.n))  # (nR, p)
        if self.precomputed:
            self.K_all = self.U_all @ self.U_all.T  # (nR, nR)
            self.P_all = self.U_all @ self.B.T  # (nR, T)
        self.precompute_seconds = time.perf_counter() - start

    def factors(self, indices: np.ndarray) -> torch.Tensor:
        """U_S rows (len(indices)·(C−1), p), unweighted (:meth:`Objective.gauss_newton_factors`)."""
        return self.obj.gauss_newton_factors(np.asarray(indices), unweighted=True)

    def solve(self, indices: np.ndarray, weights: np.ndarray | None = None) -> torch.Tensor:
        """(G_S + δI)⁻¹ bᵀ for every row b of B: (T, p). ``weights`` (m,) optional, normalised to sum 1.
        The inverse is the engine's :class:`~influence_core.solvers.base.LowRankInverse`, fed the gathered rows."""
        idx = np.asarray(indices, dtype=np.int64)
        w = np.full(len(idx), 1.0 / len(idx)) if weights is None else np.asarray(weights, float) / np.sum(weights)
        d = torch.as_tensor(np.repeat(np.sqrt(w), self.rank), device=self.obj.device, dtype=self.obj.dtype)
        rows = torch.as_tensor((idx[:, None] * self.rank + np.arange(self.rank)).ravel(), device=self.obj.device)
        U = (self.U_all[rows] if self.factors_stored else self.factors(idx)) * d[:, None]  # (r, p), weighted
        gram = projected = None
        if self.precomputed and U.shape[0] < self.p:
            gram = self.K_all[rows][:, rows] * (d[:, None] * d[None, :])
            projected = self.P_all[rows] * d[:, None]
        return LowRankInverse(U, self.c, gram=gram).solve(self.B, projected).x


# --------------------------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------------------------


def _note(progress: Progress | None, fraction: float, message: str) -> None:
    if progress:
        progress(min(max(fraction, 0.0), 1.0), message)


def _resolve_subset_solver(config: StudyConfig, p: int) -> str:
    if config.solver != "auto":
        return config.solver
    if config.curvature == "gauss_newton":
        return "low_rank"
    return "exact" if p <= EXACT_MAX_PARAMS else "cg"


def _reference(
    calc: InfluenceCalculator, G: torch.Tensor, config: StudyConfig, curvature: str, solver: str
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(H_full + δI)⁻¹ G (T, p) with the engine, and its record."""
    start = time.perf_counter()
    if solver == "exact":
        calc.fit(None, solver="exact", damping=config.damping, curvature=curvature)
    elif solver == "cg":
        calc.fit(
            None,
            solver="cg",
            damping=config.damping,
            curvature=curvature,
            tol=config.reference_tol,
            max_iter=config.max_iter,
        )
    else:
        options = _solver_options(config, solver, config.reference_tol)
        calc.fit(None, solver=solver, damping=config.damping, curvature=curvature, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverNotConvergedWarning)  # recorded below instead
        solved = calc.ihvp(G)
    info = {
        "solver": solver,
        "curvature": curvature,
        "damping": config.damping,
        **solved.summary(),
        "total_seconds": time.perf_counter() - start,
    }  # "seconds" (from the summary) is the solve alone
    if solver == "cg":
        info["tol"] = config.reference_tol
    return solved.x, info


def _solver_options(config: StudyConfig, solver: str, tol: float) -> dict[str, Any]:
    """The options a registered solver gets in the study: tol/max_iter if it takes them (CG, LiSSA), plus
    ``config.solver_options`` when it is the study's subset solver."""
    known = SOLVER_REGISTRY[solver].options
    options = {k: v for k, v in (("tol", tol), ("max_iter", config.max_iter)) if k in known}
    if solver in ("exact", "arnoldi"):
        options = {}  # the exact solve has no tolerance; ARPACK's default accuracy unless asked
    if solver == config.solver:
        options.update(config.solver_options)
    return options


def _check_sizes(config: StudyConfig, dataset: Dataset) -> None:
    too_big = [m for m in config.ms if m > dataset.n_train]
    if too_big:
        raise ValueError(
            f"subset size(s) m = {too_big} exceed the {dataset.n_train} training points of "
            f"{dataset.name!r}; choose m <= {dataset.n_train}"
        )
    if config.n_test_points > dataset.n_test:
        raise ValueError(
            f"n_test_points = {config.n_test_points} exceeds the {dataset.n_test} test points of "
            f"{dataset.name!r}; choose at most {dataset.n_test}"
        )
    if config.k > dataset.n_train:
        raise ValueError(f"k = {config.k} exceeds the {dataset.n_train} training points; choose a smaller k")


def _quality(
    est_x: torch.Tensor, est_scores: np.ndarray, ref_x: torch.Tensor, ref_scores: np.ndarray, k: int
) -> dict[str, float]:
    return {
        "rel_error": float(np.mean(relative_error(est_x.double().cpu().numpy(), ref_x.double().cpu().numpy()))),
        "spearman": float(np.nanmean(rowwise_spearman(est_scores, ref_scores))),
        "topk_helpful": float(np.nanmean(rowwise_topk_overlap(est_scores, ref_scores, k, largest=True))),
        "topk_harmful": float(np.nanmean(rowwise_topk_overlap(est_scores, ref_scores, k, largest=False))),
    }


def run_study(
    config: StudyConfig,
    *,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    progress: Progress | None = None,
    executor: Any = None,
    train_chunk_size: int | None = None,
) -> StudyResult:
    """Run the study described by ``config``. Pass ``dataset`` and/or ``model`` to reuse them (the model must have
    been trained on ``dataset`` with ``model.weight_decay`` set, as :func:`train_model` does).

    Scores R = (1/n) X G_trainᵀ: by default the (n, p) training gradients are kept in memory and each score matrix
    is one product. With an ``executor`` (see :func:`influence_core.influence.executors.get_executor`: sequential, or
    Dask
    workers) the training gradients are never stored: every score matrix is computed block by block
    (``train_chunk_size`` training points per block) by :meth:`InfluenceCalculator.scores_from_ihvp`, on the
    executor, so memory is bounded by the chunk and the blocks can run on a cluster."""
    t0 = time.perf_counter()
    if dataset is None:
        dataset = load_dataset(config.dataset, seed=config.seed, **config.dataset_options)
    _check_sizes(config, dataset)
    if model is None:
        _note(progress, 0.0, f"training {config.arch} on {dataset.name}")
        model = train_model(dataset, config.arch, seed=config.seed, **config.train_settings)
    train_seconds = time.perf_counter() - t0

    test_idx = np.sort(
        np.random.default_rng(config.test_seed).choice(dataset.n_test, config.n_test_points, replace=False)
    )
    calc = InfluenceCalculator(model, dataset.X_train, dataset.y_train, chunk_size=config.chunk_size)
    obj = calc.objective
    n, p = obj.n, obj.n_params
    start = time.perf_counter()
    G = calc.gradients(dataset.X_test[test_idx], dataset.y_test[test_idx])  # (T, p)
    G_train = None if executor is not None else torch.cat([g for _, g in obj.train_grads()])  # (n, p)
    grad_seconds = time.perf_counter() - start

    def score(X: torch.Tensor) -> np.ndarray:
        """R[t, j] = (1/n) g_jᵀ x_t: (T, n)."""
        if G_train is None:
            return calc.scores_from_ihvp(X, executor=executor, train_chunk_size=train_chunk_size)
        return (X @ G_train.T).double().cpu().numpy() / n

    ref_solver = config.reference_solver
    if ref_solver == "auto":
        ref_solver = "exact" if p <= EXACT_MAX_PARAMS else "cg"
    if ref_solver == "exact" and p > EXACT_MAX_PARAMS:
        raise ValueError(
            f"the exact reference needs p <= {EXACT_MAX_PARAMS}, the model has {p} parameters; "
            "use reference_solver='cg'"
        )
    _note(progress, 0.02, f"reference: {ref_solver} solve of the full-data {config.curvature} (p={p}, n={n})")
    ref_x, ref_info = _reference(calc, G, config, config.curvature, ref_solver)
    ref_scores = score(ref_x)
    context: dict[str, Any] = {
        "dataset": dataset.describe(),
        "n_train": n,
        "n_params": p,
        "test_indices_seed": config.test_seed,
        "model": {
            "arch": config.arch,
            "training_config": getattr(model, "training_config", None),
            "training_report": getattr(model, "training_report", None),
            "weight_decay": obj.weight_decay,
            "dtype": str(obj.dtype),
            "device": str(obj.device),
        },
        "reference": ref_info,
        "train_seconds": train_seconds,
        "gradient_seconds": grad_seconds,
        "scoring": (
            "in-memory training gradients"
            if executor is None
            else {"blocked": True, "train_chunk_size": train_chunk_size, "executor": executor.describe()}
        ),
        "peak_memory_method": (
            "VmHWM - VmRSS after malloc_trim + /proc/self/clear_refs reset (Linux)"
            if PeakMemory.supported()
            else "unavailable on this platform (NaN)"
        ),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
    }
    hess_x = hess_scores = None
    if config.hessian_reference:
        if p > EXACT_MAX_PARAMS:
            raise ValueError(f"hessian_reference needs an exact solve (p <= {EXACT_MAX_PARAMS}); the model has {p}")
        _note(progress, 0.05, "second reference: exact full-data Hessian")
        hess_x, hess_info = _reference(calc, G, config, "hessian", "exact")
        hess_scores = score(hess_x)
        context["hessian_reference"] = {
            **hess_info,
            "agreement_with_reference": _quality(ref_x, ref_scores, hess_x, hess_scores, config.k),
        }

    solver = _resolve_subset_solver(config, p)
    woodbury = None
    if solver == "low_rank":
        _note(progress, 0.06, "precomputing Gauss-Newton factors")
        planned = [m for m in config.ms for _ in range(len(config.samplers) * config.n_seeds)]
        woodbury = GaussNewtonSubsetSolver(obj, G, config.damping, config.gram_budget_mb, planned)
        context["low_rank_gram"] = {
            "precomputed_gram": woodbury.precomputed,
            "stored_factors": woodbury.factors_stored,
            "precompute_seconds": woodbury.precompute_seconds,
            "rank_per_point": woodbury.rank,
        }
    context["subset_solver"] = solver

    needs_features = any("features" in sampler_needs(s) for s in config.samplers)
    inputs = sampler_inputs(model, dataset, with_features=needs_features)

    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    scores: dict[tuple[str, int, int], np.ndarray] = {}
    total = len(config.samplers) * len(config.ms) * config.n_seeds
    done = 0
    for sampler, m, seed in itertools.product(config.samplers, config.ms, range(config.n_seeds)):
        row: dict[str, Any] = {
            "dataset": dataset.name,
            "arch": config.arch,
            "curvature": config.curvature,
            "damping": config.damping,
            "solver": solver,
            "sampler": sampler,
            "m": m,
            "seed": seed,
            "n_test_points": len(test_idx),
            "k": config.k,
        }
        status, iterations, converged = "ok", 0, True
        with PeakMemory() as mem:
            t = time.perf_counter()
            sample = draw_sample(sampler, inputs, m, seed=seed)
            sampler_seconds = time.perf_counter() - t
            t = time.perf_counter()
            try:
                if woodbury is not None:
                    X = woodbury.solve(sample.indices, sample.weights)
                else:
                    options = _solver_options(config, solver, config.tol)
                    calc.fit(sample, solver=solver, damping=config.damping, curvature=config.curvature, **options)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", SolverNotConvergedWarning)
                        solved = calc.ihvp(G)
                    X, iterations, converged = solved.x, solved.iterations, solved.converged
                    if not converged:
                        status = f"not converged (residual {solved.trace[-1]:.3g} > tol {config.tol:g})"
            except SolverError as exc:
                X, status, converged = None, f"failed: {str(exc).splitlines()[0][:200]}", False
            solve_seconds = time.perf_counter() - t
        if X is not None and bool(torch.isfinite(X).all()):
            est = score(X)
            scores[(sampler, m, seed)] = est
            row.update(_quality(X, est, ref_x, ref_scores, config.k))
            if hess_x is not None:
                q = _quality(X, est, hess_x, hess_scores, config.k)
                row.update({f"{key}_vs_hessian": value for key, value in q.items()})
        else:
            if X is not None:
                status = "failed: non-finite solution"
            row.update({key: float("nan") for key in METRICS})
            if hess_x is not None:
                row.update({f"{key}_vs_hessian": float("nan") for key in METRICS})
        row.update(
            {
                "sampler_seconds": sampler_seconds,
                "solve_seconds": solve_seconds,
                "peak_mb": mem.mb,
                "iterations": iterations,
                "converged": converged,
                "weighted": sample.weights is not None,
                "status": status,
            }
        )
        rows.append(row)
        samples.append(sample.to_dict())
        done += 1
        _note(progress, 0.1 + 0.9 * done / total, f"{sampler} m={m} seed={seed}: {status}")
    context["total_seconds"] = time.perf_counter() - t0
    summary = summarise(rows, scores, config.k)
    return StudyResult(config.to_dict(), rows, summary, context, samples, test_idx, ref_scores, scores)


def _pairwise_agreement(mats: list[np.ndarray], k: int) -> tuple[float, float]:
    """Mean over seed pairs and test points of Spearman(R_a[t], R_b[t]) and of the top-k helpful overlap."""
    if len(mats) < 2:
        return float("nan"), float("nan")
    ranks = [rankdata(M, axis=1) for M in mats]
    rho, overlap = [], []
    for a, b in itertools.combinations(range(len(mats)), 2):
        rho.append(np.nanmean(rowwise_pearson(ranks[a], ranks[b])))
        overlap.append(np.nanmean(rowwise_topk_overlap(mats[a], mats[b], k)))
    return float(np.mean(rho)), float(np.mean(overlap))


def summarise(
    rows: list[dict[str, Any]], scores: dict[tuple[str, int, int], np.ndarray], k: int
) -> list[dict[str, Any]]:
    """One record per (sampler, m): mean and std across seeds of every metric (over the seeds with finite metrics,
    i.e. converged or not-converged solves) and cost, the numbers of failed and not-converged seeds,
    and the seed-to-seed agreement (``seed_spearman``, ``seed_topk``; NaN with fewer than 2 successful seeds)."""
    out = []
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["sampler"], row["m"]), []).append(row)
    for (sampler, m), group in groups.items():
        ok = [r for r in group if all(math.isfinite(r[key]) for key in METRICS)]  # incl. "not converged"
        record: dict[str, Any] = {
            "sampler": sampler,
            "m": m,
            "seeds": len(group),
            "failed": sum(r["status"].startswith("failed") for r in group),
            "not_converged": sum(r["status"].startswith("not converged") for r in group),
        }
        keys = [key for key in group[0] if key in METRICS or key.endswith("_vs_hessian") or key in COST]
        for key in keys:
            values = [r[key] for r in (ok if key not in COST else group)]
            mean, std = mean_std(values) if values else (float("nan"), float("nan"))
            record[f"{key}_mean"], record[f"{key}_std"] = mean, std
        mats = [scores[(sampler, m, r["seed"])] for r in ok if (sampler, m, r["seed"]) in scores]
        record["seed_spearman"], record["seed_topk"] = _pairwise_agreement(mats, k)
        out.append(record)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Outputs: CSV, JSON, Markdown, PNG, HTML
# --------------------------------------------------------------------------------------------------------------------

_LABELS = {
    "spearman": "Spearman vs full-data scores",
    "rel_error": "iHVP relative error",
    "topk_helpful": "top-k helpful overlap",
    "topk_harmful": "top-k harmful overlap",
    "seed_spearman": "seed-to-seed Spearman",
    "solve_seconds": "solve seconds",
}
_PANELS = ("spearman", "rel_error", "topk_helpful", "topk_harmful", "seed_spearman", "solve_seconds")


def _pm(record: dict[str, Any], key: str, digits: int = 3) -> str:
    mean, std = record.get(f"{key}_mean", float("nan")), record.get(f"{key}_std", float("nan"))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def gap_table(summary: list[dict[str, Any]], metric: str = "spearman") -> list[dict[str, Any]]:
    """Per m: the best sampler by mean ``metric`` (lowest for rel_error), its mean/std, random's, and the gap."""
    out = []
    sign = -1.0 if metric == "rel_error" else 1.0
    for m in sorted({r["m"] for r in summary}):
        at_m = [r for r in summary if r["m"] == m and np.isfinite(r[f"{metric}_mean"])]
        base = next((r for r in at_m if r["sampler"] == "random"), None)
        if not at_m or base is None:
            continue
        best = max(at_m, key=lambda r: sign * r[f"{metric}_mean"])
        out.append(
            {
                "m": m,
                "best": best["sampler"],
                "best_mean": best[f"{metric}_mean"],
                "best_std": best[f"{metric}_std"],
                "random_mean": base[f"{metric}_mean"],
                "random_std": base[f"{metric}_std"],
                "gap": best[f"{metric}_mean"] - base[f"{metric}_mean"],
                "std_ratio": (
                    best[f"{metric}_std"] / base[f"{metric}_std"] if base[f"{metric}_std"] > 0 else float("nan")
                ),
            }
        )
    return out


def markdown(result: StudyResult) -> str:
    """The Markdown report: configuration line, mean ± std table per (sampler, m), and the gap to random."""
    cfg, ctx = result.config, result.context
    ref = ctx["reference"]
    lines = [
        f"### {cfg['dataset']} / {cfg['arch']} (p = {ctx['n_params']}, n = {ctx['n_train']}, "
        f"{cfg['n_test_points']} test points, {cfg['n_seeds']} seeds, k = {cfg['k']})",
        "",
        f"Curvature {cfg['curvature']}, damping {cfg['damping']}, subset solver {ctx['subset_solver']}; "
        f"reference: {ref['solver']} solve on all {ctx['n_train']} points"
        + (
            f" (CG {ref['iterations']} iterations, final residual {ref.get('final_residual'):.2g}, "
            f"converged={ref['converged']})"
            if ref["solver"] == "cg"
            else ""
        )
        + ". "
        "Mean ± std across seeds; seed agreement = mean pairwise Spearman between seeds.",
        "",
        "| sampler | m | Spearman | iHVP rel. error | top-k helpful | top-k harmful | seed agreement | "
        "sampler s | solve s | peak MB | failed |",
        "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result.summary, key=lambda r: (r["m"], r["sampler"])):
        lines.append(
            f"| {r['sampler']} | {r['m']} | {_pm(r, 'spearman')} | {_pm(r, 'rel_error')} | "
            f"{_pm(r, 'topk_helpful', 2)} | {_pm(r, 'topk_harmful', 2)} | {r['seed_spearman']:.3f} | "
            f"{r['sampler_seconds_mean']:.3f} | {r['solve_seconds_mean']:.3f} | {r['peak_mb_mean']:.0f} | "
            f"{r['failed']}/{r['seeds']}{f' ({n} n.c.)' if (n := r['not_converged']) else ''} |"
        )
    gaps = gap_table(result.summary)
    if gaps:
        lines += [
            "",
            "Best sampler vs random (Spearman; std ratio < 1 = more consistent than random):",
            "",
            "| m | best | best mean ± std | random mean ± std | gap | std ratio |",
            "|---:|---|---|---|---:|---:|",
        ]
        for g in gaps:
            lines.append(
                f"| {g['m']} | {g['best']} | {g['best_mean']:.3f} ± {g['best_std']:.3f} | "
                f"{g['random_mean']:.3f} ± {g['random_std']:.3f} | {g['gap']:+.3f} | {g['std_ratio']:.2f} |"
            )
    if "hessian_reference" in ctx:
        agree = ctx["hessian_reference"]["agreement_with_reference"]
        lines += [
            "",
            f"Full-data {cfg['curvature']} vs exact full-data Hessian: Spearman {agree['spearman']:.3f}, "
            f"iHVP relative error {agree['rel_error']:.3f}, top-k helpful {agree['topk_helpful']:.2f}.",
        ]
    return "\n".join(lines) + "\n"


def _series(summary: list[dict[str, Any]], sampler: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    recs = sorted((r for r in summary if r["sampler"] == sampler), key=lambda r: r["m"])
    m = np.array([r["m"] for r in recs], dtype=float)
    if key.startswith("seed_"):
        return m, np.array([r[key] for r in recs]), np.zeros(len(recs))
    return m, np.array([r[f"{key}_mean"] for r in recs]), np.array([r[f"{key}_std"] for r in recs])


def _any_positive(result: StudyResult, samplers: list[str], key: str) -> bool:
    """Whether a log axis can show panel ``key`` (some mean above zero)."""
    return any(bool(np.any(np.nan_to_num(_series(result.summary, s, key)[1]) > 0)) for s in samplers)


def plot_png(result: StudyResult, path: Path) -> None:
    """Quality vs m, one line per sampler, mean ± std band across seeds (matplotlib, Agg)."""
    plt = pyplot()

    samplers = list(dict.fromkeys(r["sampler"] for r in result.summary))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, key in zip(axes.ravel(), _PANELS):
        for i, sampler in enumerate(samplers):
            m, mean, std = _series(result.summary, sampler, key)
            color = f"C{i}"
            ax.plot(m, mean, marker="o", color=color, label=sampler)
            ax.fill_between(m, mean - std, mean + std, color=color, alpha=0.15)
        ax.set_xscale("log", base=2)
        ms = [r["m"] for r in result.summary]
        ax.set_xlim(min(ms) / 1.5, max(ms) * 1.5)  # also for a panel without finite values (e.g. one seed)
        if key in ("rel_error", "solve_seconds") and _any_positive(result, samplers, key):
            ax.set_yscale("log")  # (a tiny study can have only zeros here: then the axis stays linear)
        ax.set_xlabel("Hessian sample size m")
        ax.set_title(_LABELS[key])
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    cfg = result.config
    fig.suptitle(
        f"Sampler faithfulness: {cfg['dataset']} / {cfg['arch']}, {cfg['curvature']}, damping "
        f"{cfg['damping']}, {cfg['n_seeds']} seeds (bands: ± 1 std)"
    )
    fig.tight_layout()
    save_matplotlib(fig, path)


def plot_html(result: StudyResult, path: Path, plotlyjs: str = "inline") -> None:
    """The same panels as :func:`plot_png` as an interactive plotly page (``plotlyjs``: "inline" or "cdn")."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    samplers = list(dict.fromkeys(r["sampler"] for r in result.summary))
    fig = make_subplots(rows=2, cols=3, subplot_titles=[_LABELS[k] for k in _PANELS])
    for idx, key in enumerate(_PANELS):
        row, col = idx // 3 + 1, idx % 3 + 1
        for i, sampler in enumerate(samplers):
            m, mean, std = _series(result.summary, sampler, key)
            color = qualitative.Plotly[i % len(qualitative.Plotly)]
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([m, m[::-1]]),
                    y=np.concatenate([mean + std, (mean - std)[::-1]]),
                    fill="toself",
                    fillcolor=color,
                    opacity=0.15,
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=sampler,
                ),
                row=row,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=m,
                    y=mean,
                    mode="lines+markers",
                    name=sampler,
                    legendgroup=sampler,
                    line={"color": color},
                    showlegend=idx == 0,
                    customdata=std,
                    hovertemplate=f"{sampler} m=%{{x}}: %{{y:.4g}} ± %{{customdata:.2g}}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(type="log", title_text="m", row=row, col=col)
        if key in ("rel_error", "solve_seconds") and _any_positive(result, samplers, key):
            fig.update_yaxes(type="log", row=row, col=col)
    cfg = result.config
    fig.update_layout(
        title=f"Sampler faithfulness: {cfg['dataset']} / {cfg['arch']}, {cfg['curvature']}, "
        f"damping {cfg['damping']}, {cfg['n_seeds']} seeds (bands: ± 1 std)",
        height=750,
    )
    save_plotly(fig, path, plotlyjs)


OUTPUT_FILES = ("{name}_runs.csv", "{name}_summary.csv", "{name}.json", "{name}.md", "{name}.png", "{name}.html")


def check_study_outputs(out_dir: Any, name: str, what: tuple[str, str] = ("--out", "--name")) -> None:
    """Check ``out_dir`` and every file :func:`write_outputs` will write there for ``name`` (a file name, never a
    path) before the study runs; creates nothing."""
    check_output_name(name, what[1])
    check_output_dir(out_dir, what[0], [f.format(name=name) for f in OUTPUT_FILES])


def write_outputs(
    result: StudyResult, out_dir: str | os.PathLike, name: str | None = None, plotlyjs: str = "inline"
) -> dict[str, Path]:
    """Write ``{name}_runs.csv``, ``{name}_summary.csv``, ``{name}.json``, ``{name}.md``, ``{name}.png`` and
    ``{name}.html`` into ``out_dir`` (created when missing); ``name`` (a file name, never a path) defaults to
    ``{dataset}_{arch}``. Returns the paths."""
    if plotlyjs not in ("inline", "cdn"):
        raise ValueError(f"plotlyjs must be 'inline' or 'cdn', got {plotlyjs!r}")
    if name is None:
        name = f"{result.config['dataset']}_{result.config['arch']}"
    check_study_outputs(out_dir, name, ("out_dir", "name"))
    out = Path(os.path.expanduser(os.fspath(out_dir)))
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "runs_csv": out / f"{name}_runs.csv",
        "summary_csv": out / f"{name}_summary.csv",
        "json": out / f"{name}.json",
        "markdown": out / f"{name}.md",
        "png": out / f"{name}.png",
        "html": out / f"{name}.html",
    }
    write_csv(paths["runs_csv"], result.rows)
    write_csv(paths["summary_csv"], result.summary)
    write_json(paths["json"], result.to_json())
    write_text(paths["markdown"], markdown(result))
    plot_png(result, paths["png"])
    plot_html(result, paths["html"], plotlyjs)
    return paths
