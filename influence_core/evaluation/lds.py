"""The linear datamodeling score (LDS): how well an attribution predicts what *retraining* does.

Definition (TRAK, Park et al. 2023; dattri; Kronfluence), with this package's removal convention
score[t, j] = predicted increase of test output f_t when training point j is removed:

    S_1 … S_K        random subsets of ⌊α·n⌉ training points (subset k drawn from ``default_rng([subsets_seed, k])``)
    f_t(S_k)         output of test point t after retraining on S_k, averaged over R retrain seeds
    ĝ_t(S_k)         = Σ_{j ∉ S_k} score[t, j]            (predicted f_t(S_k) − f_t(full); the constant drops out)
    LDS_t            = Spearman over k of (ĝ_t(S_k), f_t(S_k))
    LDS              = mean over test points of LDS_t

Outputs f_t: ``"loss"`` (cross-entropy of the true label, the default) or ``"margin"``, f_t = −(z_y − max_{c≠y} z_c),
signed so that both outputs grow when the prediction gets worse (the same direction as the loss scores).

**Retraining** (:func:`retrain_outputs`): each subset is retrained *from scratch* with the model's own recipe
(:func:`~influence_core.models.training.train_model`: same architecture, epochs, batch size, learning rate, L-BFGS
polish,
dtype) and retrain seeds ``seed + r`` (r = 0 … R−1, ``seed`` = the model's training seed), with weight decay
wd·n/|S_k| so the retrained model minimises (1/n) Σ_{j∈S_k} ℓ_j + (wd/2)‖θ‖², the objective whose linearisation the
influence scores are (the class-removal retraining uses the same convention). The logits of *every* test point are
kept, so one cache serves any test points and both outputs.

**Cache**: one ``.npz`` per finished retrain (never pickle), ``<cache_dir>/<key>/k{k}_r{r}.npz``, written atomically,
so an interrupted run continues where it stopped. The key is a SHA-256 of everything the retrained logits depend on:
the training and test arrays, the model's training configuration (arch, seed, epochs, lr, wd, dtype, …), α, the
subsets seed and :data:`CACHE_VERSION`. K and R are deliberately not in the key: subset k and seed r do not depend
on them, so raising K or R reuses every retrain already done (the manifest records the K and R of each run).

**Noise ceiling** (:func:`noise_ceiling`): retraining is itself noisy (seeds change the init and batch order). With
ρ_t the mean over seed pairs (r, r') of Spearman_k(f_t^r, f_t^{r'}) (the LDS one seed's outputs reach against
another's), the Spearman–Brown reliability of the R-seed mean is ρ_R = Rρ/(1 + (R−1)ρ), and an attribution that
predicted the *expected* retrained output perfectly would reach about √ρ_R against the R-seed mean: that is the
``ceiling`` reported beside every LDS (per test point, ρ clipped at 0, then averaged). For a convex model trained
to its optimum (logistic regression) the seeds agree and the ceiling is ≈ 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from influence_core.data.datasets import Dataset
from influence_core.evaluation.metrics import rowwise_spearman
from influence_core.influence.executors import Executor, get_executor
from influence_core.io_safety import atomic_path, atomic_write, check_output_dir
from influence_core.keys import content_key
from influence_core.models.training import train_model
from influence_core.models.zoo import predict_logits
from influence_core.progress import Progress
from influence_core.runtime import torch_threads

__all__ = [
    "CACHE_VERSION",
    "OUTPUTS",
    "RetrainPlan",
    "RetrainedOutputs",
    "LDSResult",
    "draw_subsets",
    "output_values",
    "linear_datamodeling_score",
    "noise_ceiling",
    "retrain_outputs",
    "lds",
    "default_cache_dir",
]

CACHE_VERSION = 1
"""Bump when the retraining recipe changes (invalidates every cached retrain)."""
CACHE_KEY_DIGITS = 24
"""Length of the retrain cache's key (kept: it names cache folders already on disk)."""
OUTPUTS = ("loss", "margin")
_TRAIN_KEYS = ("epochs", "batch_size", "lr", "polish_steps", "dtype")
_OPTIONAL_TRAIN_KEYS = ("lr_schedule", "grad_tol", "max_polish_steps", "width")
"""Recorded (and hashed into the cache key) only when they differ from :class:`TrainingConfig`'s defaults, so the
keys of recipes that never set them (the MLPs, logistic regression) are unchanged."""


def default_cache_dir() -> Path:
    """``$INFLUENCE_LDS_CACHE`` or ``~/.cache/influence-explorer/lds``."""
    return Path(os.environ.get("INFLUENCE_LDS_CACHE", Path.home() / ".cache" / "influence-explorer" / "lds"))


# --------------------------------------------------------------------------------------------------------------------
# The score itself (any score matrix)
# --------------------------------------------------------------------------------------------------------------------


MAX_SUBSETS = 100_000
"""Upper bound on K (each subset is a full retrain; the masks alone take K·n bytes)."""
MAX_SEEDS = 1_000
"""Upper bound on R, the retrain seeds per subset."""


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def _check_alpha(alpha: Any) -> float:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float, np.floating, np.integer))
        or not 0 < float(alpha) < 1
    ):
        raise ValueError(
            f"alpha (the fraction of training points kept in each subset) must be in (0, 1), got {alpha!r}; e.g. 0.5"
        )
    return float(alpha)


def subset_size(n: int, alpha: float) -> int:
    """⌊α·n⌉, checked to leave at least one point in and one out."""
    size = int(round(_check_alpha(alpha) * n))
    if not 1 <= size <= n - 1:
        raise ValueError(
            f"alpha = {alpha} keeps {size} of {n} training points; each subset must keep at least one "
            "point and leave at least one out"
        )
    return size


def draw_subsets(n: int, n_subsets: int, alpha: float, seed: int = 0) -> np.ndarray:
    """(K, n) boolean masks, True = kept; subset k holds ⌊α·n⌉ points drawn from ``default_rng([seed, k])``."""
    n = _check_int("n", n, 2)
    n_subsets = _check_int("n_subsets (K)", n_subsets, 2, MAX_SUBSETS)
    size = subset_size(n, alpha)
    seed = _check_int("seed (of the subsets)", seed, 0, 2**32 - 1)
    masks = np.zeros((n_subsets, n), dtype=bool)
    for k in range(n_subsets):
        masks[k, np.random.default_rng([seed, k]).choice(n, size, replace=False)] = True
    return masks


def _real_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array; complex, boolean, string or object input is refused (never cast silently)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"{name} could not be read as an array ({str(exc)[:120]})") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} are complex ({arr.dtype}); pass real numbers (an imaginary part would be dropped)")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _index_array(name: str, value: Any, size: int | None = None) -> np.ndarray:
    """Integer indices (1-D); fractional, boolean or non-numeric indices are refused, never truncated."""
    arr = np.asarray(value)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    ):
        raise ValueError(
            f"{name} must be integer indices, got {arr.dtype} values such as "
            f"{np.ravel(arr)[:3].tolist()}; pass whole numbers (booleans and fractions are refused)"
        )
    arr = arr.astype(np.int64).reshape(-1)
    if size is not None and len(arr) and (arr.min() < 0 or arr.max() >= size):
        raise ValueError(f"{name} must be in [0, {size}), got values from {arr.min()} to {arr.max()}")
    return arr


def output_values(logits: np.ndarray, labels: np.ndarray, output: str = "loss") -> np.ndarray:
    """f_t from logits (..., T, C) and labels (T,): cross-entropy ``"loss"`` or ``"margin"`` −(z_y − max_{c≠y} z_c)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; choose one of {list(OUTPUTS)}")
    z = _real_array("logits", logits)
    if z.ndim < 2:
        raise ValueError(f"logits must be (..., T, C), got shape {z.shape}")
    y = _index_array("labels", labels, z.shape[-1])
    if len(y) != z.shape[-2]:
        raise ValueError(f"labels must hold one class per test point ({z.shape[-2]}), got {len(y)}")
    true = np.take_along_axis(z, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), axis=-1)[..., 0]
    if output == "loss":
        zmax = z.max(axis=-1, keepdims=True)
        return np.log(np.exp(z - zmax).sum(axis=-1)) + zmax[..., 0] - true
    other = z.copy()
    np.put_along_axis(other, np.broadcast_to(y[:, None], z.shape[:-1] + (1,)), -np.inf, axis=-1)
    return other.max(axis=-1) - true


def noise_ceiling(outputs: np.ndarray) -> dict[str, Any]:
    """Noise ceiling of retrained outputs (R, K, T) (see the module doc): ``seed_agreement`` = mean over test points
    of the mean pairwise Spearman over k between seeds, ``ceiling`` = mean over t of √(Spearman–Brown(ρ_t, R)).
    NaN with R < 2."""
    Y = np.asarray(outputs, dtype=np.float64)
    if Y.ndim != 3:
        raise ValueError(f"outputs must be (R, K, T), got shape {Y.shape}")
    R, K, T = Y.shape
    if R < 2:
        nan = float("nan")
        return {"seed_agreement": nan, "ceiling": nan, "per_test_ceiling": np.full(T, np.nan), "n_seeds": R}
    pairs = [rowwise_spearman(Y[a].T, Y[b].T) for a, b in itertools.combinations(range(R), 2)]
    rho = np.nanmean(np.stack(pairs), axis=0)  # (T,)
    rho_c = np.clip(rho, 0.0, 1.0)
    per_test = np.sqrt(R * rho_c / (1.0 + (R - 1) * rho_c))
    return {
        "seed_agreement": float(np.nanmean(rho)),
        "ceiling": float(np.nanmean(per_test)),
        "per_test_ceiling": per_test,
        "n_seeds": R,
    }


def linear_datamodeling_score(scores: Any, masks: Any, outputs: Any) -> dict[str, Any]:
    """LDS of any attribution ``scores`` (T, n) against retrained ``outputs`` (K, T) or (R, K, T) (averaged over R)
    for subsets ``masks`` (K, n) (True = kept). Returns ``lds`` (mean over t), ``per_test`` (T,), ``predicted`` and
    ``actual`` (K, T). Scores follow the removal convention (predicted increase of f_t when j is removed)."""
    S = np.asarray(scores)
    M = np.asarray(masks)
    if M.ndim != 2 or M.dtype != bool:
        raise ValueError(f"masks must be a (K, n) boolean array (True = kept), got {M.dtype} {M.shape}")
    K, n = M.shape
    if K < 2:
        raise ValueError(f"the LDS is a correlation over subsets and needs K >= 2 subsets, got {K}")
    if np.iscomplexobj(S):
        raise ValueError(f"scores are complex ({S.dtype}); pass real numbers (an imaginary part would be dropped)")
    Y = _real_array("retrained outputs", outputs)
    if Y.ndim == 3:
        Y = Y.mean(axis=0)
    if S.ndim != 2 or S.shape[1] != n:
        raise ValueError(
            f"scores must be a (n_test, n_train) = (T, {n}) matrix (one column per training point), got shape {S.shape}"
        )
    if Y.ndim != 2 or Y.shape != (K, S.shape[0]):
        raise ValueError(
            f"outputs must be (K, T) = ({K}, {S.shape[0]}) (or (R, K, T)) to match {K} subsets and "
            f"{S.shape[0]} score rows, got {np.shape(outputs)}"
        )
    if S.dtype == bool or not np.issubdtype(S.dtype, np.number) or not np.all(np.isfinite(S)):
        bad = int(np.size(S) - np.isfinite(S.astype(np.float64)).sum()) if np.issubdtype(S.dtype, np.number) else -1
        raise ValueError(
            f"scores must be finite numbers; found {bad if bad >= 0 else 'non-numeric'} NaN/inf entries "
            "(fix or drop those test points before scoring)"
        )
    if not np.all(np.isfinite(Y)):
        raise ValueError("retrained outputs hold NaN/inf (a retrain diverged); check the training settings")
    _check_correlation_defined(S.astype(np.float64), M, Y)
    S = S.astype(np.float64)
    predicted = (~M).astype(np.float64) @ S.T  # (K, T)
    per_test = rowwise_spearman(predicted.T, Y.T)
    return {"lds": float(np.mean(per_test)), "per_test": per_test, "predicted": predicted, "actual": Y}


def _rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:5])
    return f"[{shown}{', ...' if len(rows) > 5 else ''}] ({len(rows)} of them)" if len(rows) > 1 else f"[{shown}]"


def _check_correlation_defined(S: np.ndarray, M: np.ndarray, Y: np.ndarray) -> None:
    """Refuse input whose Spearman correlation over subsets is undefined (a constant side) or only rounding noise:
    masks that do not vary in what they remove, score rows that predict the same for every subset, retrained
    outputs that are the same for every subset."""
    removed = ~M
    if not removed.any():
        raise ValueError(
            "every mask keeps all training points (all True), so no subset removes anything and the "
            "LDS is undefined; draw subsets that leave points out (draw_subsets, alpha < 1)"
        )
    if (M == M[0]).all():
        raise ValueError(
            "all masks are identical, so the subsets do not vary and the LDS would only correlate "
            "rounding noise; draw K different subsets (draw_subsets)"
        )
    # predicted ĝ_t(S_k) = Σ_{j removed in k} S[t, j]: constant over k up to rounding means no correlation exists
    predicted = removed.astype(np.float64) @ S.T  # (K, T)
    scale = np.abs(S).sum(axis=1) * 1e-10 + np.finfo(np.float64).tiny
    flat = np.flatnonzero(np.ptp(predicted, axis=0) <= scale)
    if len(flat):
        raise ValueError(
            f"the scores of test row(s) {_rows(flat)} predict the same output for every subset "
            "(constant or zero scores, or masks removing the same points), so their LDS is undefined; "
            "check those score rows or drop those test points"
        )
    same = np.flatnonzero(np.ptp(Y, axis=0) <= 1e-12 * (np.abs(Y).max(axis=0) + 1e-300))
    if len(same):
        raise ValueError(
            f"the retrained outputs of test row(s) {_rows(same)} are the same for every subset, so "
            "their LDS is undefined; check the retraining (did it change the model?) or drop those test "
            "points"
        )


# --------------------------------------------------------------------------------------------------------------------
# Retraining on subsets, cached and resumable
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrainPlan:
    """K subsets of fraction α (``subsets_seed``), each retrained with R seeds. Defaults: K = 100, α = 0.5 (as
    dattri), R = 2 (the fewest that measure the noise ceiling; the LDS of the R-seed mean rises with R and the ceiling
    column says how far it can go)."""

    n_subsets: int = 100
    alpha: float = 0.5
    n_seeds: int = 2
    subsets_seed: int = 0

    def __post_init__(self) -> None:
        _check_int("n_subsets (K)", self.n_subsets, 2, MAX_SUBSETS)
        _check_alpha(self.alpha)
        _check_int("n_seeds (R)", self.n_seeds, 1, MAX_SEEDS)
        _check_int("subsets_seed", self.subsets_seed, 0, 2**32 - 1)


@dataclass
class RetrainedOutputs:
    """Test logits of every retrain: ``logits`` (R, K, n_test, C), the full model's ``full_logits`` (n_test, C),
    ``masks`` (K, n) and the test labels; ``info`` records the cache key, directory and timings."""

    plan: RetrainPlan
    masks: np.ndarray
    logits: np.ndarray
    full_logits: np.ndarray
    y_test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def outputs(self, test_indices: Any, output: str = "loss") -> np.ndarray:
        """(R, K, T) retrained outputs of the chosen test points."""
        idx = _index_array("test_indices", test_indices, len(self.y_test))
        return output_values(self.logits[:, :, idx], self.y_test[idx], output)


def _array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _training_recipe(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "training_config", None)
    if not isinstance(cfg, dict) or "arch" not in cfg:
        raise ValueError(
            "LDS retraining needs a model made by influence_core.train_model (it reads "
            "model.training_config to retrain with the same recipe)"
        )
    recipe = {k: cfg[k] for k in _TRAIN_KEYS if k in cfg}
    recipe.update(
        arch=cfg["arch"],
        seed=int(cfg.get("seed", 0)),
        weight_decay=float(cfg.get("weight_decay", getattr(model, "weight_decay", 0.0))),
    )
    if cfg["arch"] == "mlp" and "hidden" in cfg:
        recipe["hidden"] = [int(h) for h in cfg["hidden"]]
    from influence_core.models.training import TrainingConfig

    defaults = TrainingConfig()
    recipe.update({k: cfg[k] for k in _OPTIONAL_TRAIN_KEYS if k in cfg and cfg[k] != getattr(defaults, k)})
    return recipe


def cache_key(dataset: Dataset, recipe: dict[str, Any], alpha: float, subsets_seed: int) -> tuple[str, dict]:
    """(hex key, the JSON record it hashes)."""
    record = {
        "cache_version": CACHE_VERSION,
        "dataset": dataset.name,
        "data_sha256": _array_digest(dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test),
        "recipe": recipe,
        "alpha": float(alpha),
        "subsets_seed": int(subsets_seed),
        "torch": torch.__version__,
    }
    return content_key(record, digits=CACHE_KEY_DIGITS), record


def _retrain_task(
    dataset: Dataset, recipe: dict[str, Any], kept: np.ndarray, seed: int, threads: int = 1
) -> dict[str, Any]:
    """Retrain from scratch on the kept indices (weight decay wd·n/|S|) and return the test logits (n_test, C).
    ``threads``: torch intra-op threads for this retrain (<= 0: unchanged); see :func:`retrain_outputs`."""
    with torch_threads(threads):
        return _retrain(dataset, recipe, kept, seed)


def _retrain(dataset: Dataset, recipe: dict[str, Any], kept: np.ndarray, seed: int) -> dict[str, Any]:
    start = time.perf_counter()
    n = dataset.n_train
    reduced = dataclasses.replace(dataset, X_train=dataset.X_train[kept], y_train=dataset.y_train[kept])
    settings = {k: recipe[k] for k in _TRAIN_KEYS + _OPTIONAL_TRAIN_KEYS if k in recipe}
    if "hidden" in recipe:
        settings["hidden"] = tuple(recipe["hidden"])
    settings["weight_decay"] = recipe["weight_decay"] * n / len(kept)
    model = train_model(reduced, recipe["arch"], seed=seed, **settings)
    logits = predict_logits(model, dataset.X_test).astype(np.float64)
    return {
        "logits": logits,
        "grad_norm": float(model.training_report.get("grad_norm", np.nan)),
        "seconds": time.perf_counter() - start,
    }


def _save_atomic(path: Path, **arrays: Any) -> None:
    with atomic_path(path) as tmp:  # tmp + fsync + rename: a crash never leaves half a retrain under its name
        np.savez(tmp, **arrays)


def _load_retrain(path: Path, kept: np.ndarray, n_test: int) -> dict[str, Any] | None:
    """A cached retrain, or None if absent/unreadable/not this subset (then it is redone)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if not np.array_equal(f["kept"], kept) or f["logits"].shape[0] != n_test:
                return None
            return {"logits": f["logits"], "grad_norm": float(f["grad_norm"]), "seconds": float(f["seconds"])}
    except (OSError, ValueError, KeyError):
        return None


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _nanmax(a: np.ndarray) -> float:
    return float(np.nanmax(a)) if np.isfinite(a).any() else float("nan")


def retrain_outputs(
    model: nn.Module,
    dataset: Dataset,
    plan: RetrainPlan = RetrainPlan(),
    *,
    cache_dir: str | os.PathLike | None = None,
    executor: Any = None,
    threads: int = 1,
    progress: Progress | None = None,
    max_retrains: int | None = None,
) -> RetrainedOutputs:
    """Retrain ``model``'s recipe on the K subsets of ``plan`` with R seeds each and collect the test logits.

    ``cache_dir``: where finished retrains are kept (None = :func:`default_cache_dir`; ``False`` = no cache).
    ``executor``: None (sequential, this process), an :class:`~influence_core.influence.executors.Executor`, a
    ``distributed.Client`` or a scheduler address: retrains are independent tasks. ``progress(fraction, message)``
    is called after each finished (and saved) retrain; if it raises, the saved retrains stay and a rerun continues.
    ``threads``: torch threads per retrain (default 1: the models are small and the retrains independent, so the
    parallelism is across retrains, on the executor's workers, and intra-op threads of small models only add
    synchronisation; 0 = leave torch's setting).
    ``max_retrains``: run at most this many missing retrains (in order k = 0, 1, … with every seed of a subset
    before the next subset) and leave the rest NaN in ``logits`` (``info["missing"]`` counts them): a long run can be
    done in batches, e.g. one batch per hold of a shared lock; 0 only reads the cache. None = all.
    """
    if not isinstance(plan, RetrainPlan):
        raise TypeError(f"plan must be a RetrainPlan, got {type(plan).__name__}")
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 0 <= threads <= 1024:
        raise ValueError(
            f"threads must be an integer in [0, 1024] (torch threads per retrain; 0 = unchanged), got {threads!r}"
        )
    if cache_dir is not None and cache_dir is not False:
        check_output_dir(cache_dir, "cache_dir")  # before any retraining
    recipe = _training_recipe(model)
    n, n_test = dataset.n_train, dataset.n_test
    masks = draw_subsets(n, plan.n_subsets, plan.alpha, plan.subsets_seed)
    kept = [np.flatnonzero(mk) for mk in masks]
    seeds = [recipe["seed"] + r for r in range(plan.n_seeds)]
    key, record = cache_key(dataset, recipe, plan.alpha, plan.subsets_seed)
    directory = None
    if cache_dir is not False:
        directory = Path(default_cache_dir() if cache_dir is None else cache_dir) / key
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / "manifest.json"
        if not manifest.exists():
            with atomic_write(manifest) as fh:
                fh.write(json.dumps(record, indent=1, sort_keys=True))

    full_logits = predict_logits(model, dataset.X_test).astype(np.float64)
    n_classes = full_logits.shape[1]
    logits = np.full((plan.n_seeds, plan.n_subsets, n_test, n_classes), np.nan)
    grad_norms = np.full((plan.n_seeds, plan.n_subsets), np.nan)
    seconds = np.full((plan.n_seeds, plan.n_subsets), np.nan)
    todo = []
    for k, r in itertools.product(range(plan.n_subsets), range(plan.n_seeds)):
        found = None if directory is None else _load_retrain(directory / f"k{k:04d}_r{r:02d}.npz", kept[k], n_test)
        if found is None:
            todo.append((k, r))
        else:
            logits[r, k], grad_norms[r, k], seconds[r, k] = found["logits"], found["grad_norm"], found["seconds"]
    total, cached = plan.n_subsets * plan.n_seeds, plan.n_subsets * plan.n_seeds - len(todo)
    missing = 0
    if max_retrains is not None:
        _check_int("max_retrains", max_retrains, 0)
        missing = max(len(todo) - max_retrains, 0)
        todo = todo[:max_retrains]
    start = time.perf_counter()
    done = cached
    if progress:
        progress(done / total, f"LDS retrains: {cached} of {total} cached, {len(todo)} to run")
    if todo:
        own = executor is None or not isinstance(executor, Executor)
        ex = get_executor(executor)
        try:
            data = ex.scatter(dataset)
            rec = ex.scatter(recipe)
            pending = list(reversed(todo))
            in_flight: dict[Any, tuple[int, int]] = {}
            while pending or in_flight:
                while pending and len(in_flight) < ex.max_in_flight:
                    k, r = pending.pop()
                    in_flight[ex.submit(_retrain_task, data, rec, kept[k], seeds[r], threads)] = (k, r)
                fut = ex.wait_first(list(in_flight))
                k, r = in_flight.pop(fut)
                res = fut.result()
                ex.release(fut)
                if directory is not None:
                    _save_atomic(
                        directory / f"k{k:04d}_r{r:02d}.npz",
                        logits=res["logits"],
                        kept=kept[k],
                        grad_norm=res["grad_norm"],
                        seconds=res["seconds"],
                        seed=seeds[r],
                    )
                logits[r, k], grad_norms[r, k], seconds[r, k] = res["logits"], res["grad_norm"], res["seconds"]
                done += 1
                if progress:
                    progress(done / total, f"retrained subset {k} seed {seeds[r]} ({res['seconds']:.1f} s)")
        finally:
            if own:
                ex.close()
    info = {
        "cache_key": key,
        "cache_dir": None if directory is None else str(directory),
        "key_record": record,
        "cached": cached,
        "retrained": len(todo),
        "missing": missing,
        "wall_seconds": time.perf_counter() - start,
        "retrain_seconds_mean": _nanmean(seconds),
        "max_grad_norm": _nanmax(grad_norms),
        "retrain_seeds": seeds,
        "subset_size": int(masks[0].sum()),
        "recipe": recipe,
    }
    return RetrainedOutputs(plan, masks, logits, full_logits, np.asarray(dataset.y_test), info)


# --------------------------------------------------------------------------------------------------------------------
# One call: LDS of a score matrix with its ceiling
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class LDSResult:
    """``lds`` with ``per_test`` (T,), the noise ``ceiling`` and ``seed_agreement`` of the same retrains."""

    lds: float
    per_test: np.ndarray
    ceiling: float
    seed_agreement: float
    output: str
    n_subsets: int
    n_seeds: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "lds": self.lds,
            "ceiling": self.ceiling,
            "seed_agreement": self.seed_agreement,
            "output": self.output,
            "n_subsets": self.n_subsets,
            "n_seeds": self.n_seeds,
            "per_test": self.per_test.tolist(),
        }


def lds(scores: Any, retrained: RetrainedOutputs, test_indices: Any, output: str = "loss") -> LDSResult:
    """LDS of ``scores`` (T, n_train) for test points ``test_indices`` (T,) against ``retrained``, with the noise
    ceiling of those retrains (:func:`noise_ceiling`)."""
    idx = _index_array("test_indices", test_indices, len(retrained.y_test))
    S = np.asarray(scores)
    if S.ndim != 2 or S.shape[0] != len(idx):
        raise ValueError(f"scores must have one row per test point: expected ({len(idx)}, n_train), got {S.shape}")
    Y = retrained.outputs(idx, output)
    scored = linear_datamodeling_score(S, retrained.masks, Y)
    ceil = noise_ceiling(Y)
    return LDSResult(
        scored["lds"],
        scored["per_test"],
        ceil["ceiling"],
        ceil["seed_agreement"],
        output,
        retrained.plan.n_subsets,
        retrained.plan.n_seeds,
    )
