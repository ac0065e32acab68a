"""What every solver of (H + δI) X = B shares: the result type, the errors, and the checks of inputs and budgets.

A solver is a pure function of an operator ``hvp: (k, p) -> (k, p)`` (V ↦ H V, see
:class:`influence_core.curvature.objective.Objective`) or of a factorised matrix. It never chooses the Hessian data:
that is the sampler's job. δ (``damping``) >= 0 is explicit and recorded. All return a :class:`SolveResult`.
The solvers themselves: :mod:`.exact`, :mod:`.low_rank`, :mod:`.cg`, :mod:`.lissa` (and the registry that names
them, :mod:`.registry`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from influence_core.checks import check_int, check_real

__all__ = [
    "Operator",
    "SolveResult",
    "SolverError",
    "SolverDivergedError",
    "SolverNotConvergedWarning",
    "IndefiniteHessianWarning",
    "check_damping",
    "as_batch",
    "check_budget",
    "short_trace",
    "report_nonconvergence",
    "Stagnation",
    "STAGNATION_WINDOW",
]

Operator = Callable[[torch.Tensor], torch.Tensor]
"""V (k, p) ↦ H V (k, p)."""


class SolverError(RuntimeError):
    """A solver could not produce a trustworthy solution; the message says why and what to change."""


class SolverDivergedError(SolverError):
    """LiSSA (or CG) diverged: NaN/inf or a growing residual. ``trace`` holds the residual history."""

    def __init__(self, message: str, trace: list[float]):
        super().__init__(message)
        self.trace = trace


class SolverNotConvergedWarning(UserWarning):
    """The iteration budget ran out before the tolerance was reached (the result says ``converged=False``)."""


@dataclass
class SolveResult:
    """Solution X (k, p) of (H + δI) X = B, and how it was obtained.

    trace: relative residual max_k ||b_k − (H+δI)x_k|| / ||b_k|| after each iteration (empty for exact).
    stop: why an iterative solver stopped: "tolerance" (reached ``tol``), "stagnation" (the residual made no new
    minimum in ``stagnation_window`` iterations: ``tol`` is below what the arithmetic reaches), "max_iter" (budget
    spent); "" for direct solvers.
    """

    x: torch.Tensor
    method: str
    iterations: int
    converged: bool
    damping: float
    trace: list[float] = field(default_factory=list)
    scale: float | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    stop: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable record (without the vectors)."""
        return {
            "method": self.method,
            "iterations": self.iterations,
            "converged": self.converged,
            "stop": self.stop,
            "damping": self.damping,
            "scale": self.scale,
            "seconds": self.seconds,
            "final_residual": self.trace[-1] if self.trace else None,
            **self.info,
        }


def check_damping(damping: float) -> float:
    """δ: a finite real number >= 0 (strings, None, booleans and NaN refused)."""
    return check_real("damping", damping, 0)


def as_batch(B: torch.Tensor) -> torch.Tensor:
    if B.ndim == 1:
        B = B.unsqueeze(0)
    if B.ndim != 2:
        raise ValueError(f"right-hand sides must be (p,) or (k, p), got shape {tuple(B.shape)}")
    if not torch.isfinite(B).all():
        raise ValueError("right-hand side contains NaN or inf (check the model's outputs and the data)")
    return B


class IndefiniteHessianWarning(UserWarning):
    """The exact solve inverts a matrix H_S + δI that is not positive definite (influence of a saddle point)."""


STAGNATION_WINDOW = 200
"""Default iterations without a new minimum of the residual after which an iterative solver stops ("stagnation")."""


def check_budget(tol: Any, max_iter: Any, stagnation_window: Any = STAGNATION_WINDOW) -> None:
    """Stopping rule of the iterative solvers: a finite tol > 0, at least one iteration, and a stagnation window
    (iterations without a new minimum of the residual before stopping; None = never stop for stagnation)."""
    if (
        isinstance(tol, bool)
        or not isinstance(tol, (int, float, np.floating, np.integer))
        or not math.isfinite(tol)
        or tol <= 0
    ):
        raise ValueError(f"tol must be a finite number > 0 (the relative residual to reach), got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if stagnation_window is not None:
        check_int("stagnation_window", stagnation_window, 1)


class Stagnation:
    """Counts iterations since the residual last reached a new minimum; ``update(r)`` is True once ``window`` of
    them have passed (None: never). Bounds every iterative solve whatever ``max_iter`` and ``tol`` say."""

    def __init__(self, window: int | None):
        self.window, self.best, self.since = window, math.inf, 0

    def update(self, residual: float) -> bool:
        if residual < self.best:
            self.best, self.since = residual, 0
        else:
            self.since += 1
        return self.window is not None and self.since >= self.window


def short_trace(trace: list[float]) -> str:
    vals = trace if len(trace) <= 10 else trace[:5] + trace[-5:]
    return ", ".join(f"{v:.3g}" for v in vals)


def report_nonconvergence(result: SolveResult, tol: float, mode: str, advice: str) -> None:
    if result.converged:
        return
    if result.stop == "stagnation":
        message = (
            f"{result.method} stopped on stagnation after {result.iterations} iterations at relative residual "
            f"{min(result.trace):.3g}: {result.info.get('stagnation', 'no progress')}, so tol={tol:g} is out "
            f"of reach at this precision; raise tol (or the damping, for a better-conditioned system). Trace: "
            f"{short_trace(result.trace)}"
        )
    else:
        message = (
            f"{result.method} did not reach tol={tol:g} in {result.iterations} iterations (max_iter; "
            f"final relative residual {result.trace[-1]:.3g}); {advice}. Trace: {short_trace(result.trace)}"
        )
    if mode == "raise":
        raise SolverError(message)
    if mode != "warn":
        raise ValueError(f"on_nonconvergence must be 'warn' or 'raise', got {mode!r}")
    warnings.warn(message, SolverNotConvergedWarning, stacklevel=3)
