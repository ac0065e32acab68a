"""The field's attribution methods (dattri 0.3.0) on this project's LDS ground truth: the main-process side.

dattri runs in its own environment (``dattri_side.py``); this module writes what it needs and reads what it returns,
arrays only (``.npz`` without pickle, JSON), converts each score matrix to this project's convention and builds the
comparison table. The driver is ``benchmarks/field_compare.py``.

Exchange (directory DIR):
    problem.npz      X_train, y_train, X_query, y_query, the model's weights (state_dict names), JSON ``settings``
    checkpoints.npz  extra checkpoints, keys ``{name}__{parameter}`` (TRAK's ensemble, TracIn's trajectory)
    dattri.npz       one (n_train, n_query) array per method, dattri's raw output
    dattri.json      per method seconds, peak MB, error; the side's forward+backward seconds

Convention (the package's): score[t, j] = (1/n) ∇ℓ_tᵀ (H + δI)⁻¹ ∇ℓ_j, the predicted increase of test loss t when
training point j is removed, positive = helpful, shape (n_test, n_train). dattri returns (n_train, n_test):

- influence-function attributors (explicit, CG, LiSSA, Arnoldi, EK-FAC, DataInf): ∇ℓ_jᵀ (H + λI)⁻¹ ∇ℓ_t with the
  mean loss's H and no 1/n, positive = helpful, so ours = rawᵀ / n (checked: Pearson +1 against our exact influence
  on logistic regression, where Gauss-Newton = Hessian);
- TRAK: φ_t (ΦᵀΦ + λI)⁻¹ φ_j (1 − p_j) on the gradients φ of log p/(1 − p) (higher = better, so the product of two
  such gradients has the sign of the product of loss gradients): positive = helpful, ours = rawᵀ;
- TracIn / Grad-Dot: Σ_c η_c ∇ℓ_j(θ_c)ᵀ ∇ℓ_t(θ_c), positive = proponent = helpful, ours = rawᵀ.

The LDS is a rank correlation and does not see a positive scale; the sign decides whether it is +LDS or −LDS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IF_KINDS",
    "KINDS",
    "to_project_convention",
    "write_problem",
    "read_result",
    "agreement",
    "table_rows",
    "COLUMNS",
]

IF_KINDS = ("explicit", "cg", "lissa", "arnoldi", "ekfac", "datainf")
"""dattri's influence-function attributors: raw = n · (our score)ᵀ."""
KINDS = IF_KINDS + ("trak", "tracin", "grad_dot")

COLUMNS = [
    ("method", "method"),
    ("library", "library"),
    ("checkpoints", "checkpoints"),
    ("lds", "LDS"),
    ("lds_std", "std over test points"),
    ("lds_gt", "LDS, shipped file"),
    ("cost_ratio", "cost / fwd+bwd"),
    ("train_ratio", "+ extra training / fwd+bwd"),
    ("seconds", "seconds"),
    ("peak_mb", "peak MB"),
    ("spearman_exact", "Spearman vs our exact"),
    ("pearson_exact", "Pearson vs our exact"),
]


def to_project_convention(raw: Any, kind: str, n_train: int) -> np.ndarray:
    """dattri's (n_train, n_test) matrix of method ``kind`` as this package's (n_test, n_train) removal scores."""
    if kind not in KINDS:
        raise ValueError(f"unknown dattri method kind {kind!r}; choose one of {list(KINDS)}")
    R = np.asarray(raw, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != n_train:
        raise ValueError(f"dattri's scores must be (n_train, n_test) = ({n_train}, T), got shape {R.shape}")
    if not np.all(np.isfinite(R)):
        raise ValueError(f"dattri's {kind} scores hold {int((~np.isfinite(R)).sum())} NaN/inf entries")
    S = np.ascontiguousarray(R.T)
    return S / n_train if kind in IF_KINDS else S


def _state_arrays(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state.items()}


def _savez_atomic(path: Path, **arrays: Any) -> None:
    if path.is_symlink():
        raise ValueError(f"refusing to write through the symlink {path}")
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_problem(
    directory: str | os.PathLike,
    *,
    weights: Mapping[str, Any],
    X_train: Any,
    y_train: Any,
    X_query: Any,
    y_query: Any,
    settings: Mapping[str, Any],
    checkpoints: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """problem.npz (+ checkpoints.npz) for ``dattri_side.py``; ``settings`` must hold ``arch`` and ``methods``."""
    d = Path(directory)
    for key in ("arch", "methods", "dtype", "threads", "seed"):
        if key not in settings:
            raise ValueError(f"settings must hold {key!r}")
    unknown = sorted({m["kind"] for m in settings["methods"]} - set(KINDS))
    if unknown:
        raise ValueError(f"unknown dattri method kinds {unknown}; choose from {list(KINDS)}")
    names = [m["name"] for m in settings["methods"]]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    arrays = _state_arrays(weights)
    reserved = {"X_train", "y_train", "X_query", "y_query", "settings"} & set(arrays)
    if reserved:
        raise ValueError(f"weight names {sorted(reserved)} collide with the problem's arrays")
    _savez_atomic(
        d / "problem.npz",
        X_train=np.asarray(X_train),
        y_train=np.asarray(y_train),
        X_query=np.asarray(X_query),
        y_query=np.asarray(y_query),
        settings=np.array(json.dumps(dict(settings))),
        **arrays,
    )
    if checkpoints:
        flat = {}
        for name, state in checkpoints.items():
            if "__" in name or name == "final":
                raise ValueError(f"checkpoint name {name!r} must not contain '__' nor be 'final'")
            flat.update({f"{name}__{k}": v for k, v in _state_arrays(state).items()})
        _savez_atomic(d / "checkpoints.npz", **flat)
    needed = {c for m in settings["methods"] for c in m.get("checkpoints", ["final"])} - {"final"}
    missing = sorted(needed - set(checkpoints or {}))
    if missing:
        raise ValueError(f"methods name checkpoints {missing} that are not given")


def read_result(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(raw score matrices by method name, the side's JSON report); never unpickles."""
    d = Path(directory)
    report = json.loads((d / "dattri.json").read_text())
    with np.load(d / "dattri.npz", allow_pickle=False) as f:
        arrays = {k: np.asarray(f[k]) for k in f.files}
    return arrays, report


def agreement(reference: Any, scores: Any) -> dict[str, float]:
    """Mean over test rows of the Spearman and Pearson correlations of ``scores`` with ``reference`` (T, n)."""
    from influence_core.evaluation.metrics import rowwise_spearman

    A, B = np.asarray(reference, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if A.shape != B.shape:
        raise ValueError(f"reference {A.shape} and scores {B.shape} must have the same shape")
    a, b = A - A.mean(1, keepdims=True), B - B.mean(1, keepdims=True)
    pear = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
    return {"spearman_exact": float(np.nanmean(rowwise_spearman(A, B))), "pearson_exact": float(np.nanmean(pear))}


def table_rows(records: list[dict[str, Any]], base_seconds: Mapping[str, float]) -> list[dict[str, Any]]:
    """Rows of :data:`COLUMNS`, sorted by LDS (best first): ``cost_ratio`` = seconds / the forward+backward seconds
    of the process that ran the method (``base_seconds[record["side"]]``); ``train_ratio`` adds the training of the
    extra checkpoints (``train_seconds``, measured in the main process) over the main process's forward+backward."""
    rows = []
    for r in records:
        base = base_seconds[r["side"]]
        row = {c: r.get(c) for c, _ in COLUMNS}
        row["cost_ratio"] = r["seconds"] / base if r.get("seconds") is not None else None
        extra = r.get("train_seconds") or 0.0
        row["train_ratio"] = (
            (row["cost_ratio"] + extra / base_seconds["main"]) if (extra and row["cost_ratio"] is not None) else None
        )
        rows.append(row)
    return sorted(rows, key=lambda r: (r["lds"] is None or not np.isfinite(r["lds"]), -(r["lds"] or 0.0)))


def read_ground_truth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A shipped LDS ground-truth file (``ground_truth/NAME.npz``, never unpickled): ``masks`` (K, n) bool (True =
    kept), ``logits`` (R, K, T, C), ``test_indices`` (T,), ``y_test`` (T,) and the recipe's ``n_train``."""
    with np.load(path, allow_pickle=False) as f:
        missing = {"masks_packed", "logits", "test_indices", "y_test", "recipe"} - set(f.files)
        if missing:
            raise ValueError(f"{path} is not an LDS ground-truth file: it lacks {sorted(missing)}")
        recipe = json.loads(str(f["recipe"]))
        n = int(recipe["dataset"]["n_train"])
        logits = np.asarray(f["logits"])
        masks = np.unpackbits(f["masks_packed"], axis=1, count=n).astype(bool)
        if masks.shape[0] != logits.shape[1]:
            raise ValueError(f"{path}: {masks.shape[0]} subset masks but logits for {logits.shape[1]} subsets")
        return {
            "masks": masks,
            "logits": logits,
            "test_indices": np.asarray(f["test_indices"]),
            "y_test": np.asarray(f["y_test"]),
            "n_train": np.asarray(n),
        }
