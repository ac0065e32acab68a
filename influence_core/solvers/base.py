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
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["Operator", "SolveResult", "SolverError", "SolverDivergedError", "SolverNotConvergedWarning",
           "IndefiniteHessianWarning", "check_damping", "as_batch", "check_budget", "short_trace",
           "report_nonconvergence"]

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

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable record (without the vectors)."""
        return {"method": self.method, "iterations": self.iterations, "converged": self.converged,
                "damping": self.damping, "scale": self.scale, "seconds": self.seconds,
                "final_residual": self.trace[-1] if self.trace else None, **self.info}


def check_damping(damping: float) -> float:
    if damping is None or not math.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping}")
    return float(damping)


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


def check_budget(tol: Any, max_iter: Any) -> None:
    """Stopping rule of the iterative solvers: a finite tol > 0 and at least one iteration."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)) \
            or not math.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0 (the relative residual to reach), got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")


def short_trace(trace: list[float]) -> str:
    vals = trace if len(trace) <= 10 else trace[:5] + trace[-5:]
    return ", ".join(f"{v:.3g}" for v in vals)


def report_nonconvergence(result: SolveResult, tol: float, mode: str, advice: str) -> None:
    if result.converged:
        return
    message = (f"{result.method} did not reach tol={tol:g} in {result.iterations} iterations "
               f"(final relative residual {result.trace[-1]:.3g}); {advice}. Trace: {short_trace(result.trace)}")
    if mode == "raise":
        raise SolverError(message)
    if mode != "warn":
        raise ValueError(f"on_nonconvergence must be 'warn' or 'raise', got {mode!r}")
    warnings.warn(message, SolverNotConvergedWarning, stacklevel=3)
