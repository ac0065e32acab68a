"""A fitted inverse as plain arrays and a JSON record, and back: what a disk cache stores so that a restart does not
refit (no pickle; the caller writes the arrays with ``np.savez`` and reads them with ``allow_pickle=False``, e.g.
through :class:`influence_core.array_store.ArrayStore`).

What is kept, per fitted state (``meta["state"]``):

- ``lu``: the dense exact inverse (H_S + δI)⁻¹ (p, p) (:class:`~influence_core.solvers.exact.ExactInverse`);
- ``low_rank``: the Woodbury pieces of :class:`~influence_core.solvers.low_rank.LowRankInverse`: K⁻¹ (r, r) and
  the sample's Gauss-Newton roots M_S (m, C−1, C) (the matrix-free factor map is rebuilt from them and the model,
  so a solve after loading is the same computation as before), or a dense U (r, p) when it was given as a tensor,
  or K⁻¹ (p, p) alone on the dense r >= p path;
- ``kfac`` / ``ekfac``: the per-layer eigenbases and eigenvalues (:class:`~influence_core.solvers.kfac.KFACInverse`);
- ``arnoldi``: the top-k eigenpairs (:class:`~influence_core.solvers.arnoldi.ArnoldiInverse`).

Iterative solvers (``cg``, ``lissa``: :class:`~influence_core.solvers.registry.IterativeFit`) have no fitted state
beyond the sample (the operator is rebuilt lazily; each solve iterates): :func:`is_storable` is False and
:func:`inverse_to_arrays` refuses them.

Every record names the parameters it was fitted for (``theta``: SHA-256 of θ) and their number; loading for
another model, or a record whose arrays are missing, misshapen or non-finite, raises :class:`FittedStateError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from influence_core.curvature.objective import GaussNewtonFactors, Objective
from influence_core.io_safety import jsonable
from influence_core.solvers.factor_io import fingerprint
from influence_core.solvers.registry import ExactFit, FactorFit, FittedInverse, IterativeFit

__all__ = ["FittedStateError", "is_storable", "inverse_to_arrays", "inverse_from_arrays", "STATE_FORMAT"]

STATE_FORMAT = 1


class FittedStateError(ValueError):
    """Stored fitted state that does not fit this model, or is incomplete or corrupt; the message says which."""


def is_storable(fit: FittedInverse) -> bool:
    """True for factorised inverses (exact, low_rank, kfac, ekfac, arnoldi); False for cg/lissa (nothing fitted)."""
    return isinstance(fit, ExactFit) and _state_of(fit) is not None


def _state_of(fit: FittedInverse) -> str | None:
    from influence_core.solvers.arnoldi import ArnoldiInverse
    from influence_core.solvers.exact import ExactInverse
    from influence_core.solvers.kfac import KFACInverse
    from influence_core.solvers.low_rank import LowRankInverse

    inverse = getattr(fit, "inverse", None)
    for cls, state in (
        (ExactInverse, "lu"),
        (LowRankInverse, "low_rank"),
        (KFACInverse, "kfac"),
        (ArnoldiInverse, "arnoldi"),
    ):
        if isinstance(inverse, cls):
            return state
    return None


def _put(arrays: dict[str, np.ndarray], name: str, t: torch.Tensor) -> None:
    """Store ``t``; a matrix held transposed in memory (column-major, e.g. from LAPACK) is stored as its transpose
    under ``name + "_T"``, so the loaded tensor has the same memory layout and products with it round alike."""
    t = t.detach().cpu()
    if t.ndim == 2 and not t.is_contiguous() and t.T.is_contiguous():
        arrays[f"{name}_T"] = t.T.numpy()
    else:
        arrays[name] = t.contiguous().numpy()


def inverse_to_arrays(fit: FittedInverse) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a fitted inverse: numeric arrays only, meta JSON-serialisable (see the module doc)."""
    if isinstance(fit, IterativeFit) or not is_storable(fit):
        raise ValueError(
            f"solver {fit.solver!r} has no fitted state to store (an iterative solver iterates at "
            "every solve; only exact, low_rank, kfac, ekfac and arnoldi fits are stored)"
        )
    obj, inv, state = fit.objective, fit.inverse, _state_of(fit)
    arrays: dict[str, np.ndarray] = {}
    if fit.indices is not None:
        arrays["indices"] = np.asarray(fit.indices, dtype=np.int64)
    if fit.weights is not None:
        arrays["weights"] = np.asarray(fit.weights, dtype=np.float64)
    meta: dict[str, Any] = {
        "state": state,
        "state_format": STATE_FORMAT,
        "solver": fit.solver,
        "damping": fit.damping,
        "curvature": fit.curvature,
        "options": jsonable(fit.options),
        "info": jsonable(fit.info),
        "n_params": obj.n_params,
        "theta": fingerprint(obj.theta),
        "weight_decay": obj.weight_decay,
    }
    if state == "lu":
        _put(arrays, "inverse", inv.inverse)
        meta.update(inverse_damping=inv.damping, factor_seconds=inv.factor_seconds)
    elif state == "low_rank":
        _put(arrays, "K_inv", inv.K_inv)
        u_kind = "none" if inv.U is None else ("dense" if isinstance(inv.U, torch.Tensor) else "map")
        if u_kind == "dense":
            _put(arrays, "U", inv.U)
        elif u_kind == "map":
            if not isinstance(inv.U, GaussNewtonFactors):
                raise ValueError(f"cannot store a low-rank inverse over a {type(inv.U).__name__} map")
            _put(arrays, "roots", inv.U.M)
            arrays["map_indices"] = np.asarray(inv.U.indices, dtype=np.int64)
        meta.update(
            u_kind=u_kind,
            shift=inv.shift,
            inverse_damping=inv.damping,
            rank=inv.rank,
            dim=inv.dim,
            factor_seconds=inv.factor_seconds,
        )
    elif state == "kfac":
        for i, f in enumerate(inv.factors):
            for name, t in f.items():
                _put(arrays, f"kfac{i}_{name}", t)
        meta.update(
            kfac={
                "config": jsonable(inv.config),
                "blocks": [b.to_dict() for b in inv.blocks],
                "others": [list(o) for o in inv.others],
                "damping": inv.damping,
                "names": [sorted(f) for f in inv.factors],
                "fit_seconds": inv.fit_seconds,
            }
        )
    else:  # arnoldi
        _put(arrays, "eigenvalues", inv.eigenvalues)
        _put(arrays, "eigenvectors", inv.eigenvectors)
        meta.update(
            arnoldi={
                "config": jsonable(inv.config),
                "damping": inv.damping,
                "complement": inv.complement,
                "fit_seconds": inv.fit_seconds,
                "hvps": inv.hvps,
            }
        )
    return arrays, meta


def _tensor(
    arrays: dict[str, np.ndarray], name: str, shape: tuple | None, obj: Objective, keep_dtype: bool = False
) -> torch.Tensor:
    """The stored array as a tensor on the model's device, in the model's dtype (or its own: ``keep_dtype``)."""
    transposed = name not in arrays and f"{name}_T" in arrays
    if name not in arrays and not transposed:
        raise FittedStateError(f"the stored fit lacks the array {name!r}; it is incomplete")
    a = np.asarray(arrays[f"{name}_T"]).T if transposed else np.asarray(arrays[name])
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise FittedStateError(f"the stored array {name!r} has shape {a.shape}, expected {tuple(shape)}")
    if not np.issubdtype(a.dtype, np.number) or (np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()):
        raise FittedStateError(f"the stored array {name!r} is not finite numbers; the file is corrupt")
    t = torch.as_tensor(a).to(obj.device)
    return t if keep_dtype else t.to(obj.dtype)


def inverse_from_arrays(objective: Objective, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FittedInverse:
    """The fitted inverse stored by :func:`inverse_to_arrays`, on ``objective`` (the same model and data it was
    fitted on, else :class:`FittedStateError`). No refit: the solve uses the stored factors."""
    try:
        return _from_arrays(objective, arrays, meta)
    except FittedStateError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FittedStateError(
            f"the stored fit is incomplete or corrupt ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


def _from_arrays(obj: Objective, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FittedInverse:
    if meta.get("state_format") != STATE_FORMAT:
        raise FittedStateError(f"stored fit format {meta.get('state_format')!r}, this code reads {STATE_FORMAT}")
    if int(meta["n_params"]) != obj.n_params or meta["theta"] != fingerprint(obj.theta):
        raise FittedStateError(
            "the stored fit was made for other model parameters (another training run or "
            "parameter selection); it cannot be used for this model"
        )
    if float(meta["weight_decay"]) != obj.weight_decay:
        raise FittedStateError(f"the stored fit has weight decay {meta['weight_decay']}, this model {obj.weight_decay}")
    p, state = obj.n_params, meta["state"]
    indices = None if "indices" not in arrays else obj.subset(np.asarray(arrays["indices"]))
    weights = None if "weights" not in arrays else np.asarray(arrays["weights"], dtype=np.float64)
    if weights is not None and (indices is None or weights.shape != indices.shape):
        raise FittedStateError("the stored weights do not match the stored sample")
    args = (obj, meta["solver"], indices, weights, float(meta["damping"]), meta["curvature"], dict(meta["options"]))
    if state == "lu":
        from influence_core.solvers.exact import ExactInverse

        inverse = ExactInverse.from_state(
            _tensor(arrays, "inverse", (p, p), obj),
            float(meta["inverse_damping"]),
            float(meta.get("factor_seconds", 0.0)),
        )
        return ExactFit(inverse, *args, info=meta["info"])
    if state == "low_rank":
        from influence_core.solvers.low_rank import LowRankInverse

        r, kind = int(meta["rank"]), meta["u_kind"]
        if int(meta["dim"]) != p:
            raise FittedStateError(f"the stored low-rank fit has dimension {meta['dim']}, this model {p}")
        if kind == "map":
            map_idx = obj.subset(np.asarray(arrays["map_indices"]))
            roots = _tensor(arrays, "roots", None, obj)
            if (
                roots.ndim != 3
                or roots.shape[0] != len(map_idx)
                or roots.shape[0] * roots.shape[1] != r
                or roots.shape[2] != obj.n_classes
            ):
                raise FittedStateError(
                    f"the stored Gauss-Newton roots have shape {tuple(roots.shape)}, which does "
                    f"not match rank {r} and {obj.n_classes} classes"
                )
            U: Any = GaussNewtonFactors.from_roots(obj, map_idx, roots, weights)
        elif kind == "dense":
            U = _tensor(arrays, "U", (r, p), obj)
        elif kind == "none":
            U = None
        else:
            raise FittedStateError(f"unknown low-rank factor kind {kind!r}")
        size = r if U is not None else p
        inverse = LowRankInverse.from_state(
            U,
            _tensor(arrays, "K_inv", (size, size), obj),
            rank=r,
            dim=p,
            shift=float(meta["shift"]),
            damping=float(meta["inverse_damping"]),
            factor_seconds=float(meta.get("factor_seconds", 0.0)),
        )
        return ExactFit(inverse, *args, info=meta["info"])
    if state == "kfac":
        from influence_core.solvers.kfac import KFACInverse, LayerBlock

        k = meta["kfac"]
        blocks = [LayerBlock.from_dict(d) for d in k["blocks"]]
        factors = [
            {name: _tensor(arrays, f"kfac{i}_{name}", None, obj, True) for name in names}
            for i, names in enumerate(k["names"])
        ]
        if len(factors) != len(blocks):
            raise FittedStateError("the stored K-FAC factors do not match their layers")
        inverse = KFACInverse(
            k["config"],
            blocks,
            [tuple(o) for o in k["others"]],
            factors,
            k["damping"],
            fit_seconds=float(k.get("fit_seconds", 0.0)),
        )
        if inverse.n_params != p:
            raise FittedStateError(f"the stored K-FAC factors cover {inverse.n_params} parameters, this model {p}")
        return FactorFit(inverse, *args, info=meta["info"])
    if state == "arnoldi":
        from influence_core.solvers.arnoldi import ArnoldiInverse

        a = meta["arnoldi"]
        lam = _tensor(arrays, "eigenvalues", None, obj, True)
        V = _tensor(arrays, "eigenvectors", (p, lam.numel()), obj, True)
        inverse = ArnoldiInverse(
            a["config"],
            lam,
            V,
            float(a["damping"]),
            complement=bool(a["complement"]),
            fit_seconds=float(a.get("fit_seconds", 0.0)),
            hvps=int(a.get("hvps", 0)),
        )
        return FactorFit(inverse, *args, info=meta["info"])
    raise FittedStateError(f"unknown fitted state {state!r}")
