"""``low_rank``: the exact Gauss-Newton solve by the Woodbury identity, whatever p.

Gauss-Newton on m points has rank r <= m(C−1): H_S + δI = c·I + UᵀU with c = wd + δ and U = U_S (r, p), so one
Cholesky of the r×r matrix c·I_r + U Uᵀ inverts it exactly (``exact`` uses this path whenever r < p).
``LOW_RANK_MAX_BYTES`` bounds the memory of the dense factor while fitting.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from influence_core.curvature.objective import Objective
from influence_core.solvers.base import SolverError, SolveResult, as_batch, check_damping
from influence_core.solvers.registry import ExactFit, FittedInverse, register_solver

__all__ = ["LowRankInverse", "low_rank_fit", "fit_low_rank", "LOW_RANK_MAX_BYTES"]

LOW_RANK_MAX_BYTES = 2 * 1024**3
"""Memory allowed for the dense Gauss-Newton factor U_S (r, p) while fitting."""


class LowRankInverse:
    """(c·I_p + UᵀU)⁻¹ for U (r, p) and a shift c > 0 (Gauss-Newton: c = wd + δ, U = U_S), exactly.

    r < p (Woodbury, "low_rank"): (cI + UᵀU)⁻¹ b = (b − Uᵀ (c·I_r + U Uᵀ)⁻¹ U b) / c, with K⁻¹ = (c·I_r + U Uᵀ)⁻¹
    formed here once from its Cholesky factor; a solve costs two products with U and one r×r matrix product.
    r >= p ("dense"): Cholesky of the p×p matrix c·I + UᵀU.

    ``U``: a (r, p) tensor, or a matrix-free map with ``shape``, ``matmul(V (k,p)) -> (k,r)``,
    ``rmatmul(Y (k,r)) -> (k,p)`` and ``dense()`` (e.g.
    :class:`~influence_core.curvature.objective.GaussNewtonFactors`): then
    U is formed once to build the r×r matrix and dropped, and each solve uses the map. ``gram``: a precomputed
    U Uᵀ (r, r) to use instead (r < p only). ``damping``: the δ to record in results (default c).
    """

    def __init__(self, U: Any, shift: float, *, gram: torch.Tensor | None = None, damping: float | None = None):
        if shift is None or not math.isfinite(shift) or shift <= 0:
            raise ValueError(
                f"the low-rank solve needs a shift c = weight_decay + damping > 0, got {shift}; "
                "pass damping > 0 (e.g. 0.01)"
            )
        if len(U.shape) != 2:
            raise ValueError(f"U must be (r, p), got shape {tuple(U.shape)}")
        start = time.perf_counter()
        self.shift = float(shift)
        self.damping = self.shift if damping is None else check_damping(damping)
        self.rank, self.dim = int(U.shape[0]), int(U.shape[1])
        self.low_rank = self.rank < self.dim
        dense = U if isinstance(U, torch.Tensor) else (None if gram is not None and self.low_rank else U.dense())
        if dense is not None and not torch.isfinite(dense).all():
            raise SolverError("the Gauss-Newton factors contain NaN/inf; check the model and data for overflow")
        if self.low_rank:
            K = dense @ dense.T if gram is None else gram.clone()
            self.U = U  # the tensor, or the matrix-free map (the dense copy is dropped)
        else:
            K = dense.T @ dense
            self.U = None
        K.diagonal().add_(self.shift)
        L, info = torch.linalg.cholesky_ex(K)
        if int(info) != 0 or not torch.isfinite(L).all():
            raise SolverError(
                "Cholesky of c·I + U Uᵀ failed: the factors contain NaN/inf or c is too small "
                "relative to them; increase damping"
            )
        del K
        # K⁻¹ from the Cholesky factor, formed once: a query's r×r (or p×p) step is then one matrix product instead
        # of two sequential triangular solves
        self.K_inv = torch.cholesky_inverse(L)
        self.factor_seconds = time.perf_counter() - start

    @classmethod
    def from_state(
        cls,
        U: Any,
        K_inv: torch.Tensor,
        *,
        rank: int,
        dim: int,
        shift: float,
        damping: float,
        factor_seconds: float = 0.0,
    ) -> "LowRankInverse":
        """The inverse from pieces formed earlier (e.g. loaded by :mod:`.fitted_io`): ``U`` (the (r, p) tensor, the
        matrix-free map, or None on the dense r >= p path) and K⁻¹ ((r, r), or (p, p) when dense); no refactorising."""
        self = cls.__new__(cls)
        self.shift, self.damping = float(shift), check_damping(damping)
        self.rank, self.dim = int(rank), int(dim)
        self.low_rank = self.rank < self.dim
        if self.low_rank == (U is None):
            raise ValueError("a low-rank inverse (r < p) needs its factor U; the dense one (r >= p) has none")
        self.U, self.K_inv, self.factor_seconds = U, K_inv, float(factor_seconds)
        return self

    def _U(self, V: torch.Tensor) -> torch.Tensor:
        return V @ self.U.T if isinstance(self.U, torch.Tensor) else self.U.matmul(V)

    def _Ut(self, Y: torch.Tensor) -> torch.Tensor:
        return Y @ self.U if isinstance(self.U, torch.Tensor) else self.U.rmatmul(Y)

    def solve(self, B: torch.Tensor, projected: torch.Tensor | None = None) -> SolveResult:
        """X (k, p) = (cI + UᵀU)⁻¹ bᵀ for each row of B (k, p). ``projected``: U Bᵀ (r, k) if already known."""
        B = as_batch(B)
        if B.shape[1] != self.dim:
            raise ValueError(f"right-hand sides must have {self.dim} columns, got shape {tuple(B.shape)}")
        start = time.perf_counter()
        if self.low_rank:
            P = self._U(B).T if projected is None else projected  # (r, k)
            Y = self.K_inv @ P  # (r, k)
            X = (B - self._Ut(Y.T)) / self.shift
        else:
            X = B @ self.K_inv  # K_inv symmetric (p, p)
        return SolveResult(
            X,
            "exact",
            0,
            True,
            self.damping,
            seconds=time.perf_counter() - start,
            info={
                "factor_seconds": self.factor_seconds,
                "inverse": "low_rank" if self.low_rank else "dense",
                "rank": self.rank,
            },
        )


def low_rank_fit(
    obj: Objective, indices: np.ndarray | None, weights: np.ndarray | None, damping: float, args: tuple
) -> ExactFit:
    inverse = LowRankInverse(obj.gauss_newton_operator(indices, weights), obj.weight_decay + damping, damping=damping)
    return ExactFit(inverse, *args, info={"inverse": "low_rank", "rank": inverse.rank})


@register_solver("low_rank", description="exact Gauss-Newton solve by Woodbury, rank m(C-1), whatever p")
def fit_low_rank(
    objective: Objective, indices: np.ndarray | None, weights: np.ndarray | None, damping: float, curvature: str
) -> FittedInverse:
    """Exact Gauss-Newton solve by Woodbury on the rank-m(C−1) factor, even where ``exact`` would form H_S."""
    if curvature != "gauss_newton":
        raise ValueError(
            "solver 'low_rank' solves the Gauss-Newton system exactly (Woodbury); use "
            "curvature='gauss_newton', or solver 'exact' for the Hessian"
        )
    if objective.weight_decay + damping <= 0:
        raise ValueError("the low-rank Gauss-Newton solve needs weight_decay + damping > 0 (e.g. damping=0.01)")
    return low_rank_fit(
        objective, indices, weights, damping, (objective, "low_rank", indices, weights, damping, curvature, {})
    )
