"""Hessian samplers: which m training points the Hessian (and so the iHVP) is estimated on.

This is the seam the project exists for. A sampler is a function registered under a name::

    fn(inputs: SamplerInputs, pool: np.ndarray, m: int, rng: np.random.Generator, **options)
        -> (indices, weights | None)

It picks ``m`` distinct members of ``pool`` (sorted, unique training indices) by looking only at what
:class:`SamplerInputs` holds for the training points (true labels, logits, penultimate features). ``weights`` is
None for an unweighted sample, or positive importance weights aligned with ``indices``; the Hessian on the sample
is then ``H_S = sum_i w_i H_i / sum_i w_i (+ wd I)`` (README "Conventions"). :func:`draw_sample` validates the request,
seeds ``rng = np.random.default_rng(seed)``, checks what the sampler returns, and packs it in a
:class:`HessianSample` that records everything needed to reproduce it.

The built-in rules (``random``, ``feature``, ``logit``, ``class_stratified``, ``logit_kmeans``, ``importance``,
``int_distance``) are
**this project's reconstruction** of the samplers in *Faithful and Fast Influence Function via Advanced Sampling*
(Koh, Lyu, Jang, Yang, 2024, arXiv 2510.26776); the paper's exact rules are not public. ``ridge_leverage`` goes
beyond the paper: points drawn by their ridge leverage under the damped Gauss-Newton matrix, with weights.

Add your own with the decorator::

    @register_sampler("my_rule")
    def my_rule(inputs, pool, m, rng, *, temperature=1.0):
        ...
        return chosen_indices, None
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import log_softmax as _log_softmax
from scipy.special import softmax as _softmax

__all__ = [
    "SamplerInputs",
    "HessianSample",
    "SamplerFn",
    "SAMPLERS",
    "register_sampler",
    "available_samplers",
    "sampler_needs",
    "sampler_description",
    "check_sampler_name",
    "check_sampler_options",
    "RENAMED_SAMPLERS",
    "draw_sample",
    "softmax",
    "log_softmax",
    "confidence",
    "margin",
    "curvature_proxy",
    "proportional_allocation",
    "logit_strata",
    "inclusion_probabilities",
    "MINIBATCH_KMEANS_ABOVE",
    "WEIGHTINGS",
    "int_distance_strata",
    "ridge_leverages",
]

MINIBATCH_KMEANS_ABOVE = 20_000
"""Pools (or per-class pools) larger than this are clustered with ``MiniBatchKMeans`` instead of ``KMeans``."""
WEIGHTINGS = ("cluster_size", "unweighted")
"""Weighting of the k-means samplers' representatives: by cluster size (estimates the pool mean) or none."""


# --------------------------------------------------------------------------------------------------------------------
# Inputs and result
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SamplerInputs:
    """What samplers may look at, for ALL n training points (row i = training index i).

    Attributes:
        labels: (n,) int64 true labels in [0, C).
        logits: (n, C) float model logits, C >= 2.
        features: (n, d) penultimate-layer features, or None when the model does not expose them.
    """

    labels: np.ndarray
    logits: np.ndarray
    features: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        logits = np.asarray(self.logits)
        if labels.ndim != 1:
            raise ValueError(f"labels must be a 1-D array of shape (n,); got shape {labels.shape}.")
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be integers (class ids); got dtype {labels.dtype}. Convert with labels.astype(np.int64)."
            )
        if logits.ndim != 2:
            raise ValueError(f"logits must be a 2-D array of shape (n, C); got shape {logits.shape}.")
        if not np.issubdtype(logits.dtype, np.number) or np.issubdtype(logits.dtype, np.complexfloating):
            raise ValueError(f"logits must be real numbers; got dtype {logits.dtype}.")
        n, n_classes = logits.shape
        if labels.shape[0] != n:
            raise ValueError(
                f"labels has {labels.shape[0]} rows but logits has {n}; both must describe the same "
                "training points (row i = training index i)."
            )
        if n == 0:
            raise ValueError("SamplerInputs needs at least one training point; got n = 0.")
        if n_classes < 2:
            raise ValueError(f"logits must have at least 2 classes (columns); got C = {n_classes}.")
        if not np.all(np.isfinite(logits)):
            bad = int(np.sum(~np.all(np.isfinite(logits), axis=1)))
            raise ValueError(
                f"logits contain NaN or inf in {bad} row(s); the model diverged or the inputs are "
                "corrupt. Retrain (e.g. a smaller learning rate) or clean the data."
            )
        labels = labels.astype(np.int64, copy=False)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"labels must lie in [0, {n_classes}) to match the {n_classes} logit columns; got "
                f"values in [{labels.min()}, {labels.max()}]."
            )
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "logits", logits.astype(np.float64, copy=False))
        if self.features is not None:
            features = np.asarray(self.features)
            if features.ndim != 2 or features.shape[0] != n:
                raise ValueError(
                    f"features must have shape (n, d) = ({n}, d) to match the logits; got shape {features.shape}."
                )
            if not np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.complexfloating):
                raise ValueError(f"features must be real numbers; got dtype {features.dtype}.")
            if not np.all(np.isfinite(features)):
                raise ValueError("features contain NaN or inf; recompute them from a model with finite weights.")
            object.__setattr__(self, "features", features.astype(np.float64, copy=False))

    @property
    def n(self) -> int:
        """Number of training points."""
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        """Number of classes C (logit columns)."""
        return int(self.logits.shape[1])


@dataclass(frozen=True, eq=False)
class HessianSample:
    """The training points the Hessian is estimated on, with everything needed to draw them again.

    Attributes:
        indices: (m,) int64 training indices, sorted ascending, unique.
        weights: (m,) float64 > 0 aligned with ``indices``, or None for uniform weights.
        sampler: registry name of the sampler.
        m: sample size.
        seed: seed of ``np.random.default_rng`` used to draw it.
        options: the sampler options actually used, defaults included.
    """

    indices: np.ndarray
    weights: np.ndarray | None
    sampler: str
    m: int
    seed: int
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        indices = np.array(self.indices, dtype=np.int64).reshape(-1)
        if indices.size != self.m:
            raise ValueError(f"HessianSample has {indices.size} indices but m = {self.m}.")
        if indices.size > 1 and np.any(np.diff(indices) <= 0):
            raise ValueError("HessianSample indices must be sorted ascending and unique.")
        indices.setflags(write=False)
        object.__setattr__(self, "indices", indices)
        if self.weights is not None:
            weights = np.array(self.weights, dtype=np.float64).reshape(-1)
            if weights.shape != indices.shape:
                raise ValueError(f"weights has shape {weights.shape}; it must align with indices {indices.shape}.")
            if not np.all(np.isfinite(weights) & (weights > 0)):
                raise ValueError("weights must be finite and > 0.")
            weights.setflags(write=False)
            object.__setattr__(self, "weights", weights)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The (m,) indices, so ``np.asarray(sample)`` works (read-only unless a copy is made). A weighted sample
        warns: the array has no weights; pass the sample itself (or ``hessian_weights=sample.weights``)."""
        if self.weights is not None:
            import warnings

            warnings.warn(
                f"np.asarray() of a weighted HessianSample ({self.sampler!r}) keeps only its indices and "
                "drops the importance weights; pass the HessianSample itself as hessian_indices (or "
                "sample.indices with hessian_weights=sample.weights)",
                UserWarning,
                stacklevel=2,
            )
        if dtype is None or np.dtype(dtype) == self.indices.dtype:
            return self.indices.copy() if copy else self.indices
        if copy is False:
            raise ValueError(f"cannot view int64 indices as {np.dtype(dtype)} without a copy.")
        return self.indices.astype(dtype)

    def weights_or_uniform(self) -> np.ndarray:
        """(m,) float64 weights, ones when the sample is unweighted."""
        return np.ones(len(self)) if self.weights is None else np.array(self.weights)

    def to_dict(self) -> dict:
        """JSON-serialisable record: ``{"sampler", "m", "seed", "options", "indices", "weights"}``."""
        return {
            "sampler": self.sampler,
            "m": int(self.m),
            "seed": int(self.seed),
            "options": {k: _to_builtin(v) for k, v in self.options.items()},
            "indices": self.indices.tolist(),
            "weights": None if self.weights is None else self.weights.tolist(),
        }

    @classmethod
    def from_dict(cls, record: dict) -> "HessianSample":
        """Inverse of :meth:`to_dict`."""
        return cls(
            indices=np.asarray(record["indices"], dtype=np.int64),
            weights=None if record.get("weights") is None else np.asarray(record["weights"]),
            sampler=str(record["sampler"]),
            m=int(record["m"]),
            seed=int(record["seed"]),
            options=dict(record.get("options", {})),
        )


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------------------
# Registry and the validated entry point
# --------------------------------------------------------------------------------------------------------------------

SamplerFn = Callable[..., "tuple[np.ndarray, np.ndarray | None]"]
SAMPLERS: dict[str, SamplerFn] = {}
SAMPLER_NEEDS: dict[str, frozenset[str]] = {}
"""What each sampler reads from :class:`SamplerInputs` besides labels: ``"logits"`` and/or ``"features"``."""
SAMPLER_DESCRIPTIONS: dict[str, str] = {}
"""One plain sentence per sampler (what it picks), shown wherever a sampler can be chosen."""
_FIXED_PARAMS = ("inputs", "pool", "m", "rng")


def register_sampler(
    name: str, *, needs: tuple[str, ...] = ("logits",), description: str | None = None
) -> Callable[[SamplerFn], SamplerFn]:
    """Decorator registering ``fn(inputs, pool, m, rng, **options) -> (indices, weights | None)`` under ``name``.
    ``needs``: what it reads besides labels (``"logits"``, ``"features"``), so callers compute only that.
    ``description``: one plain sentence saying what the sampler picks (for menus and legends); None takes the
    first line of ``fn``'s docstring (:func:`sampler_description`).

    Raises ValueError if the name is empty or already taken (remove ``SAMPLERS[name]`` first to replace one).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"sampler name must be a non-empty string; got {name!r}.")

    def decorator(fn: SamplerFn) -> SamplerFn:
        if name in SAMPLERS:
            raise ValueError(
                f"a sampler named {name!r} is already registered; choose another name or delete "
                f"SAMPLERS[{name!r}] first."
            )
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 4:
            raise ValueError(
                f"sampler {name!r} must accept (inputs, pool, m, rng, **options); its signature is "
                f"{inspect.signature(fn)}."
            )
        unknown = set(needs) - {"logits", "features"}
        if unknown:
            raise ValueError(f"sampler {name!r}: needs= may list 'logits' and 'features', got {sorted(unknown)}.")
        SAMPLERS[name] = fn
        SAMPLER_NEEDS[name] = frozenset(needs)
        doc = (inspect.getdoc(fn) or "").strip().split("\n\n")[0].replace("\n", " ")
        SAMPLER_DESCRIPTIONS[name] = (description or doc or f"the user-registered sampler {name!r}").strip()
        return fn

    return decorator


RENAMED_SAMPLERS = {"curvature": "importance"}
"""Old sampler names (results files written before a rename still carry them) -> current names."""


def check_sampler_name(name: str) -> None:
    """Raise a ValueError naming the known samplers (and the new name of a renamed one) if ``name`` is unknown."""
    if name in SAMPLERS:
        return
    hint = f" (the sampler {name!r} is now called {RENAMED_SAMPLERS[name]!r})" if name in RENAMED_SAMPLERS else ""
    raise ValueError(f"unknown sampler {name!r}{hint}; known samplers: {', '.join(available_samplers())}.")


def check_sampler_options(name: str, options: dict[str, Any]) -> None:
    """Raise a ValueError unless ``name`` is a registered sampler that takes ``options`` (checked before drawing)."""
    check_sampler_name(name)
    _bind_options(name, SAMPLERS[name], dict(options))


def sampler_needs(name: str) -> frozenset[str]:
    """What the sampler ``name`` reads besides labels (see :func:`register_sampler`)."""
    check_sampler_name(name)
    return SAMPLER_NEEDS.get(name, frozenset({"logits", "features"}))


def sampler_description(name: str) -> str:
    """The one-sentence description of the sampler ``name`` (given at registration, else its docstring's first
    paragraph)."""
    check_sampler_name(name)
    return SAMPLER_DESCRIPTIONS.get(name, f"the user-registered sampler {name!r}")


def available_samplers() -> list[str]:
    """Registered sampler names, in registration order (built-ins first)."""
    return list(SAMPLERS)


def _validate_pool(pool: np.ndarray | None, n: int) -> np.ndarray:
    if pool is None:
        return np.arange(n, dtype=np.int64)
    pool = np.asarray(pool)
    if pool.dtype == bool:
        if pool.shape != (n,):
            raise ValueError(f"a boolean pool mask must have shape ({n},) like the training set; got {pool.shape}.")
        pool = np.flatnonzero(pool)
    if pool.ndim != 1:
        raise ValueError(f"pool must be a 1-D array of training indices; got shape {pool.shape}.")
    if pool.size == 0:
        raise ValueError(
            "the pool is empty: there are no training points to sample the Hessian from. Pass a "
            "non-empty pool (e.g. the training indices outside the removed class)."
        )
    if not np.issubdtype(pool.dtype, np.integer):
        raise ValueError(f"pool must hold integer training indices (or be a boolean mask); got dtype {pool.dtype}.")
    pool = pool.astype(np.int64, copy=False)
    if pool.min() < 0 or pool.max() >= n:
        raise ValueError(
            f"pool indices must lie in [0, {n}) (the training set size); got values in [{pool.min()}, {pool.max()}]."
        )
    unique = np.unique(pool)
    if unique.size != pool.size:
        raise ValueError(
            f"pool contains {pool.size - unique.size} duplicated index/indices; each training point "
            "may appear once. Use np.unique(pool)."
        )
    return unique


def _bind_options(name: str, fn: SamplerFn, options: dict) -> dict:
    """Check ``options`` against the sampler's keyword parameters; return them with defaults filled in."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())[4:]
    accepts_any = any(p.kind == p.VAR_KEYWORD for p in params)
    known = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(options) - set(known))
    if unknown and not accepts_any:
        raise ValueError(
            f"sampler {name!r} does not take option(s) {unknown}; its options are {sorted(known) or 'none'}."
        )
    used = {k: p.default for k, p in known.items() if p.default is not inspect.Parameter.empty}
    missing = [k for k, p in known.items() if p.default is inspect.Parameter.empty and k not in options]
    if missing:
        raise ValueError(f"sampler {name!r} needs option(s) {missing}.")
    used.update(options)
    return used


def draw_sample(
    name: str, inputs: SamplerInputs, m: int, seed: int = 0, pool: np.ndarray | None = None, **options: Any
) -> HessianSample:
    """Draw ``m`` training indices from ``pool`` with the sampler registered as ``name``.

    Args:
        name: a key of :data:`SAMPLERS` (see :func:`available_samplers`).
        inputs: labels, logits and (optionally) features of all n training points.
        m: sample size, 1 <= m <= len(pool).
        seed: seed of ``np.random.default_rng``; the same seed, inputs, pool and options give the same sample.
        pool: (p,) training indices to choose from, or an (n,) boolean mask; None means all n points. Its order
            does not matter (it is sorted first).
        **options: sampler-specific options (validated against the sampler's signature and recorded).

    Returns:
        A :class:`HessianSample`. When ``m == len(pool)`` it is the whole pool with ``weights=None`` (every
        sampler agrees there, so no sampler is run).
    """
    check_sampler_name(name)
    if not isinstance(inputs, SamplerInputs):
        raise ValueError(f"inputs must be a SamplerInputs (labels, logits, features); got {type(inputs).__name__}.")
    if isinstance(m, bool) or not isinstance(m, numbers.Integral):
        raise ValueError(f"m (the sample size) must be an integer; got {m!r} of type {type(m).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    m, seed = int(m), int(seed)
    pool = _validate_pool(pool, inputs.n)
    if m < 1 or m > pool.size:
        raise ValueError(
            f"m = {m} is outside the valid range: the pool holds {pool.size} training points, so choose "
            f"1 <= m <= {pool.size} (a larger pool, or a smaller m)."
        )
    fn = SAMPLERS[name]
    used = _bind_options(name, fn, options)
    if m == pool.size:
        return HessianSample(indices=pool, weights=None, sampler=name, m=m, seed=seed, options=used)

    rng = np.random.default_rng(seed)
    out = fn(inputs, pool, m, rng, **options)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(f"sampler {name!r} must return (indices, weights or None); got {type(out).__name__}.")
    indices, weights = out
    indices = np.asarray(indices)
    if indices.ndim != 1 or indices.size != m or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"sampler {name!r} returned indices of shape {indices.shape} and dtype {indices.dtype}; "
            f"expected {m} integer indices."
        )
    order = np.argsort(indices, kind="stable")
    indices = indices[order].astype(np.int64)
    if np.any(np.diff(indices) == 0):
        raise ValueError(f"sampler {name!r} returned duplicated indices.")
    if not np.all(np.isin(indices, pool, assume_unique=True)):
        raise ValueError(f"sampler {name!r} returned indices outside the pool.")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (m,) or not np.all(np.isfinite(weights) & (weights > 0)):
            raise ValueError(f"sampler {name!r} returned invalid weights: they must be {m} finite values > 0.")
        weights = weights[order]
    return HessianSample(indices=indices, weights=weights, sampler=name, m=m, seed=seed, options=used)


# --------------------------------------------------------------------------------------------------------------------
# Logit helpers (numerically stable)
# --------------------------------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """(n, C) -> (n, C) row-wise ``p_ik = exp(z_ik - max_k z) / sum_k exp(z_ik - max_k z)``."""
    return _softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(n, C) -> (n, C) row-wise ``log p_ik = z_ik - logsumexp_k z_ik``."""
    return _log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def confidence(logits: np.ndarray) -> np.ndarray:
    """(n, C) -> (n,) top softmax probability ``max_k p_ik`` in [1/C, 1]."""
    return softmax(logits).max(axis=-1)


def margin(logits: np.ndarray) -> np.ndarray:
    """(n, C) -> (n,) logit margin ``z_(1) - z_(2)`` (top minus runner-up logit, = log(p_(1)/p_(2))) >= 0."""
    top2 = -np.partition(-np.asarray(logits, dtype=np.float64), 1, axis=-1)[..., :2]
    return top2[..., 0] - top2[..., 1]


def curvature_proxy(logits: np.ndarray) -> np.ndarray:
    """(n, C) -> (n,) ``c_i = 1 - sum_k p_ik^2`` in [0, 1 - 1/C].

    For softmax cross-entropy the Gauss-Newton Hessian of point i is ``J_i^T (diag(p_i) - p_i p_i^T) J_i``; the trace
    of the middle factor is ``sum_k p_k - sum_k p_k^2 = 1 - ||p_i||^2``, so c_i measures how much curvature the
    point contributes (0 for a saturated prediction, largest at uniform p).
    """
    p = softmax(logits)
    return np.clip(1.0 - np.sum(p * p, axis=-1), 0.0, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# Allocation and stratification helpers
# --------------------------------------------------------------------------------------------------------------------


def proportional_allocation(sizes: np.ndarray, m: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Split ``m`` over strata in proportion to their sizes, by largest remainder (Hamilton's method).

    Stratum s gets ``floor(m * N_s / N)`` and the ``m - sum floor`` strata with the largest remainders get one more,
    so every stratum gets the floor or the ceiling of its exact share and the counts sum to ``m``. Ties between equal
    remainders go to the lower stratum index, or are broken at random when ``rng`` is given. Exact integer arithmetic.

    Args:
        sizes: (S,) non-negative integer stratum sizes N_s, with N = sum N_s >= m.
        m: total to allocate, 0 <= m <= N.
        rng: optional generator for random tie-breaking.

    Returns:
        (S,) int64 counts with 0 <= counts[s] <= sizes[s] and sum == m.
    """
    sizes = np.asarray(sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"sizes must be a non-empty 1-D array of stratum sizes; got shape {sizes.shape}.")
    if not np.issubdtype(sizes.dtype, np.integer):
        if not np.all(np.isfinite(sizes)) or not np.all(sizes == np.round(sizes)):
            raise ValueError("sizes must be whole numbers (counts of points per stratum).")
    sizes = sizes.astype(np.int64)
    if np.any(sizes < 0):
        raise ValueError("sizes must be >= 0.")
    total = int(sizes.sum())
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0 or m > total:
        raise ValueError(f"m must be an integer in [0, {total}] (the total size of the strata); got {m!r}.")
    m = int(m)
    if m == 0:
        return np.zeros_like(sizes)
    scaled = sizes * m  # exact: stratum s's share is scaled[s] / total
    counts = scaled // total
    remainders = scaled % total
    left = m - int(counts.sum())
    if left:
        tiebreak = np.arange(sizes.size) if rng is None else rng.permutation(sizes.size)
        order = np.lexsort((tiebreak, -remainders))
        counts[order[:left]] += 1
    return counts


def _stratified_uniform(strata: np.ndarray, pool: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """Allocate m over the strata of the pool proportionally, then draw uniformly without replacement in each."""
    ids, inverse = np.unique(strata, return_inverse=True)
    sizes = np.bincount(inverse, minlength=ids.size)
    counts = proportional_allocation(sizes, m, rng)
    chosen = [rng.choice(pool[inverse == s], size=k, replace=False) for s, k in enumerate(counts) if k > 0]
    return np.concatenate(chosen)


def logit_strata(inputs: SamplerInputs, pool: np.ndarray, n_bins: int = 4, score: str = "confidence") -> np.ndarray:
    """Stratum id of each pool point for the ``logit`` sampler: predicted class x within-class quantile bin.

    The score is ``confidence`` (max softmax probability) or ``margin`` (top minus runner-up logit). Within each
    predicted class c with N_c pool points, the points are ranked by score (ties by training index) and rank r
    (0-based) goes to bin ``floor(r * n_bins / N_c)``, so the bins are equal-frequency quantile bins even when scores
    tie (e.g. saturated confidences). Returns (p,) int64 ids ``class * n_bins + bin``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}.")
    if score not in ("confidence", "margin"):
        raise ValueError(f"score must be 'confidence' or 'margin'; got {score!r}.")
    pool = np.asarray(pool, dtype=np.int64)
    logits = inputs.logits[pool]
    pred = logits.argmax(axis=1)
    values = confidence(logits) if score == "confidence" else margin(logits)
    from scipy.stats import rankdata  # on use: scipy.stats and .optimize cost seconds at the app's start

    bins = np.zeros(pool.size, dtype=np.int64)
    for c in np.unique(pred):
        members = np.flatnonzero(pred == c)
        rank = rankdata(values[members], method="ordinal") - 1
        bins[members] = rank * n_bins // members.size
    return pred.astype(np.int64) * int(n_bins) + bins


# --------------------------------------------------------------------------------------------------------------------
# k-means helper
# --------------------------------------------------------------------------------------------------------------------


def _kmeans_labels(X: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++ then Lloyd, n_init = 1, seeded from ``rng``) on the rows of X: (labels (N,), centroids)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    state = int(rng.integers(2**31 - 1))
    if X.shape[0] > MINIBATCH_KMEANS_ABOVE:
        km = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=state, batch_size=max(2048, 4 * k), max_iter=50)
    else:
        km = KMeans(n_clusters=k, n_init=1, random_state=state, max_iter=100)
    # One thread: sklearn's OpenMP k-means is many times slower when threads contend for busy cores (and at
    # k ~ m the per-iteration work is too small to gain from threading anyway).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit(X).labels_
    return labels, km.cluster_centers_


def _kmeans_pick(
    X: np.ndarray, members: np.ndarray, k: int, rng: np.random.Generator, pick: str
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster rows of X (one per member) into k clusters; return one member per non-empty cluster and its weight.

    ``pick="nearest"`` takes the member nearest its cluster centroid, ``"random"`` a uniform member of the cluster.
    If clusters collapse (duplicate points: fewer non-empty clusters than k) the remainder is filled with a uniform
    draw (from ``rng``) among the unpicked members, so exactly k distinct members are returned. The weight of a
    chosen member is the size of its cluster divided by the number of chosen members in it (so the weights sum to
    the number of members and each cluster counts as much as its size).
    """
    if k >= members.size:
        return members.copy(), np.ones(members.size)
    if k == 1 and pick == "random":
        return rng.choice(members, size=1), np.array([float(members.size)])
    labels, centres = _kmeans_labels(X, k, rng)
    if pick == "nearest":
        dist = np.sum((X - centres[labels]) ** 2, axis=1)
        order = np.lexsort((dist, labels))  # by cluster, then by distance to its centroid
    else:
        order = np.lexsort((rng.random(members.size), labels))
    first = np.ones(order.size, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    chosen_pos = order[first]
    if chosen_pos.size < k:
        rest = np.setdiff1d(np.arange(members.size), chosen_pos, assume_unique=True)
        chosen_pos = np.concatenate([chosen_pos, rng.choice(rest, size=k - chosen_pos.size, replace=False)])
    sizes = np.bincount(labels, minlength=k)
    picked = np.bincount(labels[chosen_pos], minlength=k)
    weights = sizes[labels[chosen_pos]] / picked[labels[chosen_pos]]
    return members[chosen_pos], weights.astype(np.float64)


def _check_pick(pick: str) -> None:
    if pick not in ("nearest", "random"):
        raise ValueError(f"pick must be 'nearest' or 'random'; got {pick!r}.")


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}; got {weighting!r}.")


def _cluster_sample(
    X: np.ndarray,
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    pick: str,
    stratify_by_class: bool,
    weighting: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """k-means with k = m on rows X (aligned with pool), optionally per true class with proportional k.

    Returns the representatives and, for ``weighting="cluster_size"``, their cluster sizes normalised to mean 1
    (so ``sum_i w_i H_i / sum_i w_i`` estimates the pool's mean curvature); ``"unweighted"`` returns None (the old
    rule: a cluster of 3 points counts as much as one of 300)."""
    if not stratify_by_class:
        chosen, weights = _kmeans_pick(X, pool, m, rng, pick)
    else:
        classes, inverse = np.unique(inputs.labels[pool], return_inverse=True)
        counts = proportional_allocation(np.bincount(inverse, minlength=classes.size), m, rng)
        parts = [
            _kmeans_pick(X[inverse == s], pool[inverse == s], int(k), rng, pick) for s, k in enumerate(counts) if k > 0
        ]
        chosen = np.concatenate([c for c, _ in parts])
        weights = np.concatenate([w for _, w in parts])
    if weighting == "unweighted":
        return chosen, None
    return chosen, weights / weights.mean()


# --------------------------------------------------------------------------------------------------------------------
# Built-in samplers
# --------------------------------------------------------------------------------------------------------------------


@register_sampler(
    "random", needs=(), description="Every training point equally likely (uniform, without replacement): the baseline."
)
def random_sampler(inputs: SamplerInputs, pool: np.ndarray, m: int, rng: np.random.Generator):
    """Uniform without replacement: every m-subset of the pool is equally likely (the paper's baseline)."""
    return rng.choice(pool, size=m, replace=False), None


@register_sampler(
    "feature",
    needs=("features",),
    description=(
        "Groups the points by the model's penultimate-layer features into m clusters "
        "(k-means) and takes one point per cluster, weighted by the cluster's size."
    ),
)
def feature_sampler(
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    *,
    pick: str = "random",
    stratify_by_class: bool = False,
    weighting: str = "cluster_size",
):
    """Feature-based: k-means (k = m) on L2-normalised penultimate features of the pool, one point per cluster,
    weighted by its cluster's size.

    Rule (this project's reconstruction of Koh et al. 2024, arXiv 2510.26776; the paper's exact rule is not
    public): x_i = f_i / ||f_i||, k-means++ then Lloyd (``KMeans``, n_init = 1; ``MiniBatchKMeans`` above
    :data:`MINIBATCH_KMEANS_ABOVE` points) seeded from ``rng``; from each cluster take the point nearest its centroid
    (``pick="nearest"``) or a uniform member (``pick="random"``). With ``stratify_by_class`` m is first split over
    the true classes by :func:`proportional_allocation` and k-means runs within each class. Collapsed clusters
    (duplicate features) are filled with uniform draws from the unpicked points. ``weighting="cluster_size"``
    (default) weights each representative by its cluster's size N_k, so the weighted sample mean
    ``sum_k N_k H_(k) / N`` estimates the pool's mean curvature; ``"unweighted"`` is the earlier rule (equal
    weights, a biased estimate: small clusters count as much as large ones).
    """
    _check_pick(pick)
    _check_weighting(weighting)
    if inputs.features is None:
        raise ValueError(
            "the 'feature' sampler needs penultimate-layer features, but SamplerInputs.features is None. "
            "Pass features=model.features(X_train), or choose the 'logit' sampler, which needs only "
            "logits."
        )
    F = inputs.features[pool]
    X = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)
    return _cluster_sample(X, inputs, pool, m, rng, pick, bool(stratify_by_class), weighting)


@register_sampler(
    "logit",
    description=(
        "Splits the points by predicted class and confidence and draws from every group in proportion to its size."
    ),
)
def logit_sampler(
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    *,
    score: str = "confidence",
    n_bins: int = 4,
):
    """Logit-based: stratified by predicted class x quantile bin of confidence, proportional allocation.

    Rule (this project's reconstruction of Koh et al. 2024, arXiv 2510.26776; the paper's exact rule is not
    public): the strata are :func:`logit_strata` (argmax logit x within-class equal-frequency bin of the
    ``score``, ``"confidence"`` = max softmax probability or ``"margin"`` = top-two logit gap); m is split across
    strata by :func:`proportional_allocation` (each stratum gets the floor or ceiling of ``m N_s / N``), then points
    are drawn uniformly without replacement within each stratum. The sample thus reproduces the pool's joint
    distribution of predicted class and confidence.
    """
    strata = logit_strata(inputs, pool, n_bins=n_bins, score=score)
    return _stratified_uniform(strata, pool, m, rng), None


@register_sampler(
    "class_stratified", description="Draws from every true class in proportion to its size (uniform within a class)."
)
def class_stratified_sampler(inputs: SamplerInputs, pool: np.ndarray, m: int, rng: np.random.Generator):
    """Stratified by true label: :func:`proportional_allocation` over classes, uniform within each class."""
    return _stratified_uniform(inputs.labels[pool], pool, m, rng), None


@register_sampler(
    "logit_kmeans",
    description=(
        "Clusters the model's logits into m groups (k-means) and takes one point per group, "
        "weighted by the group's size."
    ),
)
def logit_kmeans_sampler(
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    *,
    space: str = "centred",
    pick: str = "random",
    stratify_by_class: bool = False,
    weighting: str = "cluster_size",
):
    """k-means (k = m) on logit vectors, one point per cluster weighted by its cluster's size (as ``feature``, but
    needs only logits; ``weighting="unweighted"`` is the earlier equal-weight rule).

    ``space="centred"`` clusters ``z_i - mean_k z_ik`` (logits with the softmax-invariant shift removed),
    ``space="log_softmax"`` clusters ``log p_i``. No L2 normalisation: the logit scale carries the confidence.
    Part of this project's reconstruction of Koh et al. 2024 (arXiv 2510.26776), measured beside their samplers.
    """
    _check_pick(pick)
    _check_weighting(weighting)
    logits = inputs.logits[pool]
    if space == "centred":
        X = logits - logits.mean(axis=1, keepdims=True)
    elif space == "log_softmax":
        X = log_softmax(logits)
    else:
        raise ValueError(f"space must be 'centred' or 'log_softmax'; got {space!r}.")
    return _cluster_sample(X, inputs, pool, m, rng, pick, bool(stratify_by_class), weighting)


def inclusion_probabilities(q: np.ndarray, m: int) -> np.ndarray:
    """Approximate inclusion probabilities of successive sampling (draw m without replacement, each draw ∝ q).

    Uses Rosén's approximation for exponential order sampling, ``pi_i = 1 - exp(-t q_i)`` with t solving
    ``sum_i pi_i = m``; for m << N this is ``pi_i ≈ m q_i``, and it stays sensible (pi_i -> 1) as m -> N.

    Args:
        q: (N,) positive draw probabilities summing to 1.
        m: number of draws, 1 <= m < N.
    Returns:
        (N,) inclusion probabilities in (0, 1] summing to m.
    """
    q = np.asarray(q, dtype=np.float64)
    if m >= q.size:
        return np.ones_like(q)
    f = lambda t: float(np.sum(-np.expm1(-t * q)) - m)  # noqa: E731
    hi = 1.0
    while f(hi) < 0:
        hi *= 2.0
    from scipy.optimize import brentq

    t = brentq(f, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return -np.expm1(-t * q)


@register_sampler(
    "importance",
    description=(
        "Favours points the model is unsure about (high curvature 1 − Σp²) and reweights them "
        "so the Hessian estimate still averages over the whole pool."
    ),
)
def importance_sampler(
    inputs: SamplerInputs, pool: np.ndarray, m: int, rng: np.random.Generator, *, floor: float = 0.1
):
    """Importance sampling by the Gauss-Newton curvature proxy ``c_i = 1 - sum_k p_ik^2``, with weights.

    Rule (measured beside this project's reconstruction of Koh et al. 2024, arXiv 2510.26776): draw probabilities
    ``q_i = (1 - floor) c_i / sum_j c_j + floor / N`` over the N pool points (the uniform floor gives every point a
    chance; all-zero curvature falls back to uniform), m draws without replacement each ∝ q (implemented as
    exponential order sampling: keep the m smallest ``E_i / q_i``, E_i ~ Exp(1)). Weights are
    ``w_i = 1 / pi_i`` normalised to mean 1, with pi_i the inclusion probabilities from
    :func:`inclusion_probabilities`.

    Approximation: ``sum_i w_i H_i / sum_i w_i`` is the self-normalised (Hajek) importance-sampling estimate of the
    pool-mean Hessian: consistent, slightly biased for small m, and pi_i is itself Rosén's approximation.
    """
    if not (isinstance(floor, numbers.Real) and 0.0 < float(floor) <= 1.0):
        raise ValueError(f"floor must be in (0, 1] (the uniform share of the draw probabilities); got {floor!r}.")
    c = curvature_proxy(inputs.logits[pool])
    total = c.sum()
    share = c / total if total > 0 else np.full(pool.size, 1.0 / pool.size)
    q = (1.0 - floor) * share + floor / pool.size
    keys = rng.exponential(size=pool.size) / q
    chosen = np.argpartition(keys, m - 1)[:m]
    weights = 1.0 / inclusion_probabilities(q, m)[chosen]
    return pool[chosen], weights / weights.mean()


def default_int_distance_clusters(m: int) -> int:
    """Default K of ``int_distance``: ``max(2, round(sqrt(m)))`` (capped at m), so K clusters × ~sqrt(m) points
    each; chosen by the measurement in docs/FAITHFULNESS.md (variance of the weighted mean curvature proxy)."""
    return int(min(m, max(2, round(np.sqrt(m)))))


def int_distance_strata(
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    *,
    n_clusters: int | None = None,
    n_bins: int = 3,
) -> np.ndarray:
    """Stratum id (p,) of each pool point for ``int_distance``: k-means cluster × distance-to-centroid bin.

    x_i = f_i / ||f_i|| (penultimate features); K = ``n_clusters`` (None: :func:`default_int_distance_clusters`),
    capped at m and at the pool size; within cluster k (N_k points) the points are ranked by ||x_i − μ_k||
    (ties by pool order) and rank r goes to bin ``floor(r · B / N_k)``, with B = min(n_bins, max(1, m // K)) so
    that there are at most m strata. Ids are ``cluster · B + bin``.
    """
    if inputs.features is None:
        raise ValueError(
            "the 'int_distance' sampler needs penultimate-layer features, but SamplerInputs.features "
            "is None. Pass features=model.features(X_train), or choose the 'logit' sampler, which "
            "needs only logits."
        )
    if n_clusters is not None and (
        isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1
    ):
        raise ValueError(f"n_clusters must be an integer >= 1 or None (default sqrt(m)); got {n_clusters!r}.")
    if isinstance(n_bins, bool) or not isinstance(n_bins, numbers.Integral) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; got {n_bins!r}.")
    pool = np.asarray(pool, dtype=np.int64)
    k = default_int_distance_clusters(m) if n_clusters is None else int(n_clusters)
    k = int(min(k, m, pool.size))
    bins_used = int(min(n_bins, max(1, m // k)))
    F = inputs.features[pool]
    X = F / np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-12)
    if k == 1:
        labels, centres = np.zeros(pool.size, dtype=np.int64), X.mean(axis=0, keepdims=True)
    else:
        labels, centres = _kmeans_labels(X, k, rng)
    dist = np.linalg.norm(X - centres[labels], axis=1)
    from scipy.stats import rankdata

    bins = np.zeros(pool.size, dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank = rankdata(dist[members], method="ordinal") - 1
        bins[members] = rank * bins_used // members.size
    return labels.astype(np.int64) * bins_used + bins


@register_sampler(
    "int_distance",
    needs=("features",),
    description=(
        "Clusters the penultimate features into about √m groups and draws several points in "
        "each, from the centre to the edge, weighted by stratum size."
    ),
)
def int_distance_sampler(
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    *,
    n_clusters: int | None = None,
    n_bins: int = 3,
):
    """Clusters in feature space, several points drawn inside each, stratified by distance to the centroid.

    This project's reconstruction of the ``int_distance`` sampler drawn in Figure 1 of Koh et al. 2024 (arXiv
    2510.26776; the figure shows clusters in feature space with several points drawn inside each; the exact rule is
    not public). Strata: :func:`int_distance_strata` (k-means with K clusters on the L2-normalised penultimate
    features × quantile bins of the distance to the centroid). Allocation: one point per non-empty stratum, the
    other m − S split in proportion to the strata sizes (minus the one) by largest remainder
    (:func:`proportional_allocation`); then a uniform draw without replacement inside each stratum. Weights
    ``N_s / m_s`` (normalised to mean 1), so ``sum_i w_i H_i / sum_i w_i`` is the stratified estimate of the pool's
    mean curvature: unbiased given the strata, since every stratum is sampled.
    """
    strata = int_distance_strata(inputs, pool, m, rng, n_clusters=n_clusters, n_bins=n_bins)
    ids, inverse = np.unique(strata, return_inverse=True)
    sizes = np.bincount(inverse, minlength=ids.size)
    if ids.size > m:  # only with a user n_clusters > m is impossible (capped); kept as a guard
        raise ValueError(f"int_distance made {ids.size} strata for m = {m}; lower n_clusters or n_bins.")
    counts = 1 + proportional_allocation(sizes - 1, m - ids.size, rng)
    chosen, weights = [], []
    for s, k in enumerate(counts):
        members = pool[inverse == s]
        chosen.append(rng.choice(members, size=int(k), replace=False))
        weights.append(np.full(int(k), sizes[s] / k))
    w = np.concatenate(weights)
    return np.concatenate(chosen), w / w.mean()


def ridge_leverages(
    inputs: SamplerInputs,
    pool: np.ndarray,
    ridge: float = 0.01,
    sketch_dim: int = 256,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """(N,) ridge leverages of the pool's points under the damped Gauss-Newton matrix of the last layer.

    A point's logits are z_i = W a_i with a_i = [f_i, 1] (penultimate features and the bias input), so its
    Jacobian with respect to W is I_C ⊗ a_iᵀ and its Gauss-Newton term is A_i ⊗ a_i a_iᵀ, A_i = diag(p_i) − p_i p_iᵀ.
    With G = (1/N) Σ_j A_j ⊗ a_j a_jᵀ over the pool (a (C·(d+1))² matrix) and λ = ``ridge`` (the wd + δ of the
    solve), τ_i = (1/N) tr((A_i ⊗ a_i a_iᵀ)(G + λI)⁻¹), and Σ_i τ_i is the effective dimension. Exact for a linear
    model (the last layer is the whole model); for a deeper one it is the leverage under the last layer's block,
    a lower bound of the full-parameter leverage (adding parameters can only raise a ridge leverage). When
    d + 1 > ``sketch_dim`` the a_i are first multiplied by a Gaussian sketch (d+1, sketch_dim)/√sketch_dim drawn
    from ``rng`` (a random projection of the per-point Jacobians), so the cost stays N·(C·sketch_dim)².
    """
    if inputs.features is None:
        raise ValueError(
            "the 'ridge_leverage' sampler needs penultimate-layer features, but SamplerInputs.features is "
            "None. Pass features=model.features(X_train), or choose the 'importance' sampler, which "
            "needs only logits."
        )
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real) or not np.isfinite(ridge) or ridge <= 0:
        raise ValueError(
            f"ridge must be a finite number > 0 (the weight decay + damping of the solve, e.g. 0.011); got {ridge!r}."
        )
    if isinstance(sketch_dim, bool) or not isinstance(sketch_dim, numbers.Integral) or sketch_dim < 1:
        raise ValueError(f"sketch_dim must be an integer >= 1; got {sketch_dim!r}.")
    pool = np.asarray(pool, dtype=np.int64)
    N = pool.size
    from scipy.linalg import cho_solve, solve_triangular
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these (C·e)² problems are small, and a spinning thread pool on a busy machine costs 3x
    with threadpool_limits(limits=1):
        a = np.concatenate([inputs.features[pool], np.ones((N, 1))], axis=1)  # (N, e)
        if a.shape[1] > sketch_dim:
            gen = rng if rng is not None else np.random.default_rng(0)
            a = a @ (gen.standard_normal((a.shape[1], int(sketch_dim))) / np.sqrt(sketch_dim))
        P = softmax(inputs.logits[pool])  # (N, C)
        C, e = P.shape[1], a.shape[1]
        B = (P[:, :, None] * a[:, None, :]).reshape(N, C * e)  # rows p_i ⊗ a_i
        G = -(B.T @ B)
        for c in range(C):  # + blockdiag Σ p_ic a aᵀ
            G[c * e : (c + 1) * e, c * e : (c + 1) * e] += (a * P[:, c : c + 1]).T @ a
        G /= N
        G[np.diag_indices_from(G)] += float(ridge)
        L = np.linalg.cholesky(0.5 * (G + G.T))
        cross = np.sum(solve_triangular(L, B.T, lower=True) ** 2, axis=0)  # b_iᵀ (G+λ)⁻¹ b_i
        K_inv = cho_solve((L, True), np.eye(C * e))
        diag = np.zeros(N)
        for c in range(C):
            block = K_inv[c * e : (c + 1) * e, c * e : (c + 1) * e]
            diag += P[:, c] * np.einsum("ie,ef,if->i", a, block, a)
    return np.clip(diag - cross, 0.0, None) / N


@register_sampler("ridge_leverage", needs=("logits", "features"))
def ridge_leverage_sampler(
    inputs: SamplerInputs,
    pool: np.ndarray,
    m: int,
    rng: np.random.Generator,
    *,
    ridge: float = 0.011,
    floor: float = 0.1,
    sketch_dim: int = 256,
):
    """Importance sampling by ridge leverage under the damped last-layer Gauss-Newton matrix, with weights.

    Rule (beyond the paper; the principled form of ``importance``): τ_i from :func:`ridge_leverages` with
    λ = ``ridge`` (the solve's wd + δ), draw probabilities ``q_i = (1 - floor) τ_i / Σ_j τ_j + floor / N`` (a
    defensive uniform share so that no point's weight explodes), m draws without replacement each ∝ q
    (exponential order sampling), weights ``w_i = 1 / pi_i`` normalised to mean 1 with pi_i from
    :func:`inclusion_probabilities` (≈ m q_i for m << N): the same self-normalised estimate of the pool-mean
    curvature as ``importance``, with points drawn by how much of the damped curvature they alone carry.
    """
    if not (isinstance(floor, numbers.Real) and 0.0 < float(floor) <= 1.0):
        raise ValueError(f"floor must be in (0, 1] (the uniform share of the draw probabilities); got {floor!r}.")
    tau = ridge_leverages(inputs, pool, ridge=ridge, sketch_dim=sketch_dim, rng=rng)
    total = tau.sum()
    share = tau / total if total > 0 else np.full(pool.size, 1.0 / pool.size)
    q = (1.0 - floor) * share + floor / pool.size
    keys = rng.exponential(size=pool.size) / q
    chosen = np.argpartition(keys, m - 1)[:m]
    weights = 1.0 / inclusion_probabilities(q, m)[chosen]
    return pool[chosen], weights / weights.mean()
