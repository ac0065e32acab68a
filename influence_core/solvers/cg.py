"""``cg``: conjugate gradient on (H_S + δI) X = B, batched over the k columns, matrix-free (one batched HVP per
iteration). Stops when every relative residual ||b − (H+δI)x|| / ||b|| <= tol; raises :class:`SolverError` on
non-positive curvature (H_S + δI must be positive definite: use Gauss-Newton curvature or more damping).
"""

from __future__ import annotations

import math
import time

import torch

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
)
from influence_core.solvers.registry import register_iterative_solver

__all__ = ["solve_cg"]


def solve_cg(
    hvp: Operator,
    B: torch.Tensor,
    damping: float = 0.0,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    on_nonconvergence: str = "warn",
    stagnation_window: int | None = STAGNATION_WINDOW,
) -> SolveResult:
    """Conjugate gradient on (H + δI) X = B, all k columns at once (one batched HVP per iteration).

    Stops when every column's relative residual is <= ``tol``; a zero column of B is converged at X = 0 from the
    start (0 iterations when B = 0). H + δI must be positive definite on the span explored: non-positive curvature
    raises :class:`SolverError` (increase damping, or use Gauss-Newton curvature).
    ``on_nonconvergence``: "warn" (default) or "raise" when ``max_iter`` is reached first, or when the residual made
    no new minimum in ``stagnation_window`` iterations (None: never stop for that); ``result.stop`` says which.
    """
    damping = check_damping(damping)
    check_budget(tol, max_iter, stagnation_window)
    B = as_batch(B)
    start = time.perf_counter()

    def A(V: torch.Tensor) -> torch.Tensor:
        return hvp(V) + damping * V

    bnorm = B.norm(dim=1).clamp_min(torch.finfo(B.dtype).tiny)
    X = torch.zeros_like(B)
    R = B.clone()
    P = R.clone()
    rs = (R * R).sum(1)
    trace: list[float] = []
    active = B.norm(dim=1) > 0  # a zero right-hand side is solved by X = 0 from the start
    it = 0
    stop, why = "max_iter", ""
    stalled = Stagnation(stagnation_window)
    eps = torch.finfo(B.dtype).eps
    lam = torch.zeros((), dtype=B.dtype, device=B.device)  # largest Rayleigh quotient of H + δI seen (<= ||H + δI||)
    if not bool(active.any()):
        trace.append(0.0)
    for it in range(1, max_iter + 1 if bool(active.any()) else 1):
        AP = A(P)
        curv = (P * AP).sum(1)
        if bool(((curv <= 0) & active).any()):
            raise SolverError(
                "conjugate gradient met non-positive curvature: H + damping·I is not positive definite on this "
                f"Hessian sample (damping={damping}). Increase damping above |λ_min|, or use curvature='gauss_newton'."
            )
        alpha = torch.where(active, rs / curv.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(rs))
        X += alpha[:, None] * P
        R -= alpha[:, None] * AP
        rs_new = (R * R).sum(1)
        rel = rs_new.sqrt() / bnorm
        trace.append(float(rel.max()))
        if not math.isfinite(trace[-1]):
            raise SolverDivergedError(f"CG produced NaN/inf at iteration {it}; increase damping", trace)
        active = rel > tol
        if not bool(active.any()):
            break
        # the updated residual R keeps shrinking after the true residual b − (H+δI)x has hit the precision of the
        # arithmetic (about eps·||H+δI||·||x||): once R is 1000 times below that floor (so any tol a solve can
        # honestly reach has been passed), or without a new minimum for a while, CG has stalled
        lam = torch.maximum(lam, (curv / (P * P).sum(1).clamp_min(torch.finfo(B.dtype).tiny)).max())
        floor = eps * lam * X.norm(dim=1) / bnorm / 250
        if bool((rel[active] <= floor[active]).all()):
            stop, why = "stagnation", "its residual fell below what the arithmetic resolves (eps·||H+δI||·||x||)"
            break
        if stalled.update(trace[-1]):
            stop, why = "stagnation", f"the residual made no new minimum in the last {stagnation_window} iterations"
            break
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(rs))
        P = R + beta[:, None] * P
        rs = rs_new
    converged = trace[-1] <= tol
    result = SolveResult(
        X,
        "cg",
        it,
        converged,
        damping,
        trace,
        seconds=time.perf_counter() - start,
        info={
            "tol": tol,
            "max_iter": max_iter,
            "stagnation_window": stagnation_window,
            **({"stagnation": why} if why else {}),
        },
        stop="tolerance" if converged else stop,
    )
    report_nonconvergence(result, tol, on_nonconvergence, "increase max_iter or damping")
    return result


register_iterative_solver("cg", solve_cg, description="conjugate gradient, batched (needs H_S + δI positive definite)")
