"""The solver registry and the fitted inverse: one dispatch from a solver name to (H_S + δI)⁻¹.

:func:`fit_inverse` is the single entry point used by influence scoring, class removal, the studies and the CLI:

    fit_inverse(objective, indices, weights, solver="cg", damping=δ, curvature="gauss_newton", **options)
        -> FittedInverse          inv.solve(B (k, p)) -> SolveResult with x = (H_S + δI)⁻¹ bᵀ per row

Options are checked here, at fit (unknown names, ``on_nonconvergence`` not "warn"/"raise", a tolerance that is
not a positive number, ``max_iter`` < 1), not at the first solve. A :class:`FittedInverse` is picklable and
carries what scoring needs: the objective (model and data source), the sample, and the solver state (the explicit
inverse or the Woodbury factors for ``exact``; λ_max once LiSSA found it). Iterative solvers build the HVP
operator lazily on their first solve (it is not pickled), so an executor's workers receive the fitted state and
never re-form a Hessian.

Built-in solvers (one module each, registered on import of :mod:`influence_core.solvers`, in this order):
``exact``, ``cg``, ``lissa``, ``low_rank`` (the exact Gauss-Newton solve by Woodbury, whatever p), ``kfac`` and
``ekfac`` (:mod:`.kfac`), ``arnoldi`` (:mod:`.arnoldi`); :func:`available_solvers` lists them with any registered by
the user. Among them:

- ``exact``: Gauss-Newton with r = m(C−1) < p: the low-rank Woodbury inverse (needs wd + δ > 0); otherwise the
  dense H_S formed column by column and inverted by LU. The dense path checks positive definiteness of H_S + δI
  with a Cholesky factorisation: an indefinite true Hessian (a non-convex model, δ = 0) gives an
  :class:`IndefiniteHessianWarning` with λ_min and what to do (``on_indefinite="raise"`` refuses instead,
  ``"ignore"`` stays silent). ``matrix="structured"``: the dense Gauss-Newton matrix of an ``nn.Linear`` model
  from its layer pieces (:func:`influence_core.curvature.gram.gauss_newton_matrix`), inverted by Cholesky.
- ``cg``, ``lissa``: the iterative solvers, options from their signatures (``tol``, ``max_iter``, ...).

:func:`check_solver_settings` is the one check of (solver, curvature, damping, options), shared by
:class:`~influence_core.config.InfluenceConfig`, :func:`fit_inverse` and the entry points built on them.

Add a solver: ``register_solver("name", fit)`` with ``fit(objective, indices, weights, damping, curvature,
**options) -> FittedInverse`` (its keyword-only parameters are its options), or, for a matrix-free iteration,
``register_iterative_solver("name", solve)`` with ``solve(hvp, B, damping, **options) -> SolveResult``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from influence_core.config import preset_values
from influence_core.curvature.objective import CURVATURE_MODES, Objective
from influence_core.solvers.base import IndefiniteHessianWarning, SolveResult

__all__ = [
    "FittedInverse",
    "ExactFit",
    "FactorFit",
    "IterativeFit",
    "SolverSpec",
    "register_solver",
    "register_iterative_solver",
    "available_solvers",
    "fit_inverse",
    "IndefiniteHessianWarning",
    "SOLVER_REGISTRY",
    "check_solver_settings",
]


class FittedInverse:
    """(H_S + δI)⁻¹ on a fixed Hessian sample, ready to solve; picklable (see the module doc).

    Attributes: solver, damping, curvature, indices (None = all n), weights (None = uniform), options, info
    (what the fit chose, e.g. ``{"inverse": "low_rank", "rank": r}``), objective."""

    def __init__(
        self,
        objective: Objective,
        solver: str,
        indices: np.ndarray | None,
        weights: np.ndarray | None,
        damping: float,
        curvature: str,
        options: dict[str, Any],
        info: dict[str, Any] | None = None,
    ):
        self.objective, self.solver = objective, solver
        self.indices, self.weights = indices, weights
        self.damping, self.curvature = float(damping), curvature
        self.options, self.info = dict(options), dict(info or {})

    def solve(self, B: torch.Tensor) -> SolveResult:  # pragma: no cover - abstract
        raise NotImplementedError


class ExactFit(FittedInverse):
    """A factorised inverse (:class:`~influence_core.solvers.base.ExactInverse` or ``LowRankInverse``)."""

    def __init__(self, inverse: Any, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.inverse = inverse

    def solve(self, B: torch.Tensor) -> SolveResult:
        return self.inverse.solve(B.to(self.objective.device, self.objective.dtype))


class FactorFit(ExactFit):
    """A fitted factored approximation (K-FAC/EK-FAC :class:`~influence_core.solvers.kfac.KFACInverse`, Arnoldi
    :class:`~influence_core.solvers.arnoldi.ArnoldiInverse`); ``info`` says where its factor file is, if any."""


class IterativeFit(FittedInverse):
    """A matrix-free solver ``solve(hvp, B, damping, **options)`` on the sample's HVP operator (built lazily).

    LiSSA's automatic scale: λ_max found by power iteration at the first solve is kept and reused by later solves
    (and reported in their ``info``), so the power iteration runs once per fit."""

    def __init__(self, solve_fn: Callable[..., SolveResult], *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.solve_fn = solve_fn
        self.lambda_max: float | None = None
        self._operator: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_operator": None}  # closures over autograd graphs do not pickle; rebuilt lazily

    @property
    def operator(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._operator is None:
            self._operator = self.objective.operator(self.indices, self.weights, self.curvature)
        return self._operator

    def solve(self, B: torch.Tensor) -> SolveResult:
        B = B.to(self.objective.device, self.objective.dtype)
        options = dict(self.options)
        auto_scale = "scale" in inspect.signature(self.solve_fn).parameters and options.get("scale") is None
        if auto_scale and self.lambda_max is not None:
            options["scale"] = 1.1 * (self.lambda_max + self.damping)  # the automatic scale, cached
        result = self.solve_fn(self.operator, B, self.damping, **options)
        if auto_scale:
            if result.info.get("lambda_max") is not None:
                self.lambda_max = result.info["lambda_max"]
            else:
                result.info["lambda_max"] = self.lambda_max
        return result


FitFn = Callable[..., FittedInverse]
_DEFAULT = preset_values("default")


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its fit function and the options it accepts (name -> default)."""

    name: str
    fit: FitFn
    options: dict[str, Any]
    description: str = ""


SOLVER_REGISTRY: dict[str, SolverSpec] = {}


def _keyword_options(fn: Callable[..., Any], skip: int) -> dict[str, Any]:
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {
        p.name: p.default
        for p in params
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is not inspect.Parameter.empty
    }


def register_solver(name: str, fit: FitFn | None = None, *, description: str = "") -> Any:
    """Register ``fit(objective, indices, weights, damping, curvature, **options) -> FittedInverse`` as ``name``
    (also usable as a decorator). Its keyword parameters with defaults are the options checked at fit."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"solver name must be a non-empty string; got {name!r}")

    def decorator(fn: FitFn) -> FitFn:
        if name in SOLVER_REGISTRY:
            raise ValueError(
                f"a solver named {name!r} is already registered; choose another name or delete "
                f"SOLVER_REGISTRY[{name!r}] first"
            )
        SOLVER_REGISTRY[name] = SolverSpec(
            name, fn, _keyword_options(fn, 5), description or (inspect.getdoc(fn) or "").split("\n")[0]
        )
        return fn

    return decorator if fit is None else decorator(fit)


def register_iterative_solver(name: str, solve: Callable[..., SolveResult], *, description: str = "") -> None:
    """Register a matrix-free ``solve(hvp, B, damping, **options) -> SolveResult`` (options from its signature)."""

    def fit(
        objective: Objective, indices: Any, weights: Any, damping: float, curvature: str, **options: Any
    ) -> FittedInverse:
        return IterativeFit(solve, objective, name, indices, weights, damping, curvature, options)

    register_solver(name, fit, description=description or (inspect.getdoc(solve) or "").split("\n")[0])
    SOLVER_REGISTRY[name] = SolverSpec(name, fit, _keyword_options(solve, 3), SOLVER_REGISTRY[name].description)


def available_solvers() -> list[str]:
    """Registered solver names, in registration order (built-ins first)."""
    return list(SOLVER_REGISTRY)


def solver_problems(solver: Any, curvature: Any, damping: Any, options: dict[str, Any] | None = None) -> list[str]:
    """What is wrong with a (solver, curvature, damping, options) setting, one line per bad field (empty: valid)."""
    problems = []
    if solver not in SOLVER_REGISTRY:
        problems.append(f"unknown solver {solver!r}; choose one of {available_solvers()}")
    if curvature not in CURVATURE_MODES:
        problems.append(f"unknown curvature {curvature!r}; choose one of {list(CURVATURE_MODES)}")
    if (
        isinstance(damping, bool)
        or not isinstance(damping, (int, float, np.number))
        or not math.isfinite(damping)
        or damping < 0
    ):
        problems.append(f"damping must be a finite number >= 0, got {damping!r}")
    if solver in SOLVER_REGISTRY:
        problems += _option_problems(SOLVER_REGISTRY[solver], dict(options or {}))
    return problems


def check_solver_settings(solver: Any, curvature: Any, damping: Any, options: dict[str, Any] | None = None) -> None:
    """Raise ``ValueError`` (one line per bad field) unless ``solver`` is registered, ``curvature`` is a curvature
    mode, ``damping`` a finite number >= 0 and ``options`` the solver's own, with valid values."""
    problems = solver_problems(solver, curvature, damping, options)
    if problems:
        raise ValueError("\n".join(problems))


def _option_problems(spec: SolverSpec, options: dict[str, Any]) -> list[str]:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        return [
            f"solver {spec.name!r} takes no options {unknown}; its options are "
            f"{sorted(spec.options) or 'none'} (checked at fit)"
        ]
    problems = []
    for key, value in options.items():
        if value is spec.options.get(key):  # the solver's own default (e.g. None = automatic) is always valid
            continue
        if key == "on_nonconvergence" and value not in ("warn", "raise"):
            problems.append(f"on_nonconvergence must be 'warn' or 'raise', got {value!r}")
        if key == "on_indefinite" and value not in ("warn", "raise", "ignore"):
            problems.append(f"on_indefinite must be 'warn', 'raise' or 'ignore', got {value!r}")
        if key in ("tol", "divergence_factor") and not _positive_number(value):
            problems.append(f"{key} must be a positive finite number, got {value!r}")
        if key == "scale" and value is not None and not _positive_number(value):
            problems.append(f"scale must be a positive finite number or None (automatic), got {value!r}")
        if key in ("max_iter", "power_iter") and (
            isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
        ):
            problems.append(f"{key} must be an integer >= 1, got {value!r}")
    return problems


def _positive_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.number))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def fit_inverse(
    objective: Objective,
    indices: Any = None,
    weights: Any = None,
    *,
    solver: str = _DEFAULT["solver"],
    damping: float = _DEFAULT["damping"],
    curvature: str = _DEFAULT["curvature"],
    **options: Any,
) -> FittedInverse:
    """Fit the registered ``solver`` on the Hessian sample (``indices`` (m,) into the objective's training set,
    None = all; ``weights`` (m,) or None) with damping δ and curvature mode; options are validated here. The defaults
    are :class:`~influence_core.config.InfluenceConfig`'s."""
    check_solver_settings(solver, curvature, damping, options)
    if curvature == "gauss_newton":
        objective.task.require_gauss_newton()
    spec = SOLVER_REGISTRY[solver]
    idx = None if indices is None else objective.subset(indices)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None:
        objective._weights(np.arange(len(w)) if idx is None else idx, w)  # shape and sign checked now
    return spec.fit(objective, idx, w, float(damping), curvature, **options)
