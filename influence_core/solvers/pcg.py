"""``pcg``: conjugate gradient on the FULL-data Gauss-Newton system, preconditioned by the Hessian sample.

The sample does not replace the curvature here; it only decides how many iterations the full-data solve takes:

    (G + δI) X = B,   G = (1/n) Σ_{i=1..n} J_iᵀ A_i J_i + wd·I   (all n training points, matrix-free HVPs)

is solved by preconditioned CG to the same relative residual as ``cg`` on all the data, so the answer is the
full-data influence whatever the sample. The preconditioner P ≈ G + δI comes from the sample S (indices, weights
given to :func:`~influence_core.solvers.registry.fit_inverse` as usual). With the sample's factor U_S (r, p),
G_S = U_SᵀU_S + wd·I, K_S = U_S U_Sᵀ = V Σ Vᵀ and c = wd + δ:

- eigenpairs: E = U_Sᵀ V Σ^{-1/2} (p, k) holds the eigenvectors of U_SᵀU_S with eigenvalues σ_j; those with
  σ_j > δ (eigenvalue of G_S above wd + δ) are kept (``keep="above_damping"``; ``"all"``: every σ_j > 0), at
  most ``rank`` of them (the largest);
- ``eigenvalues="sample"``: P = E diag(σ_j + c) Eᵀ + ρ (I − E Eᵀ), the sample's own estimate;
  ``eigenvalues="full"``: Rayleigh-Ritz on span(E) with the full data, T = Eᵀ (G + δI) E (k full-data products
  at fit), T = Y Θ Yᵀ, and P = (EY) Θ (EY)ᵀ + ρ (I − E Eᵀ): the exact curvature on the sample's subspace, so a
  sample that misestimates the eigenvalues along its directions cannot mislead the iteration;
- complement ``complement="smallest"``: ρ = the smallest kept eigenvalue of P (Nyström PCG, Frangella, Tropp and
  Udell 2023), ``"shift"``: ρ = c (then with all eigenpairs kept and ``eigenvalues="sample"``, P = G_S + δI);
- P⁻¹ b = b/ρ + E' diag(1/θ_j − 1/ρ) E'ᵀ b (Woodbury on the orthonormal E'), applied matrix-free with one product
  by U_S and one by U_Sᵀ (``eigenvalues="sample"``), or with the dense (k, p) Ritz vectors (``"full"``).

When the factor has at least as many rows as parameters (r = m(C−1) >= p), the eigenpairs come from the (p, p)
matrix U_SᵀU_S instead of the (r, r) Gram matrix (p³ work instead of r³; the same non-zero eigenvalues), E is
its eigenvectors, and P⁻¹ is applied with the dense E.

Only Gauss-Newton curvature (G is positive semi-definite; the sample's factor U_S exists), with wd + δ > 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from influence_core.curvature.objective import GaussNewtonFactors, Objective
from influence_core.solvers.base import (
    Operator,
    SolverDivergedError,
    SolverError,
    SolveResult,
    as_batch,
    check_budget,
    check_damping,
    report_nonconvergence,
)
from influence_core.solvers.low_rank import LOW_RANK_MAX_BYTES
from influence_core.solvers.registry import FittedInverse, register_solver

__all__ = [
    "SamplePreconditioner",
    "solve_pcg",
    "fit_pcg",
    "PreconditionedFit",
    "COMPLEMENTS",
    "EIGENVALUES",
    "KEEP_RULES",
]

COMPLEMENTS = ("smallest", "shift")
EIGENVALUES = ("sample", "full")
KEEP_RULES = ("above_damping", "all")


class SamplePreconditioner:
    """P⁻¹ for P ≈ G + δI from a Hessian sample's Gauss-Newton factor (see the module doc).

    ``apply(R (k, p)) -> (k, p)`` is P⁻¹ rᵀ per row. Attributes: ``rank`` (eigenpairs kept), ``eigenvalues``
    (θ_j of P on the kept directions, descending), ``complement`` (ρ), ``setup_products`` (full-data
    Hessian-vector products spent at fit: 0, or the rank for ``eigenvalues="full"``), ``seconds``."""

    def __init__(
        self,
        objective: Objective,
        indices: np.ndarray | None,
        weights: np.ndarray | None,
        damping: float,
        *,
        rank: int | None = None,
        keep: str = "above_damping",
        complement: str = "smallest",
        eigenvalues: str = "sample",
        full_operator: Operator | None = None,
    ):
        from influence_core.curvature.gram import sample_grams

        start = time.perf_counter()
        idx = objective.subset(indices)
        c = objective.weight_decay + damping
        rows = len(idx) * (objective.n_classes - 1)
        self.factors: GaussNewtonFactors | None = None
        if rows < objective.n_params:  # eigenpairs from the (r, r) Gram matrix K_S = U_S U_Sᵀ
            gram = sample_grams(objective, [(idx, weights)])[0]
            self.factors = GaussNewtonFactors.from_roots(objective, gram.indices, gram.roots, weights)
            K = gram.gram.double()
        else:  # r >= p: from the (p, p) matrix U_SᵀU_S, p³ instead of r³ work (same non-zero eigenvalues)
            U = objective.gauss_newton_factors(idx, weights)  # (r, p)
            K = (U.T @ U).double()
            del U
        sigma, V = torch.linalg.eigh(0.5 * (K + K.T))  # ascending
        sigma, V = sigma.flip(0), V.flip(1)  # descending
        floor = max(damping if keep == "above_damping" else 0.0, float(sigma[0]) * 1e-10 if len(sigma) else 0.0)
        keep = int((sigma > floor).sum())
        if rank is not None:
            keep = min(keep, int(rank))
        if keep == 0:
            raise SolverError(
                f"the Hessian sample's Gauss-Newton matrix has no eigenvalue above weight_decay + "
                f"damping = {c:g}; a larger sample (or smaller damping) gives the preconditioner "
                "something to work with"
            )
        sigma, V = sigma[:keep], V[:, :keep]
        self.coeff: torch.Tensor | None = None
        self.ritz: torch.Tensor | None = None  # (k, p) dense orthonormal rows, when the map is dense
        if self.factors is not None:
            self.coeff = (V / sigma.sqrt()).to(objective.dtype)  # (r, k): E = U_Sᵀ coeff
        else:
            self.ritz = V.T.to(objective.dtype).contiguous()  # (k, p): the eigenvectors themselves
        self.setup_products = 0
        if eigenvalues == "full":
            if full_operator is None:
                raise ValueError("eigenvalues='full' needs the full-data operator")
            E = self.ritz if self.factors is None else self.factors.rmatmul(self.coeff.T)  # (k, p) orthonormal rows
            T = (full_operator(E) + damping * E) @ E.T  # (k, k) = Eᵀ (G + δI) E
            theta, Y = torch.linalg.eigh(0.5 * (T + T.T).double())
            theta, Y = theta.flip(0), Y.flip(1)
            self.ritz = Y.T.to(E.dtype) @ E  # (k, p) Ritz vectors
            self.setup_products = keep
            values = theta
        else:
            values = sigma + c
        self.eigenvalues = values
        self.complement = float(values[-1]) if complement == "smallest" else float(c)
        self.scale = (1.0 / values - 1.0 / self.complement).to(objective.dtype)  # (k,)
        self.rank = keep
        self.seconds = time.perf_counter() - start

    def apply(self, R: torch.Tensor) -> torch.Tensor:
        """P⁻¹ rᵀ for each row of R (k, p)."""
        if self.ritz is not None:
            return R / self.complement + ((R @ self.ritz.T) * self.scale) @ self.ritz
        assert self.factors is not None and self.coeff is not None
        Y = self.factors.matmul(R) @ self.coeff  # (k, keep) = (Eᵀ rᵀ)ᵀ
        return R / self.complement + self.factors.rmatmul((Y * self.scale) @ self.coeff.T)

    def summary(self) -> dict[str, Any]:
        return {
            "preconditioner_rank": self.rank,
            "preconditioner_complement": self.complement,
            "preconditioner_top": float(self.eigenvalues[0]),
            "preconditioner_seconds": self.seconds,
            "setup_products": self.setup_products,
        }


def solve_pcg(
    hvp: Operator,
    B: torch.Tensor,
    damping: float,
    precondition: Callable[[torch.Tensor], torch.Tensor],
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    on_nonconvergence: str = "warn",
    method: str = "pcg",
) -> SolveResult:
    """Preconditioned CG on (H + δI) X = B, all k columns at once; ``precondition(R) = P⁻¹ R`` (P SPD).

    The trace is the true relative residual max_k ||b_k − (H+δI)x_k|| / ||b_k|| (the same measure as ``cg``), and
    the iteration stops when every column reaches ``tol``; ``info["stop"]`` says why it stopped ("tol",
    "max_iter", "zero_rhs")."""
    damping = check_damping(damping)
    check_budget(tol, max_iter)
    B = as_batch(B)
    start = time.perf_counter()
    tiny = torch.finfo(B.dtype).tiny
    bnorm = B.norm(dim=1).clamp_min(tiny)
    X = torch.zeros_like(B)
    R = B.clone()
    Z = precondition(R)
    P = Z.clone()
    rz = (R * Z).sum(1)
    trace: list[float] = []
    active = B.norm(dim=1) > 0
    it, stop = 0, "max_iter"
    if not bool(active.any()):
        trace.append(0.0)
        stop = "zero_rhs"
    for it in range(1, max_iter + 1 if bool(active.any()) else 1):
        AP = hvp(P) + damping * P
        curv = (P * AP).sum(1)
        if bool(((curv <= 0) & active).any()):
            raise SolverError(
                "preconditioned CG met non-positive curvature: G + damping·I is not positive definite "
                f"(damping={damping}); increase damping"
            )
        alpha = torch.where(active, rz / curv.clamp_min(tiny), torch.zeros_like(rz))
        X += alpha[:, None] * P
        R -= alpha[:, None] * AP
        rel = R.norm(dim=1) / bnorm
        trace.append(float(rel.max()))
        if not math.isfinite(trace[-1]):
            raise SolverDivergedError(f"preconditioned CG produced NaN/inf at iteration {it}; increase damping", trace)
        active = rel > tol
        if not bool(active.any()):
            stop = "tol"
            break
        Z = precondition(R)
        rz_new = (R * Z).sum(1)
        beta = torch.where(active, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz))
        P = Z + beta[:, None] * P
        rz = rz_new
    converged = trace[-1] <= tol
    result = SolveResult(
        X,
        method,
        it,
        converged,
        damping,
        trace,
        seconds=time.perf_counter() - start,
        info={"tol": tol, "max_iter": max_iter, "stop": stop},
    )
    report_nonconvergence(result, tol, on_nonconvergence, "increase max_iter, or use a larger Hessian sample")
    return result


class PreconditionedFit(FittedInverse):
    """The ``pcg`` fit: the full-data operator (built lazily, not pickled) and the sample's preconditioner (built
    at fit; its factor map rebuilds its own graphs after unpickling)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._operator: Operator | None = None
        o = self.options
        self.preconditioner = SamplePreconditioner(
            self.objective,
            self.indices,
            self.weights,
            self.damping,
            rank=o["rank"],
            keep=o["keep"],
            complement=o["complement"],
            eigenvalues=o["eigenvalues"],
            full_operator=self.operator if o["eigenvalues"] == "full" else None,
        )
        self.info.update(self.preconditioner.summary())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_operator": None}

    @property
    def operator(self) -> Operator:
        """The full-data Gauss-Newton map V (k, p) -> G V (wd·I included), all n training points."""
        if self._operator is None:
            self._operator = self.objective.operator(None, None, "gauss_newton")
        return self._operator

    def solve(self, B: torch.Tensor) -> SolveResult:
        B = B.to(self.objective.device, self.objective.dtype)
        o = self.options
        result = solve_pcg(
            self.operator,
            B,
            self.damping,
            self.preconditioner.apply,
            tol=o["tol"],
            max_iter=o["max_iter"],
            on_nonconvergence=o["on_nonconvergence"],
        )
        result.info.update(self.preconditioner.summary())
        result.info["sample_size"] = self.objective.n if self.indices is None else len(self.indices)
        return result


@register_solver(
    "pcg",
    description="CG on the full-data Gauss-Newton system, preconditioned by the Hessian "
    "sample (answer = full-data influence; the sample sets the iterations)",
)
def fit_pcg(
    objective: Objective,
    indices: np.ndarray | None,
    weights: np.ndarray | None,
    damping: float,
    curvature: str,
    *,
    tol: float = 1e-6,
    max_iter: int = 1000,
    rank: int | None = None,
    keep: str = "above_damping",
    complement: str = "smallest",
    eigenvalues: str = "sample",
    on_nonconvergence: str = "warn",
) -> FittedInverse:
    """Full-data Gauss-Newton solve by CG, preconditioned by the sample's damped low-rank Gauss-Newton matrix.

    Options: ``tol`` (relative residual to reach), ``max_iter``, ``rank`` (at most this many of the sample's
    eigenpairs above wd + δ, the largest; None = all), ``keep`` ("above_damping": eigenvalues of G_S above
    wd + δ; "all": every non-zero one), ``complement`` ("smallest": the rest of the space at the
    smallest kept eigenvalue, as in Nyström PCG; "shift": at wd + δ), ``eigenvalues`` ("sample"; "full":
    Rayleigh-Ritz with ``rank`` full-data products at fit), ``on_nonconvergence`` ("warn" or "raise")."""
    if curvature != "gauss_newton":
        raise ValueError(
            "solver 'pcg' preconditions the full-data Gauss-Newton solve with the sample's Gauss-Newton "
            f"factor; pass curvature='gauss_newton' (got {curvature!r}), or use solver='cg' for the "
            "Hessian"
        )
    if objective.weight_decay + damping <= 0:
        raise ValueError(
            "solver 'pcg' needs weight_decay + damping > 0 (e.g. damping=0.01): the sample's Gauss-Newton "
            "matrix is singular without a shift"
        )
    if complement not in COMPLEMENTS:
        raise ValueError(f"complement must be one of {list(COMPLEMENTS)}, got {complement!r}")
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {list(KEEP_RULES)}, got {keep!r}")
    if eigenvalues not in EIGENVALUES:
        raise ValueError(f"eigenvalues must be one of {list(EIGENVALUES)}, got {eigenvalues!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1):
        raise ValueError(f"rank must be an integer >= 1 or None (all eigenpairs above wd + damping), got {rank!r}")
    check_budget(tol, max_iter)
    m = objective.n if indices is None else len(indices)
    rank_bound = m * (objective.n_classes - 1)  # rows of the sample's factor U_S
    side = min(rank_bound, objective.n_params)  # its Gram matrix is (r, r) when r < p, else (p, p)
    factor_bytes = (rank_bound * objective.n_params + side * side) * torch.finfo(objective.dtype).bits // 8
    if factor_bytes > LOW_RANK_MAX_BYTES:
        raise ValueError(
            f"solver 'pcg' with a Hessian sample of {m} points would form a {rank_bound} x {objective.n_params} "
            f"factor and a {side} x {side} Gram matrix ({factor_bytes / 1024**3:.1f} GiB, over the "
            f"{LOW_RANK_MAX_BYTES / 1024**3:.0f} GiB limit); the sample only preconditions the full-data solve, "
            "so pass a smaller one (e.g. m = 256), or use solver='cg' on all the data"
        )
    options = {
        "tol": tol,
        "max_iter": max_iter,
        "rank": rank,
        "keep": keep,
        "complement": complement,
        "eigenvalues": eigenvalues,
        "on_nonconvergence": on_nonconvergence,
    }
    return PreconditionedFit(objective, "pcg", indices, weights, damping, curvature, options)
