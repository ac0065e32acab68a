"""``lissa``: the Neumann iteration x_{j+1} = b + (I − (H+δI)/s) x_j, solution x/s, matrix-free.

Automatic scale s = 1.1·(λ_max(H) + δ) from power iteration (convergent for positive-definite H + δI). Since
x_{j+1} − x_j = b − (H+δI)(x_j/s) is exactly the residual of the current iterate, the trace records the relative
residual per iteration and the stopping rule is the same as CG's. A NaN or growing residual raises
:class:`SolverDivergedError` with the trace and what to change.
"""

from __future__ import annotations

import math
import time

import torch

from influence_core.curvature.objective import largest_eigenvalue
from influence_core.solvers.base import (
    STAGNATION_WINDOW,
    Operator,
    SolverDivergedError,
    SolverError,
    SolveResult,
    Stagnation,
    as_batch,
    check_budget,
    check_damping,
    report_nonconvergence,
    short_trace,
)
from influence_core.solvers.registry import register_iterative_solver

__all__ = ["solve_lissa"]


def solve_lissa(
    hvp: Operator,
    B: torch.Tensor,
    damping: float = 0.0,
    *,
    scale: float | None = None,
    tol: float = 1e-4,
    max_iter: int = 10_000,
    divergence_factor: float = 1e4,
    on_nonconvergence: str = "warn",
    power_iter: int = 100,
    seed: int = 0,
    stagnation_window: int | None = STAGNATION_WINDOW,
) -> SolveResult:
    """LiSSA / Neumann series for (H + δI) X = B, batched over the k columns.

    ``scale`` s must exceed λ_max(H) + δ; None (default) sets s = 1.1·(λ_max + δ) by power iteration on ``hvp``.
    Converges when H + δI is positive definite, at rate 1 − (λ_min + δ)/s per iteration: more damping converges
    faster but biases the solution. Stops when the relative residual (the trace) is <= ``tol``.
    Raises :class:`SolverDivergedError` when the residual becomes NaN/inf or grows ``divergence_factor``-fold; stops
    early when the residual made no new minimum in ``stagnation_window`` iterations (``result.stop``).
    """
    damping = check_damping(damping)
    check_budget(tol, max_iter, stagnation_window)
    B = as_batch(B)
    start = time.perf_counter()
    lam_max = None
    if scale is None:
        lam_max = largest_eigenvalue(lambda V: hvp(V), B.shape[1], B.device, B.dtype, max_iter=power_iter, seed=seed)
        if not math.isfinite(lam_max) or lam_max + damping <= 0:
            raise SolverError(
                f"power iteration gave λ_max={lam_max}: the Hessian is not positive on this sample; "
                "increase damping or use curvature='gauss_newton'"
            )
        scale = 1.1 * (lam_max + damping)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    bnorm = B.norm(dim=1).clamp_min(torch.finfo(B.dtype).tiny)
    X = B.clone()  # x_1 = b (x_0 = 0)
    trace: list[float] = []
    it = 0
    stop = "max_iter"
    stalled = Stagnation(stagnation_window)
    for it in range(1, max_iter + 1):
        residual = B - (hvp(X / scale) + damping * X / scale)  # = x_{j+1} − x_j
        rel = residual.norm(dim=1) / bnorm
        trace.append(float(rel.max()))
        if not math.isfinite(trace[-1]) or trace[-1] > divergence_factor * max(trace[0], 1.0):
            raise SolverDivergedError(
                f"LiSSA diverged at iteration {it} (relative residual {trace[-1]:.3g}, started at {trace[0]:.3g}) "
                f"with scale={scale:.4g}, damping={damping:.3g}. The iteration needs scale > λ_max(H) + damping and "
                "H + damping·I positive definite: leave scale=None (automatic) or raise it, and raise damping "
                "(or use curvature='gauss_newton') if the Hessian has negative eigenvalues. "
                f"Residual trace (first/last 5): {short_trace(trace)}",
                trace,
            )
        if trace[-1] <= tol:
            stop = "tolerance"
            break
        if stalled.update(trace[-1]):
            stop = "stagnation"
            break
        X = X + residual
    result = SolveResult(
        X / scale,
        "lissa",
        it,
        trace[-1] <= tol,
        damping,
        trace,
        scale,
        time.perf_counter() - start,
        info={
            "tol": tol,
            "max_iter": max_iter,
            "lambda_max": lam_max,
            "stagnation_window": stagnation_window,
            **(
                {"stagnation": f"the residual made no new minimum in the last {stagnation_window} iterations"}
                if stop == "stagnation"
                else {}
            ),
        },
        stop=stop,
    )
    report_nonconvergence(
        result, tol, on_nonconvergence, "increase max_iter, or increase damping (faster convergence, more bias)"
    )
    return result


register_iterative_solver("lissa", solve_lissa, description="LiSSA / Neumann series with automatic scale")
