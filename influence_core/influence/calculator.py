"""Influence of training points on test points, with the Hessian estimated on any index subset.

Convention (removal): for a model trained on n points with objective (1/n)Σℓ_i + (wd/2)||θ||²,

    score[t, j] = (1/n) · ∇ℓ(z_t)ᵀ (H_S + δI)⁻¹ ∇ℓ(z_j)

is the predicted *increase* of test point t's loss when training point j is removed (θ_{-j} − θ ≈ (1/n)H⁻¹∇ℓ_j).
Positive = helpful (removing j hurts t), negative = harmful. Scores are (n_test, n_train) numpy arrays.

Lifecycle (fit, then score): :class:`InfluenceCalculator` owns the objective; ``fit`` fixes the Hessian sample
(indices, optional weights) and the settings of an :class:`~influence_core.config.InfluenceConfig` (curvature mode,
solver, damping); ``scores`` solves s_t = H⁻¹∇ℓ_t for the
test points (k iHVPs) and then forms ∇ℓ_jᵀ s_t for all training points with one forward-mode pass per chunk of
training points (``Objective.grad_dot``; for many test points on a convolutional model, the chunk's per-sample
gradients instead), so a query costs about one forward+backward pass over the training set and the (n, p) per-sample
gradients are never stored.

Exact solves: with ``curvature="gauss_newton"`` and r = m(C−1) < p (m Hessian points, C classes), ``fit`` uses the
low-rank structure G_S + δI = (wd+δ)·I + U_SᵀU_S (:class:`~influence_core.solvers.base.LowRankInverse`): one Cholesky of
an r×r matrix at fit, and per query one forward-mode and one backward pass over the m sample points plus an r×r
triangular solve, instead of forming and LU-factorising the p×p matrix (which stays the path when r >= p, or for
the Hessian). It needs wd + δ > 0 and r·p + r² numbers (<= ``LOW_RANK_MAX_BYTES``) while fitting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from influence_core.checks import check_real
from influence_core.config import InfluenceConfig
from influence_core.curvature.objective import Objective, as_index_array
from influence_core.data.datasets import Dataset
from influence_core.data.sources import as_source
from influence_core.models.task import Task, default_output, replica, resolve_weight_decay
from influence_core.progress import Progress
from influence_core.solvers.base import SolveResult
from influence_core.solvers.registry import FittedInverse, IterativeFit, fit_inverse

__all__ = ["InfluenceCalculator", "InfluenceConfig", "influence_scores", "top_influences", "NotFittedError"]


SCORE_MEMORY_BYTES = 256 * 1024**2  # tangent activations of one scoring block when the train chunk is automatic
MAX_SCORE_CHUNK = 16_384


class NotFittedError(RuntimeError):
    """``scores``/``ihvp`` called before ``fit``."""


class InfluenceCalculator:
    """Influence functions for a trained classifier on its training data (X_train, y_train).

    ``X_train``/``y_train``: arrays or tensors, or a data source, map-style ``torch.utils.data.Dataset`` or
    ``DataLoader`` as ``X_train`` with ``y_train=None`` (:mod:`influence_core.data.sources`; read chunk by chunk).
    ``weight_decay`` defaults to ``model.weight_decay`` (set by :func:`influence_core.train_model`); a model that
    records none gets 0 with a :class:`~influence_core.models.task.WeightDecayWarning`: it must be the wd of the
    objective
    the model was trained on. ``task`` (or the shortcuts ``output_fn``, ``loss_fn``, ``measurement``): how logits,
    the training loss and the query measurement are obtained (:class:`~influence_core.models.task.Task`; default softmax
    cross-entropy, test loss). ``params``: the parameters influence is computed over (None = all with
    ``requires_grad``; names, modules or ``"last_layer"``); the model itself is never modified.
    Memory knobs (none changes the results beyond floating-point rounding): ``chunk_size`` here, the samples per
    vectorised chunk of per-sample gradients and HVPs (sampler inputs, fitting); the scoring grid's two block
    sizes are arguments of :meth:`scores` (``test_chunk_size``, ``train_chunk_size``).
    """

    def __init__(
        self,
        model: nn.Module,
        X_train: Any,
        y_train: Any = None,
        *,
        weight_decay: float | None = None,
        chunk_size: int = 256,
        task: Task | None = None,
        params: Any = None,
        output_fn: Callable[[Any], torch.Tensor] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        measurement: Any = None,
    ):
        task = make_task(task, output_fn, loss_fn, measurement)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        weight_decay = resolve_weight_decay(model, weight_decay)
        self.objective = Objective(model, X_train, y_train, weight_decay, chunk_size, task=task, params=params)
        self._activations_per_point: int | None = None
        self.config: InfluenceConfig | None = None  # the settings of the last fit
        self.hessian_indices: np.ndarray | None = None  # the sample it used (None = all n)
        self.hessian_weights: np.ndarray | None = None
        self.inverse: FittedInverse | None = None
        self.last_solve: SolveResult | None = None
        self.last_scoring: Any = None  # a scoring.ScoringReport after scores()
        self.fit_seconds = 0.0

    @property
    def n(self) -> int:
        return self.objective.n

    def fit(
        self,
        hessian_indices: Any | None = None,
        hessian_weights: Any | None = None,
        *,
        config: InfluenceConfig | None = None,
        solver: str | None = None,
        damping: float | None = None,
        curvature: str | None = None,
        **solver_options: Any,
    ) -> "InfluenceCalculator":
        """Fix the Hessian sample and the solver. For ``exact``, H_S is formed and factorised here once (low-rank
        Woodbury for Gauss-Newton when m(C−1) < p, see the module doc; ``fit_info["inverse"]`` says which).
        For ``lissa`` without a ``scale``, λ_max is found by power iteration at the first solve and kept.

        ``config``: the :class:`~influence_core.config.InfluenceConfig` (None = the defaults); ``solver``,
        ``damping``, ``curvature`` and ``**solver_options`` are shortcuts that override its fields.
        ``hessian_indices`` may be an index array or a :class:`~influence_core.sampling.samplers.HessianSample` (its
        weights are used unless ``hessian_weights`` is given); None = the sample the config describes (its ``m``
        points drawn by its ``sampler``; the whole training set when ``m`` is None).
        """
        if damping is not None:
            damping = check_real("damping", damping, 0)
        config = (config if config is not None else InfluenceConfig()).with_overrides(
            solver=solver, damping=damping, curvature=curvature, **solver_options
        )
        if hessian_indices is None and not config.full:
            hessian_indices = self.draw_sample(config)
        idx, w = hessian_arrays(hessian_indices, hessian_weights)
        idx = None if idx is None else as_index_array(idx, self.n, "hessian_indices")
        start = time.perf_counter()
        self.inverse = None
        self.config = None
        inverse = fit_inverse(self.objective, idx, w, **config.fit_kwargs())
        self.inverse, self.config = inverse, config
        self.hessian_indices, self.hessian_weights = idx, w
        self.fit_seconds = time.perf_counter() - start
        return self

    def draw_sample(self, config: InfluenceConfig) -> Any:
        """The Hessian sample ``config`` describes: ``config.m`` training points drawn by ``config.sampler`` with
        ``config.seed`` (a :class:`~influence_core.sampling.samplers.HessianSample`)."""
        from influence_core.sampling.subsets import sample_hessian_subset

        output = self.objective.task.output
        return sample_hessian_subset(
            self.objective.model,
            self.objective.source,
            config.sampler,
            config.m,
            seed=config.seed,
            output_fn=None if output is default_output else output,
            **config.sampler_options,
        )

    def use_fitted(self, inverse: FittedInverse) -> "InfluenceCalculator":
        """Use an inverse fitted elsewhere on this calculator's model and data instead of fitting: one from
        :func:`~influence_core.influence.across_samples.fit_across_samples`, or one loaded from disk by
        :func:`~influence_core.solvers.fitted_io.inverse_from_arrays`. Its objective must be this calculator's."""
        if inverse.objective is not self.objective:
            raise ValueError(
                "the fitted inverse belongs to another objective (model/data); load or fit it on calc.objective"
            )
        self.config = InfluenceConfig(
            solver=inverse.solver,
            damping=float(inverse.damping),
            curvature=inverse.curvature,
            solver_options=dict(inverse.options),
        )
        self.hessian_indices, self.hessian_weights = inverse.indices, inverse.weights
        self.inverse, self.fit_seconds = inverse, 0.0
        return self

    def fit_record(self) -> dict[str, Any]:
        """What the fit used, as JSON: the Hessian sample's indices and weights (None = all n, uniform), the solver,
        the damping, the curvature and the solver's options (the problem a resumable score file belongs to)."""
        config = self._require_fit()
        idx, w = self.hessian_indices, self.hessian_weights
        return {
            "hessian_indices": None if idx is None else [int(i) for i in idx],
            "hessian_weights": None if w is None else [float(v) for v in w],
            "solver": config.solver,
            "damping": config.damping,
            "curvature": config.curvature,
            "solver_options": dict(config.solver_options),
        }

    @property
    def fit_info(self) -> dict[str, Any]:
        """What the fit chose (e.g. ``{"inverse": "low_rank", "rank": r}`` for an exact Gauss-Newton solve)."""
        return {} if self.inverse is None else dict(self.inverse.info)

    @property
    def _lissa_lambda_max(self) -> float | None:
        """λ_max found by LiSSA's power iteration in this fit (None before the first solve)."""
        return self.inverse.lambda_max if isinstance(self.inverse, IterativeFit) else None

    def _require_fit(self) -> InfluenceConfig:
        if self.config is None:
            raise NotFittedError("call fit(hessian_indices=..., solver=...) before computing influence")
        return self.config

    def ihvp(self, B: torch.Tensor) -> SolveResult:
        """(H_S + δI)⁻¹ b for each row of B (k, p); the result is also kept in ``last_solve``."""
        self._require_fit()
        result = self.inverse.solve(B)
        self.last_solve = result
        return result

    def gradients(self, X: Any, y: Any) -> torch.Tensor:
        """Per-sample gradients (k, p) of the task's measurement (the loss by default) at arbitrary points (e.g.
        test points), in chunks."""
        return self.objective.query_grads(X, y)

    def scores(
        self,
        X_test: Any,
        y_test: Any = None,
        train_indices: Any | None = None,
        progress: Progress | None = None,
        *,
        test_chunk_size: int | None = None,
        train_chunk_size: int | None = None,
        executor: Any = None,
        out: Any = None,
        resume: bool = True,
    ) -> np.ndarray:
        """score[t, j] = (1/n) ∇ℓ(z_t)ᵀ (H_S + δI)⁻¹ ∇ℓ(z_j): (n_test, n_train) or (n_test, len(train_indices)).

        Computed block by block (:func:`influence_core.influence.scoring.score_grid`): iHVPs per chunk of
        ``test_chunk_size``
        test points (default 128), then one forward-mode pass per chunk of ``train_chunk_size`` training points
        (None = automatic: as many as keep k tangents × the model's activations within ``SCORE_MEMORY_BYTES``,
        k = test points per block, so small models are scored in one block; at least ``chunk_size``, at most
        ``MAX_SCORE_CHUNK``), so memory is set by the chunk sizes. ``executor``: None
        (sequential), an :class:`~influence_core.influence.executors.Executor`, a ``distributed.Client`` or a Dask
        scheduler address. ``out``: a
        ``.npy`` path to write the matrix to (returned as a read-only memmap), resumable after an interruption.
        Afterwards ``last_solve`` summarises the per-chunk iHVP solves (its ``x`` is empty; call :meth:`ihvp` for
        the vectors) and ``last_scoring`` describes the run.
        """
        self._require_fit()
        from influence_core.influence.scoring import score_grid

        if y_test is None and X_test is not None:  # a data source / Dataset / DataLoader of test points
            source = as_source(X_test)
            X_test, y_test = source.fetch(np.arange(len(source)))
        scores, self.last_scoring, solve = score_grid(
            self,
            X_test,
            y_test,
            train_indices=train_indices,
            test_chunk_size=test_chunk_size,
            train_chunk_size=self._train_chunk(train_chunk_size, _rows(X_test), test_chunk_size),
            executor=executor,
            out=out,
            resume=resume,
            progress=progress,
        )
        if solve is not None:
            self.last_solve = solve
        return scores

    def _train_chunk(self, given: int | None, k: int, test_chunk_size: int | None) -> int | None:
        """The training points per scoring block: ``given``, else from the memory budget
        SCORE_MEMORY_BYTES >= chunk · (4 · k_block · activations + input size) · itemsize."""
        if given is not None:
            return given
        from influence_core.influence.scoring import DEFAULT_TEST_CHUNK_SIZE

        obj = self.objective
        if self._activations_per_point is None:
            self._activations_per_point = _activations_per_point(obj, obj.batch(np.arange(1))[0])
        try:
            k_block = max(1, min(int(k), DEFAULT_TEST_CHUNK_SIZE if test_chunk_size is None else int(test_chunk_size)))
        except (TypeError, ValueError):
            return None  # score_grid reports the bad test_chunk_size

        itemsize = torch.finfo(obj.dtype).bits // 8
        per_point = (4 * k_block * self._activations_per_point + obj.batch(np.arange(1))[0].numel()) * itemsize
        return int(min(MAX_SCORE_CHUNK, max(obj.chunk_size, SCORE_MEMORY_BYTES // per_point)))

    def scores_from_ihvp(
        self,
        S: torch.Tensor,
        train_indices: Any | None = None,
        progress: Progress | None = None,
        *,
        test_chunk_size: int | None = None,
        train_chunk_size: int | None = None,
        executor: Any = None,
        out: Any = None,
        resume: bool = True,
    ) -> np.ndarray:
        """(1/n) ∇ℓ_jᵀ s_t for precomputed iHVPs S (k, p): (k, n_selected) numpy array (blocked like
        :meth:`scores`)."""
        from influence_core.influence.scoring import score_grid

        scores, self.last_scoring, _ = score_grid(
            self,
            ihvps=S,
            train_indices=train_indices,
            test_chunk_size=test_chunk_size,
            train_chunk_size=self._train_chunk(train_chunk_size, _rows(S), test_chunk_size),
            executor=executor,
            out=out,
            resume=resume,
            progress=progress,
        )
        return scores

    def self_influence(self, train_indices: Any | None = None) -> np.ndarray:
        """(1/n) ∇ℓ_jᵀ (H_S + δI)⁻¹ ∇ℓ_j for the selected training points (n_selected,): one iHVP per point,
        so prefer solver="exact" (a single factorisation) for many points."""
        self._require_fit()
        obj = self.objective
        out = []
        for _, G in obj.train_grads(obj.subset(train_indices)):
            out.append((G * self.ihvp(G).x).sum(1).double().cpu().numpy() / obj.n)
        return np.concatenate(out)


def _rows(X: Any) -> int:
    """len(X), or 1 for something without a length (score_grid then reports what is wrong with it)."""
    try:
        return len(X)
    except TypeError:
        return 1


def _activations_per_point(obj: Objective, x: torch.Tensor) -> int:
    """Numbers output by all leaf modules for one input (1, ...): what a forward-mode tangent carries per point."""
    model = replica(obj.model)  # the hooks go on a private copy, never on the caller's modules
    total = [0]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            functional_call(model, (obj.unflatten(obj.theta), obj.fixed, obj.buffers), (obj._prepare(x),))
    finally:
        for h in handles:
            h.remove()
    return max(total[0], 1)


def top_influences(scores: np.ndarray, k: int = 10) -> dict[str, np.ndarray]:
    """Top-k helpful (largest positive scores) and harmful (most negative) training indices of one score row (n,)."""
    scores = np.asarray(scores)
    if np.iscomplexobj(scores) or scores.dtype == bool or not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"top_influences takes real numbers (one row of influence scores), got dtype {scores.dtype}")
    scores = scores.astype(np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"top_influences takes one non-empty row of scores (n_train,), got shape {scores.shape}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer (points per list), got {k!r}")
    bad = ~np.isfinite(scores)
    if bad.any():  # NaN would sort as the most harmful point
        raise ValueError(
            f"{int(bad.sum())} of the {scores.size} scores are NaN or infinite (e.g. training point "
            f"{int(np.flatnonzero(bad)[0])}); the solve or the model produced them: check the solver's "
            "convergence, raise the damping, or retrain"
        )
    k = int(min(k, scores.size))
    order = np.argsort(-scores, kind="stable")
    helpful, harmful = order[:k], order[::-1][:k]
    return {
        "helpful": helpful,
        "helpful_scores": scores[helpful],
        "harmful": harmful,
        "harmful_scores": scores[harmful],
    }


def make_task(task: Task | None = None, output_fn: Any = None, loss_fn: Any = None, measurement: Any = None) -> Task:
    """A :class:`Task` from ``task`` or from the shortcuts (not both)."""
    shortcuts = {
        k: v for k, v in (("output", output_fn), ("loss", loss_fn), ("measurement", measurement)) if v is not None
    }
    if task is not None and shortcuts:
        raise ValueError(f"pass either task= or {sorted(shortcuts)} (the Task's fields), not both")
    return task if task is not None else Task(**shortcuts)


def hessian_arrays(hessian_indices: Any, hessian_weights: Any = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(indices, weights) of a Hessian sample given as a :class:`~influence_core.sampling.samplers.HessianSample` (its
    weights are used unless ``hessian_weights`` is given) or as an index array (with optional weights)."""
    if hessian_indices is None:
        if hessian_weights is not None:
            raise ValueError("hessian_weights need hessian_indices (the points they weight)")
        return None, None
    sample_indices = getattr(hessian_indices, "indices", None)
    if isinstance(sample_indices, np.ndarray) and hasattr(hessian_indices, "weights"):  # a HessianSample
        if hessian_weights is None:
            hessian_weights = hessian_indices.weights  # it carries its importance weights
        hessian_indices = sample_indices
    idx = np.asarray(hessian_indices)
    w = None if hessian_weights is None else np.asarray(hessian_weights)
    if w is not None and (np.iscomplexobj(w) or w.dtype == bool or not np.issubdtype(w.dtype, np.number)):
        raise ValueError(
            f"hessian_weights must be real numbers (one importance weight per Hessian index), got dtype {w.dtype}"
        )
    w = None if w is None else w.astype(np.float64)
    return idx, w


def _split_data(dataset: Any) -> tuple[Any, Any, Any, Any]:
    if isinstance(dataset, Dataset):
        return dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test
    if isinstance(dataset, (tuple, list)) and len(dataset) == 4:
        return tuple(dataset)
    raise TypeError("dataset must be an influence_core Dataset or a tuple (X_train, y_train, X_test, y_test)")


def influence_scores(
    model: nn.Module,
    dataset: Any,
    test_indices: Any,
    hessian_indices: Any | None = None,
    solver: str | None = None,
    damping: float | None = None,
    *,
    config: InfluenceConfig | None = None,
    hessian_weights: Any | None = None,
    curvature: str | None = None,
    weight_decay: float | None = None,
    chunk_size: int = 256,
    train_indices: Any | None = None,
    test_chunk_size: int | None = None,
    executor: Any = None,
    out: Any = None,
    progress: Progress | None = None,
    task: Task | None = None,
    params: Any = None,
    output_fn: Any = None,
    loss_fn: Any = None,
    measurement: Any = None,
    **solver_options: Any,
) -> np.ndarray:
    """Influence of every training point (or ``train_indices``) on the test points ``test_indices``.

    ``dataset``: a :class:`Dataset` or a tuple (X_train, y_train, X_test, y_test) of arrays/tensors for your own
    model; X_train (or X_test) may also be a data source, ``torch.utils.data.Dataset`` or ``DataLoader`` with
    y_train (y_test) None. ``task``/``output_fn``/``loss_fn``/``measurement`` and ``params``: see
    :class:`InfluenceCalculator`. ``config``: the :class:`~influence_core.config.InfluenceConfig` (None = the
    defaults: Gauss-Newton, δ = 0.01, CG, the whole training set); ``solver``, ``damping``, ``curvature`` and
    ``**solver_options`` override its fields. ``hessian_indices``: the Hessian sample (an index array or a
    ``HessianSample``; None = the config's sample). Returns score (len(test_indices), n_train) with the convention
    of this module. ``chunk_size``/``test_chunk_size`` bound memory, ``executor`` picks where blocks run and ``out``
    writes the matrix to a resumable ``.npy`` file (see :meth:`InfluenceCalculator.scores`).
    """
    X_train, y_train, X_test, y_test = _split_data(dataset)
    test_source = None if y_test is not None else as_source(X_test)
    test_idx = as_index_array(
        test_indices if np.ndim(test_indices) else [test_indices],
        len(y_test) if test_source is None else len(test_source),
        "test_indices",
    )
    calc = InfluenceCalculator(
        model,
        X_train,
        y_train,
        weight_decay=weight_decay,
        chunk_size=chunk_size,
        task=task,
        params=params,
        output_fn=output_fn,
        loss_fn=loss_fn,
        measurement=measurement,
    )
    calc.fit(
        hessian_indices,
        hessian_weights,
        config=config,
        solver=solver,
        damping=damping,
        curvature=curvature,
        **solver_options,
    )
    if test_source is not None:
        X_test, y_test = test_source.fetch(test_idx)
    else:
        X_test = X_test[torch.as_tensor(test_idx)] if isinstance(X_test, torch.Tensor) else np.asarray(X_test)[test_idx]
        y_test = y_test[torch.as_tensor(test_idx)] if isinstance(y_test, torch.Tensor) else np.asarray(y_test)[test_idx]
    return calc.scores(
        X_test, y_test, train_indices, progress, test_chunk_size=test_chunk_size, executor=executor, out=out
    )
