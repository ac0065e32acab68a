"""``exact``: (H_S + δI)⁻¹ formed once, for models small enough to hold a (p, p) matrix.

Gauss-Newton curvature with rank r = m(C−1) < p takes the low-rank Woodbury path (:mod:`.low_rank`, needs
wd + δ > 0); otherwise the dense H_S is formed column by column from HVPs and inverted by LU, which works for an
indefinite H. The dense path checks positive definiteness of H_S + δI with a Cholesky factorisation: an indefinite
true Hessian (a non-convex model, δ = 0) gives an :class:`IndefiniteHessianWarning` with λ_min and what to do
(``on_indefinite="raise"`` refuses instead, ``"ignore"`` stays silent).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from influence_core.curvature.objective import Objective
from influence_core.solvers.base import IndefiniteHessianWarning, SolverError, SolveResult, as_batch, check_damping
from influence_core.solvers.registry import ExactFit, FittedInverse, register_solver

__all__ = ["ExactInverse", "solve_exact", "fit_exact", "check_positive_definite", "EIGEN_REPORT_MAX_P"]

EIGEN_REPORT_MAX_P = 4000
"""λ_min is computed for the indefiniteness warning only up to this many parameters."""


class ExactInverse:
    """(H + δI)⁻¹ from an LU factorisation of the (p, p) matrix H; ``solve(B)`` for any (k, p) batch.

    The inverse itself is formed once from the LU factors (p³ more flops at construction), so a solve is one
    matrix product: for a single right-hand side one (p, p) matrix-vector product runs as one BLAS call where the
    pair of triangular solves runs two sequential ones, and it is what bounds an exact influence query."""

    def __init__(self, H: torch.Tensor, damping: float = 0.0):
        damping = check_damping(damping)
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
        self.inverse = torch.linalg.lu_solve(lu, pivots, eye)  # (p, p) = A⁻¹ (LU dropped)
        del eye, lu
        self.damping = damping
        self.factor_seconds = time.perf_counter() - start

    @classmethod
    def from_state(cls, inverse: torch.Tensor, damping: float, factor_seconds: float = 0.0) -> "ExactInverse":
        """An inverse (p, p) = (H + δI)⁻¹ formed earlier (e.g. loaded by :mod:`.fitted_io`), without refactorising."""
        self = cls.__new__(cls)
        self.inverse, self.damping, self.factor_seconds = inverse, check_damping(damping), float(factor_seconds)
        return self

    def solve(self, B: torch.Tensor) -> SolveResult:
        B = as_batch(B)
        start = time.perf_counter()
        X = B @ self.inverse.T
        return SolveResult(
            X,
            "exact",
            0,
            True,
            self.damping,
            seconds=time.perf_counter() - start,
            info={"factor_seconds": self.factor_seconds, "inverse": "lu"},
        )


def solve_exact(H: torch.Tensor, B: torch.Tensor, damping: float = 0.0) -> SolveResult:
    """Direct solve of (H + δI) X = B with the full matrix H (p, p); B (k, p) or (p,)."""
    return ExactInverse(H, damping).solve(B)


@register_solver("exact")
def fit_exact(
    objective: Objective,
    indices: np.ndarray | None,
    weights: np.ndarray | None,
    damping: float,
    curvature: str,
    *,
    on_indefinite: str = "warn",
    matrix: str = "hvp",
) -> FittedInverse:
    """Direct inverse: low-rank Woodbury for Gauss-Newton when m(C−1) < p, else LU of the dense matrix
    (``matrix="structured"``: a Gauss-Newton matrix of ``nn.Linear`` layers from the layer pieces, inverted by
    Cholesky; see :func:`influence_core.curvature.gram.gauss_newton_matrix`)."""
    obj = objective
    p = obj.n_params
    if matrix not in ("hvp", "structured"):
        raise ValueError(
            f"matrix must be 'hvp' (H_S from p HVPs) or 'structured' (the Gauss-Newton matrix of "
            f"nn.Linear layers from their pieces), got {matrix!r}"
        )
    args = (obj, "exact", indices, weights, damping, curvature, {"on_indefinite": on_indefinite, "matrix": matrix})
    if curvature == "gauss_newton":
        m = obj.n if indices is None else len(indices)
        r = m * (obj.n_classes - 1)
        if r < p:
            # imported here: low_rank registers after exact (the registry lists solvers in registration order)
            from influence_core.solvers.low_rank import LOW_RANK_MAX_BYTES, low_rank_fit

            itemsize = torch.finfo(obj.dtype).bits // 8
            need = (r * p + r * r) * itemsize
            if need > LOW_RANK_MAX_BYTES:
                m_max = int(LOW_RANK_MAX_BYTES // (itemsize * (r // m) * (p + r)))
                raise ValueError(
                    f"the exact Gauss-Newton solve on {m} points would need {need / 1e9:.1f} GB for its "
                    f"{r} x {p} factor (limit {LOW_RANK_MAX_BYTES / 1e9:.1f} GB); use solver='cg' "
                    f"(matrix-free) or a Hessian sample of at most about {m_max} points"
                )
            if obj.weight_decay + damping <= 0:
                raise ValueError(
                    f"the Gauss-Newton matrix on {m} points has rank <= {r} < p = {p}, so it is "
                    "singular without a shift: pass damping > 0 (e.g. 0.01)"
                )
            return low_rank_fit(obj, indices, weights, damping, args)
    H = None
    if matrix == "structured" and curvature == "gauss_newton":
        from influence_core.curvature.gram import gauss_newton_matrix

        start = time.perf_counter()
        H = gauss_newton_matrix(obj, indices, weights)  # None when θ is not nn.Linear layers
        if H is not None:
            L, status = torch.linalg.cholesky_ex(H + damping * torch.eye(p, device=H.device, dtype=H.dtype))
            if int(status) == 0 and torch.isfinite(L).all():  # PSD + δI > 0: Cholesky, not LU
                inverse = ExactInverse.from_state(torch.cholesky_inverse(L), damping, time.perf_counter() - start)
                return ExactFit(inverse, *args, info={"inverse": "cholesky", "matrix": "structured"})
    if H is None:
        H = obj.hessian(indices, weights, curvature)
    if on_indefinite != "ignore":
        check_positive_definite(H, damping, curvature, on_indefinite)
    return ExactFit(ExactInverse(H, damping), *args, info={"inverse": "lu"})


def check_positive_definite(H: torch.Tensor, damping: float, curvature: str, on_indefinite: str) -> None:
    """Cholesky of H + δI; when it fails, warn (or raise) with λ_min (for p <= EIGEN_REPORT_MAX_P) and advice."""
    A = H + damping * torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
    _, info = torch.linalg.cholesky_ex(A)
    del A
    if int(info) == 0:
        return
    what = (
        "Gauss-Newton matrix is singular"
        if curvature == "gauss_newton"
        else "Hessian of this model is indefinite on the sample"
    )
    lam = ""
    if H.shape[0] <= EIGEN_REPORT_MAX_P:
        lam_min = float(torch.linalg.eigvalsh(H)[0])
        lam = f" (λ_min(H_S) = {lam_min:.3g}, so damping > {max(-lam_min, 0):.3g} makes it positive definite)"
    message = (
        f"the exact solve inverts H_S + damping·I with damping={damping:g}, which is not positive definite"
        f"{lam}: the {what}, "
        "so the influence of directions with negative curvature has the wrong sign. Use "
        "curvature='gauss_newton' (positive semi-definite) with damping > 0, or increase damping; pass "
        "on_indefinite='ignore' to invert it anyway"
    )
    if on_indefinite == "raise":
        raise SolverError(message)
    warnings.warn(message, IndefiniteHessianWarning, stacklevel=4)
