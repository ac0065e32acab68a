"""Inverse-Hessian-vector products: solve (H + δI) X = B for a batch of right-hand sides B (k, p).

A solver is a pure function of an operator ``hvp: (k, p) -> (k, p)`` (V ↦ H V, see
:class:`influence_core.curvature.Objective`) or, for ``exact``, of the matrix H. It never chooses the Hessian data:
that is the sampler's job. δ (``damping``) >= 0 is explicit and recorded. All return a :class:`SolveResult`.

- ``exact``: LU factorisation of H + δI (works for indefinite H), reusable for many right-hand sides
  (:class:`ExactInverse`); or, for a low-rank-plus-shift matrix H + δI = c·I + UᵀU (Gauss-Newton, U (r, p)),
  the Woodbury identity (:class:`LowRankInverse`) with one Cholesky of the r×r matrix c·I_r + U Uᵀ.
- ``cg``: conjugate gradient, batched over the k columns; stops when every relative residual
  ||b − (H+δI)x|| / ||b|| <= tol. Raises :class:`SolverError` on non-positive curvature.
- ``lissa``: the Neumann iteration x_{j+1} = b + (I − (H+δI)/s) x_j, solution x/s. Automatic scale
  s = 1.1·(λ_max(H) + δ) from power iteration (convergent for positive-definite H + δI). Since
  x_{j+1} − x_j = b − (H+δI)(x_j/s) is exactly the residual of the current iterate, the trace records the relative
  residual per iteration and the stopping rule is the same as CG's. A NaN or growing residual raises
  :class:`SolverDivergedError` with the trace and what to change.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .curvature import largest_eigenvalue

__all__ = [
    "SolveResult",
    "SolverError",
    "SolverDivergedError",
    "SolverNotConvergedWarning",
    "ExactInverse",
    "LowRankInverse",
    "solve_exact",
    "solve_cg",
    "solve_lissa",
    "SOLVERS",
]

Operator = Callable[[torch.Tensor], torch.Tensor]
SOLVERS = ("exact", "cg", "lissa")


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


def _check_damping(damping: float) -> float:
    if damping is None or not math.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping}")
    return float(damping)


def _as_batch(B: torch.Tensor) -> torch.Tensor:
    if B.ndim == 1:
        B = B.unsqueeze(0)
    if B.ndim != 2:
        raise ValueError(f"right-hand sides must be (p,) or (k, p), got shape {tuple(B.shape)}")
    if not torch.isfinite(B).all():
        raise ValueError("right-hand side contains NaN or inf (check the model's outputs and the data)")
    return B


class ExactInverse:
    """(H + δI)⁻¹ from an LU factorisation of the (p, p) matrix H; ``solve(B)`` for any (k, p) batch.

    The inverse itself is formed once from the LU factors (p³ more flops at construction), so a solve is one
    matrix product: for a single right-hand side a (p, p) matrix-vector product is about 2-3x faster than the
    pair of triangular solves, and it is what bounds an exact influence query."""

    def __init__(self, H: torch.Tensor, damping: float = 0.0):
        damping = _check_damping(damping)
        if H.ndim != 2 or H.shape[0] != H.shape[1]:
            raise ValueError(f"H must be a square matrix, got shape {tuple(H.shape)}")
        if not torch.isfinite(H).all():
            raise SolverError("the Hessian contains NaN/inf; check the model and data for overflow")
        start = time.perf_counter()
        A = H + damping * torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
        lu, pivots, status = torch.linalg.lu_factor_ex(A)
        del A
        if int(status) != 0 or not torch.isfinite(lu).all():
            raise SolverError("H + damping·I is singular; increase damping (e.g. 1e-3) or weight decay")
        eye = torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
        self.inverse = torch.linalg.lu_solve(lu, pivots, eye)                      # (p, p) = A⁻¹ (LU dropped)
        del eye, lu
        self.damping = damping
        self.factor_seconds = time.perf_counter() - start

    def solve(self, B: torch.Tensor) -> SolveResult:
        B = _as_batch(B)
        start = time.perf_counter()
        X = B @ self.inverse.T
        return SolveResult(X, "exact", 0, True, self.damping, seconds=time.perf_counter() - start,
                           info={"factor_seconds": self.factor_seconds, "inverse": "lu"})


class LowRankInverse:
    """(c·I_p + UᵀU)⁻¹ for U (r, p) and a shift c > 0 (Gauss-Newton: c = wd + δ, U = U_S), exactly.

    r < p (Woodbury, "low_rank"): (cI + UᵀU)⁻¹ b = (b − Uᵀ (c·I_r + U Uᵀ)⁻¹ U b) / c, with K⁻¹ = (c·I_r + U Uᵀ)⁻¹
    formed here once from its Cholesky factor; a solve costs two products with U and one r×r matrix product.
    r >= p ("dense"): Cholesky of the p×p matrix c·I + UᵀU.

    ``U``: a (r, p) tensor, or a matrix-free map with ``shape``, ``matmul(V (k,p)) -> (k,r)``,
    ``rmatmul(Y (k,r)) -> (k,p)`` and ``dense()`` (e.g. :class:`~influence_core.curvature.GaussNewtonFactors`): then
    U is formed once to build the r×r matrix and dropped, and each solve uses the map. ``gram``: a precomputed
    U Uᵀ (r, r) to use instead (r < p only). ``damping``: the δ to record in results (default c).
    """

    def __init__(self, U: Any, shift: float, *, gram: torch.Tensor | None = None, damping: float | None = None):
        if shift is None or not math.isfinite(shift) or shift <= 0:
            raise ValueError(f"the low-rank solve needs a shift c = weight_decay + damping > 0, got {shift}; "
                             "pass damping > 0 (e.g. 0.01)")
        if len(U.shape) != 2:
            raise ValueError(f"U must be (r, p), got shape {tuple(U.shape)}")
        start = time.perf_counter()
        self.shift = float(shift)
        self.damping = self.shift if damping is None else _check_damping(damping)
        self.rank, self.dim = int(U.shape[0]), int(U.shape[1])
        self.low_rank = self.rank < self.dim
        dense = U if isinstance(U, torch.Tensor) else (None if gram is not None and self.low_rank else U.dense())
        if dense is not None and not torch.isfinite(dense).all():
            raise SolverError("the Gauss-Newton factors contain NaN/inf; check the model and data for overflow")
        if self.low_rank:
            K = (dense @ dense.T if gram is None else gram.clone())
            self.U = U  # the tensor, or the matrix-free map (the dense copy is dropped)
        else:
            K = dense.T @ dense
            self.U = None
        K.diagonal().add_(self.shift)
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0 or not torch.isfinite(L).all():
            raise SolverError("Cholesky of c·I + U Uᵀ failed: the factors contain NaN/inf or c is too small "
                              "relative to them; increase damping")
        del K
        # K⁻¹ from the Cholesky factor, formed once: a query's r×r (or p×p) step is then one matrix product,
        # 2-3x faster than two triangular solves for a single right-hand side
        self.K_inv = torch.cholesky_inverse(L)
        self.factor_seconds = time.perf_counter() - start

    def _U(self, V: torch.Tensor) -> torch.Tensor:
        return V @ self.U.T if isinstance(self.U, torch.Tensor) else self.U.matmul(V)

    def _Ut(self, Y: torch.Tensor) -> torch.Tensor:
        return Y @ self.U if isinstance(self.U, torch.Tensor) else self.U.rmatmul(Y)

    def solve(self, B: torch.Tensor, projected: torch.Tensor | None = None) -> SolveResult:
        """X (k, p) = (cI + UᵀU)⁻¹ bᵀ for each row of B (k, p). ``projected``: U Bᵀ (r, k) if already known."""
        B = _as_batch(B)
        if B.shape[1] != self.dim:
            raise ValueError(f"right-hand sides must have {self.dim} columns, got shape {tuple(B.shape)}")
        start = time.perf_counter()
        if self.low_rank:
            P = self._U(B).T if projected is None else projected                  # (r, k)
            Y = self.K_inv @ P                                                    # (r, k)
            X = (B - self._Ut(Y.T)) / self.shift
        else:
            X = B @ self.K_inv                                                    # K_inv symmetric (p, p)
        return SolveResult(X, "exact", 0, True, self.damping, seconds=time.perf_counter() - start,
                           info={"factor_seconds": self.factor_seconds,
                                 "inverse": "low_rank" if self.low_rank else "dense", "rank": self.rank})


def solve_exact(H: torch.Tensor, B: torch.Tensor, damping: float = 0.0) -> SolveResult:
    """Direct solve of (H + δI) X = B with the full matrix H (p, p); B (k, p) or (p,)."""
    return ExactInverse(H, damping).solve(B)


def solve_cg(hvp: Operator, B: torch.Tensor, damping: float = 0.0, *, tol: float = 1e-6, max_iter: int = 1000,
             on_nonconvergence: str = "warn") -> SolveResult:
    """Conjugate gradient on (H + δI) X = B, all k columns at once (one batched HVP per iteration).

    Stops when every column's relative residual is <= ``tol``; a zero column of B is converged at X = 0 from the
    start (0 iterations when B = 0). H + δI must be positive definite on the span explored: non-positive curvature raises :class:`SolverError` (increase damping, or use Gauss-Newton curvature).
    ``on_nonconvergence``: "warn" (default) or "raise" when ``max_iter`` is reached first.
    """
    damping = _check_damping(damping)
    B = _as_batch(B)
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
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(rs))
        P = R + beta[:, None] * P
        rs = rs_new
    converged = trace[-1] <= tol
    result = SolveResult(X, "cg", it, converged, damping, trace, seconds=time.perf_counter() - start,
                         info={"tol": tol, "max_iter": max_iter})
    _report_nonconvergence(result, tol, on_nonconvergence, "increase max_iter or damping")
    return result


def solve_lissa(hvp: Operator, B: torch.Tensor, damping: float = 0.0, *, scale: float | None = None,
                tol: float = 1e-4, max_iter: int = 10_000, divergence_factor: float = 1e4,
                on_nonconvergence: str = "warn", power_iter: int = 100, seed: int = 0) -> SolveResult:
    """LiSSA / Neumann series for (H + δI) X = B, batched over the k columns.

    ``scale`` s must exceed λ_max(H) + δ; None (default) sets s = 1.1·(λ_max + δ) by power iteration on ``hvp``.
    Converges when H + δI is positive definite, at rate 1 − (λ_min + δ)/s per iteration: more damping converges
    faster but biases the solution. Stops when the relative residual (the trace) is <= ``tol``.
    Raises :class:`SolverDivergedError` when the residual becomes NaN/inf or grows ``divergence_factor``-fold.
    """
    damping = _check_damping(damping)
    B = _as_batch(B)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    start = time.perf_counter()
    lam_max = None
    if scale is None:
        lam_max = largest_eigenvalue(lambda V: hvp(V), B.shape[1], B.device, B.dtype, max_iter=power_iter,
                                     seed=seed)
        if not math.isfinite(lam_max) or lam_max + damping <= 0:
            raise SolverError(f"power iteration gave λ_max={lam_max}: the Hessian is not positive on this sample; "
                              "increase damping or use curvature='gauss_newton'")
        scale = 1.1 * (lam_max + damping)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    bnorm = B.norm(dim=1).clamp_min(torch.finfo(B.dtype).tiny)
    X = B.clone()  # x_1 = b (x_0 = 0)
    trace: list[float] = []
    it = 0
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
                f"Residual trace (first/last 5): {_short(trace)}",
                trace,
            )
        if trace[-1] <= tol:
            break
        X = X + residual
    result = SolveResult(X / scale, "lissa", it, trace[-1] <= tol, damping, trace, scale,
                         time.perf_counter() - start, info={"tol": tol, "max_iter": max_iter, "lambda_max": lam_max})
    _report_nonconvergence(result, tol, on_nonconvergence,
                           "increase max_iter, or increase damping (faster convergence, more bias)")
    return result


def _short(trace: list[float]) -> str:
    vals = trace if len(trace) <= 10 else trace[:5] + trace[-5:]
    return ", ".join(f"{v:.3g}" for v in vals)


def _report_nonconvergence(result: SolveResult, tol: float, mode: str, advice: str) -> None:
    if result.converged:
        return
    message = (f"{result.method} did not reach tol={tol:g} in {result.iterations} iterations "
               f"(final relative residual {result.trace[-1]:.3g}); {advice}. Trace: {_short(result.trace)}")
    if mode == "raise":
        raise SolverError(message)
    if mode != "warn":
        raise ValueError(f"on_nonconvergence must be 'warn' or 'raise', got {mode!r}")
    warnings.warn(message, SolverNotConvergedWarning, stacklevel=3)
