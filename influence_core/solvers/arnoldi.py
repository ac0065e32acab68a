"""Arnoldi influence (Schioppa et al., *Scaling Up Influence Functions*, AAAI 2022): the top-k eigenpairs of the
curvature on the Hessian sample and the inverse on their span.

With H_S the Hessian or Gauss-Newton matrix on the sample (:meth:`Objective.operator`, wd·I included) and its k
eigenpairs (λ_i, v_i) of largest magnitude, V = [v_1 … v_k] (p, k):

    projected (default, as Schioppa et al. and pyDVL):  X = V diag(1/(λ + δ)) Vᵀ B
    complement=True:                                    X = V diag(1/(λ + δ)) Vᵀ B + (I − VVᵀ) B / (wd + δ)

"projected" drops the directions outside the top-k span (their contribution to every score is 0); "complement"
treats the rest of the spectrum as the regulariser wd alone (exact when H_S − wd·I has rank <= k, as the
Gauss-Newton matrix of m points has, rank <= m(C−1)). With k = p both equal the exact solve (H_S + δI)⁻¹B.

The eigenpairs come from ``scipy.sparse.linalg.eigsh`` (implicitly restarted Lanczos, ARPACK: the symmetric form
of Arnoldi) on the HVP operator in float64, from a seeded start vector; for k >= p − 1 (ARPACK needs k < p) the
dense matrix is formed and ``numpy.linalg.eigh`` used. Each Lanczos step is one batched HVP over the sample.
``solve`` takes and returns (k, p) batches like the project's other solvers.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from influence_core.curvature.objective import CURVATURE_MODES, Objective
from influence_core.solvers.base import SolverError, SolveResult
from influence_core.solvers.factor_io import (
    FactorFileError,
    check_fitted_for,
    config_key,
    fingerprint,
    read_factor_file,
    save_path,
    write_factor_file,
)

__all__ = ["ArnoldiInverse", "fit_arnoldi", "arnoldi_config"]

FORMAT = "influence_core.solvers.arnoldi/1"


def _sample_arrays(objective: Objective, sample: Any, weights: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if weights is None and getattr(sample, "weights", None) is not None:
        weights = sample.weights
    if sample is not None and hasattr(sample, "indices"):
        sample = sample.indices
    idx = objective.subset(None if sample is None else np.asarray(sample))
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    objective._weights(idx, w)  # validates
    return idx, w


def _check_rank(rank: Any, p: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"rank must be an integer between 1 and the number of parameters {p}, got {rank!r}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1 (the number of eigenpairs kept), got {rank}")
    if rank > p:
        raise ValueError(f"rank {rank} exceeds the number of parameters p = {p}; pass a rank between 1 and {p}")
    return int(rank)


def _check_damping(damping: Any) -> float:
    if isinstance(damping, bool) or damping is None or not math.isfinite(damping) or damping < 0:
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    return float(damping)


def arnoldi_config(
    objective: Objective,
    sample: Any = None,
    weights: Any = None,
    *,
    rank: int = 50,
    curvature: str = "gauss_newton",
    seed: int = 0,
    tol: float | None = None,
) -> dict[str, Any]:
    """What the eigenpairs depend on (their file key hashes it): rank, curvature, sample, data, θ, wd, seed, tol."""
    rank = _check_rank(rank, objective.n_params)
    if curvature not in CURVATURE_MODES:
        raise ValueError(f"unknown curvature {curvature!r}; choose one of {list(CURVATURE_MODES)}")
    idx, w = _sample_arrays(objective, sample, weights)
    chunk = torch.as_tensor(idx, device=objective.device)
    return {
        "method": "arnoldi",
        "rank": rank,
        "curvature": curvature,
        "seed": int(seed),
        "tol": None if tol is None else float(tol),
        "m": int(len(idx)),
        "sample": fingerprint(idx, w if w is not None else "uniform"),
        "data": fingerprint(*objective.batch(chunk)),
        "model": fingerprint(objective.theta),
        "weight_decay": objective.weight_decay,
        "layout": [[n, list(s)] for n, s in zip(objective.names, objective.shapes)],
    }


def fit_arnoldi(
    objective: Objective,
    sample: Any = None,
    weights: Any = None,
    *,
    rank: int = 50,
    curvature: str = "gauss_newton",
    damping: float = 0.0,
    complement: bool = False,
    seed: int = 0,
    tol: float | None = None,
    max_iter: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> "ArnoldiInverse":
    """Top-``rank`` eigenpairs of H_S (``curvature`` "gauss_newton" (default) or "hessian") on the sample.

    ``sample``: a HessianSample (weights used unless ``weights`` is given), an index array or None (all points).
    ``tol``: ARPACK's relative accuracy (None: 0, machine precision, for float64 models; 1e-6 for float32).
    ``max_iter``: ARPACK's restart budget (None: its default, 10·p). ``cache_dir``: load/save the eigenpairs as
    ``cache_dir/arnoldi-<key>.npz``. Raises ``ValueError`` for a rank outside [1, p], :class:`SolverError` when
    ARPACK does not converge or when λ + δ <= 0 for a kept eigenvalue (an indefinite Hessian)."""
    config = arnoldi_config(objective, sample, weights, rank=rank, curvature=curvature, seed=seed, tol=tol)
    damping = _check_damping(damping)
    if cache_dir is not None:
        path = Path(cache_dir) / f"arnoldi-{config_key(config)}.npz"
        if path.is_file():
            return ArnoldiInverse.load(path, objective, damping=damping, complement=complement)
    idx, w = _sample_arrays(objective, sample, weights)
    p, k = objective.n_params, config["rank"]
    start = time.perf_counter()
    op = objective.operator(idx, w, curvature)
    if k >= p - 1:
        H = objective.hessian(idx, w, curvature).double().cpu().numpy()
        lam, V = np.linalg.eigh(H)
        order = np.argsort(-np.abs(lam), kind="stable")[:k]
        lam, V = lam[order], V[:, order]
        iterations = 0
    else:
        calls = [0]

        def matvec(v: np.ndarray) -> np.ndarray:
            calls[0] += 1
            t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(1, -1)).to(objective.device, objective.dtype)
            return op(t)[0].double().cpu().numpy()

        lin = LinearOperator((p, p), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(seed).standard_normal(p)
        atol = (0.0 if objective.dtype == torch.float64 else 1e-6) if tol is None else float(tol)
        try:
            lam, V = eigsh(lin, k=k, which="LM", v0=v0, tol=atol, maxiter=max_iter)
        except ArpackNoConvergence as err:
            raise SolverError(
                f"Lanczos (ARPACK) found only {len(err.eigenvalues)} of {k} eigenpairs; raise max_iter "
                "or tol, or lower the rank"
            ) from err
        order = np.argsort(-np.abs(lam), kind="stable")
        lam, V = lam[order], V[:, order]
        iterations = calls[0]
    inverse = ArnoldiInverse(
        config,
        torch.as_tensor(lam),
        torch.as_tensor(np.ascontiguousarray(V)),
        damping,
        complement=complement,
        fit_seconds=time.perf_counter() - start,
        hvps=iterations,
    )
    if cache_dir is not None:
        inverse.save(path)
    return inverse


class ArnoldiInverse:
    """(H_S + δI)⁻¹ restricted to the top-k eigenvectors (see the module doc); ``solve(B)`` for (k, p) batches.

    ``eigenvalues`` (k,) (of H_S, wd included, by decreasing magnitude), ``eigenvectors`` (p, k) float64,
    ``damping``, ``complement``, ``config`` / ``key``, ``fit_seconds``, ``hvps`` (operator products used)."""

    def __init__(
        self,
        config: dict[str, Any],
        eigenvalues: torch.Tensor,
        eigenvectors: torch.Tensor,
        damping: float = 0.0,
        *,
        complement: bool = False,
        fit_seconds: float = 0.0,
        hvps: int = 0,
    ):
        self.config = config
        self.eigenvalues = eigenvalues.double()
        self.eigenvectors = eigenvectors.double()
        self.damping = _check_damping(damping)
        self.complement = bool(complement)
        self.fit_seconds = fit_seconds
        self.hvps = hvps
        self.weight_decay = float(config["weight_decay"])
        shifted = self.eigenvalues + self.damping
        if float(shifted.min()) <= 0:
            raise SolverError(
                f"a kept eigenvalue plus damping is <= 0 (smallest λ = {float(self.eigenvalues.min()):.3g},"
                f" damping {self.damping:g}): the curvature is not positive definite on its top-"
                f"{len(shifted)} span; increase damping above |λ_min| or use curvature='gauss_newton'"
            )
        if self.complement and self.weight_decay + self.damping <= 0:
            raise SolverError(
                "complement=True divides the rest of the space by weight decay + damping, which is 0; pass damping > 0"
            )

    @property
    def rank(self) -> int:
        return int(self.eigenvalues.numel())

    @property
    def key(self) -> str:
        return config_key(self.config)

    def with_damping(self, damping: float, complement: bool | None = None) -> "ArnoldiInverse":
        """The same eigenpairs with another damping (and optionally another complement rule)."""
        return ArnoldiInverse(
            self.config,
            self.eigenvalues,
            self.eigenvectors,
            damping,
            complement=self.complement if complement is None else complement,
            fit_seconds=self.fit_seconds,
            hvps=self.hvps,
        )

    def solve(self, B: torch.Tensor) -> SolveResult:
        """X (k, p) = V diag(1/(λ+δ)) Vᵀ b [+ (I − VVᵀ) b / (wd+δ)] for each row b of B (k, p) or (p,)."""
        if B.ndim == 1:
            B = B.unsqueeze(0)
        p = self.eigenvectors.shape[0]
        if B.ndim != 2 or B.shape[1] != p:
            raise ValueError(f"right-hand sides must be (k, {p}) (or ({p},)), got shape {tuple(B.shape)}")
        if not torch.isfinite(B).all():
            raise ValueError("right-hand side contains NaN or inf (check the model's outputs and the data)")
        start = time.perf_counter()
        V = self.eigenvectors.to(B.device)
        Bd = B.double()
        P = Bd @ V  # (k, rank)
        X = (P / (self.eigenvalues.to(B.device) + self.damping)) @ V.T
        if self.complement:
            X = X + (Bd - P @ V.T) / (self.weight_decay + self.damping)
        return SolveResult(
            X.to(B.dtype),
            "arnoldi",
            0,
            True,
            self.damping,
            seconds=time.perf_counter() - start,
            info={
                "factor_seconds": self.fit_seconds,
                "inverse": "arnoldi",
                "rank": self.rank,
                "complement": self.complement,
                "curvature": self.config["curvature"],
                "hvps": self.hvps,
                "key": self.key,
            },
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the eigenpairs to ``path`` (.npz; a directory: ``<dir>/arnoldi-<key>.npz``)."""
        path = save_path(path, f"arnoldi-{self.key}")
        header = {
            "config": self.config,
            "key": self.key,
            "damping": self.damping,
            "complement": self.complement,
            "fit_seconds": self.fit_seconds,
            "hvps": self.hvps,
        }
        return write_factor_file(
            path,
            FORMAT,
            header,
            {"eigenvalues": self.eigenvalues.cpu().numpy(), "eigenvectors": self.eigenvectors.cpu().numpy()},
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        objective: Objective | None = None,
        *,
        damping: float | None = None,
        complement: bool | None = None,
    ) -> "ArnoldiInverse":
        """Eigenpairs saved by :meth:`save`; with ``objective`` the file must match its model (layout, θ, wd)."""
        header, arrays = read_factor_file(path, FORMAT, required=("eigenvalues", "eigenvectors"))
        try:
            config = header["config"]
            lam, V = arrays["eigenvalues"], arrays["eigenvectors"]
            if lam.ndim != 1 or V.ndim != 2 or V.shape[1] != lam.shape[0] or lam.shape[0] != config["rank"]:
                raise FactorFileError(
                    f"{str(path)!r}: eigenpair shapes {lam.shape}, {V.shape} do not match rank "
                    f"{config['rank']}; the file is corrupt, fit again"
                )
            if config_key(config) != header["key"]:
                raise FactorFileError(
                    f"{str(path)!r}: the configuration does not match its key; the file was edited or is corrupt"
                )
        except (KeyError, TypeError) as err:
            raise FactorFileError(f"{str(path)!r} has an incomplete header ({err!r}); fit again") from err
        if objective is not None:
            if V.shape[0] != objective.n_params:
                raise FactorFileError(f"{str(path)!r} was fitted for a model with another parameter layout")
            check_fitted_for(path, config, objective, "the eigenpairs")
        inv = cls(
            config,
            torch.as_tensor(lam),
            torch.as_tensor(V),
            header["damping"] if damping is None else damping,
            complement=header["complement"] if complement is None else complement,
            fit_seconds=float(header.get("fit_seconds", 0.0)),
            hvps=int(header.get("hvps", 0)),
        )
        if objective is not None:
            inv.eigenvectors = inv.eigenvectors.to(objective.device)
            inv.eigenvalues = inv.eigenvalues.to(objective.device)
        return inv


# --------------------------------------------------------------------------------------------------------------------
# The registry's "arnoldi" solver
# --------------------------------------------------------------------------------------------------------------------


def fit_arnoldi_solver(
    objective: Objective,
    indices: np.ndarray | None,
    weights: np.ndarray | None,
    damping: float,
    curvature: str,
    *,
    rank: int = 50,
    complement: bool = False,
    seed: int = 0,
    tol: float | None = None,
    max_iter: int | None = None,
    factor_file: str | os.PathLike | None = None,
) -> Any:
    """Top-``rank`` eigenpairs of the curvature (Hessian or Gauss-Newton) on the sample by Lanczos; the projected
    inverse (``complement=True`` adds (I − VVᵀ)/(wd + δ)). ``factor_file``: a .npz path or a directory: reuse the
    saved eigenpairs of this configuration, else compute and save them there."""
    from influence_core.solvers.factor_io import load_or_fit
    from influence_core.solvers.registry import FactorFit

    if not isinstance(complement, bool):
        raise ValueError(f"complement must be True or False, got {complement!r}")
    if max_iter is not None and (
        isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1
    ):
        raise ValueError(f"max_iter must be an integer >= 1 or None (ARPACK's default), got {max_iter!r}")
    config = arnoldi_config(objective, indices, weights, rank=rank, curvature=curvature, seed=seed, tol=tol)
    inverse, where = load_or_fit(
        factor_file,
        f"arnoldi-{config_key(config)}",
        config,
        lambda path: ArnoldiInverse.load(path, objective, damping=damping, complement=complement),
        lambda: fit_arnoldi(
            objective,
            indices,
            weights,
            rank=rank,
            curvature=curvature,
            damping=damping,
            complement=complement,
            seed=seed,
            tol=tol,
            max_iter=max_iter,
        ),
    )
    options = {
        "rank": rank,
        "complement": complement,
        "seed": seed,
        "tol": tol,
        "max_iter": max_iter,
        "factor_file": None if factor_file is None else str(factor_file),
    }
    info = {
        "inverse": "arnoldi",
        "rank": inverse.rank,
        "complement": complement,
        "key": inverse.key,
        "factor_seconds": inverse.fit_seconds,
        "hvps": inverse.hvps,
        "eigenvalue_range": [float(inverse.eigenvalues.min()), float(inverse.eigenvalues.max())],
        **where,
    }
    return FactorFit(inverse, objective, "arnoldi", indices, weights, damping, curvature, options, info=info)


def _register() -> None:
    from influence_core.solvers.registry import register_solver

    register_solver(
        "arnoldi",
        fit_arnoldi_solver,
        description="Arnoldi/Lanczos: top-k eigenpairs of the curvature, projected inverse",
    )


_register()
