"""The training objective as a function of the flat parameter vector θ (p,), and its derivatives, with ``torch.func``.

Conventions (the same objective the model was trained on, see :mod:`influence_core.models.training`):

    ℓ_i(θ)  = CE(f_θ(x_i), y_i)                                   per-sample loss, no regulariser
    H_S     = Σ_{i∈S} w_i ∇²ℓ_i(θ) / Σ_{i∈S} w_i + wd · I           Hessian on an index subset S (w_i = 1 by default)
    G_S     = Σ_{i∈S} w_i J_iᵀ (diag(p_i) − p_i p_iᵀ) J_i / Σ w_i + wd · I   Gauss-Newton (mode="gauss_newton"),
              J_i = ∂ logits_i / ∂θ, p_i = softmax(logits_i); positive semi-definite even where H_S is not.

Low-rank square root of G_S (:meth:`Objective.gauss_newton_factors`): with A_i = diag(p_i) − p_i p_iᵀ = Q_i Λ_i Q_iᵀ
(rank C − 1), U_i = Λ_i^{1/2} Q_iᵀ J_i ((C−1), p) and U_S = stack_i √(w_i/Σw) U_i (m(C−1), p), G_S = U_SᵀU_S + wd·I.

Everything is computed in chunks of ``chunk_size`` samples, so memory is set by the chunk, not by n. Vectors
follow the model's device and dtype. Batches of vectors are (k, p) tensors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vjp, vmap
from torch.func import jvp as _torch_jvp
from torch.utils.flop_counter import FlopCounterMode

from influence_core.checks import check_int, check_model_storage, check_real
from influence_core.data.sources import ArraySource, as_source, source_labels
from influence_core.models.task import Task, check_parameters, eval_mode, select_parameters

__all__ = ["Objective", "GaussNewtonFactors", "largest_eigenvalue", "CURVATURE_MODES", "as_index_array"]

CURVATURE_MODES = ("hessian", "gauss_newton")
MATERIALIZE_MIN_VECTORS = 4
"""Fewest vectors for which :meth:`Objective.grad_dot` considers per-sample gradients instead of forward mode."""
WEIGHT_REUSE_MIN = 4.0
"""Forward FLOPs per input, in units of 2p (one multiply-add per weight), above which a model counts as reusing its
weights (convolutions) and :meth:`Objective.grad_dot` forms per-sample gradients for many vectors."""
GRAD_BLOCK_BYTES = 256 * 1024**2
"""Most per-sample gradient bytes :meth:`Objective.grad_dot` holds at once."""
Operator = Callable[[torch.Tensor], torch.Tensor]

FORWARD_AD_LOCK = threading.RLock()
"""Held around every forward-mode product (:func:`jvp`). torch's forward-AD levels are process-wide (one level at a
time per process, and ``torch.func.jvp`` decides whether to open one from a module-level counter), so two threads
inside ``jvp`` at once break each other ("Trying to access a forward AD level with an invalid index", or silently
wrong tangents). Only this step is serialised; reverse-mode work (vjp, grad, vmap, solves) runs in parallel.

Measured alternative, not taken: a reverse-only J v (the vjp of a vjp) for the threads that find the lock taken
costs 1.2x (digits MLP) to 1.4x (MNIST CNN) the forward-mode time and shares no state, but its rounding differs from
forward mode, so a score would depend on whether another session was computing at the same moment (a CG solve
amplified that to 1e-4 relative). Results stay bitwise-reproducible with the lock."""


def jvp(func: Callable, primals: tuple, tangents: tuple):
    """``torch.func.jvp`` under :data:`FORWARD_AD_LOCK`: safe to call from several threads at once."""
    with FORWARD_AD_LOCK:
        return _torch_jvp(func, primals, tangents)


EXACT_MAX_PARAMS = 20_000
"""The largest p for which a dense (p, p) curvature matrix is formed (the exact solver, K-FAC's ``dense``, the
studies' exact references): 20,000² float64 numbers are 3.2 GB."""


def as_index_array(indices: object, n: int, what: str = "indices") -> np.ndarray:
    """Validate an index array into range(n): 1-D integers, in range, non-empty, no duplicates."""
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"boolean {what} must have shape ({n},), got {idx.shape}")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of integers, got shape {idx.shape}")
    if idx.size == 0:
        raise ValueError(f"{what} is empty; pass at least one index")
    if not np.issubdtype(idx.dtype, np.integer):
        if np.issubdtype(idx.dtype, np.floating) and np.all(idx == np.round(idx)):
            idx = idx.astype(np.int64)
        else:
            raise ValueError(f"{what} must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{what} must lie in [0, {n}); got values from {idx.min()} to {idx.max()}")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"{what} contains duplicates; each index may appear once (use weights to repeat a point)")
    return idx


class Objective:
    """ℓ_i and L_S = mean loss on S + (wd/2)||θ||² of a trained ``model`` on a training set, at its current θ.

    Args:
        model: a classifier (any ``nn.Module``; its buffers are kept). It is evaluated in eval mode and left as it
            was: every evaluation runs on this thread's replica (:func:`~influence_core.models.task.thread_replica`),
            so its parameters, ``requires_grad``, ``training`` flags and hooks are never changed, and several threads
            may compute on one objective (or one model) at once.
        X, y: the training set: arrays/tensors X (n, ...) and labels y (n,), or a data source / map-style
            ``torch.utils.data.Dataset`` / ``DataLoader`` as ``X`` with ``y=None`` (see
            :mod:`influence_core.data.sources`).
            Chunks are moved to the model's device one at a time; floating inputs take the model's dtype, integer
            inputs (token ids) stay integers.
        weight_decay: wd of the training objective (its Hessian contributes wd·I).
        chunk_size: samples per vectorised chunk (memory ∝ chunk_size · p for per-sample gradients).
        task: a :class:`~influence_core.models.task.Task` (output function, loss, query measurement); default softmax
        CE.
        params: the parameters θ is made of (see :func:`~influence_core.models.task.select_parameters`): None (all with
            ``requires_grad``), names, modules or ``"last_layer"``; the others are held fixed.
    """

    def __init__(
        self,
        model: nn.Module,
        X: object,
        y: object = None,
        weight_decay: float = 0.0,
        chunk_size: int = 256,
        *,
        task: Task | None = None,
        params: object = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_real("weight_decay", weight_decay, 0)
        check_int("chunk_size", chunk_size, 1)
        check_model_storage(model)
        self.model = model
        self.task = task if task is not None else Task()
        if not isinstance(self.task, Task):
            raise TypeError(f"task must be an influence_core.models.task.Task, got {type(self.task).__name__}")
        self.names = select_parameters(model, params)
        self.device, self.dtype = check_parameters(model, self.names)
        self.source = as_source(X, y, self.dtype)
        self._y = source_labels(self.source)
        if len(self._y) == 0 or len(self._y) != len(self.source):
            raise ValueError(
                f"the training set must be non-empty with one label per point; got {len(self.source)} "
                f"points and {len(self._y)} labels"
            )
        if isinstance(self.source, ArraySource):
            if self.source.X.ndim < 2:
                raise ValueError(
                    f"X must be (n, ...) and y (n,) with the same n; got {tuple(self.source.X.shape)} "
                    f"and {tuple(self._y.shape)}"
                )
            if self.source.X.is_floating_point() and not torch.isfinite(self.source.X).all():
                raise ValueError("X contains NaN or infinite values")
        self.weight_decay = float(weight_decay)
        self.chunk_size = int(chunk_size)
        named = dict(model.named_parameters())
        self.shapes = [named[k].shape for k in self.names]
        self.numels = [named[k].numel() for k in self.names]
        self.theta = torch.cat([named[k].detach().reshape(-1) for k in self.names])
        chosen = set(self.names)
        self.fixed = {k: v.detach() for k, v in named.items() if k not in chosen}  # held constant, not differentiated
        self.buffers = {k: v for k, v in model.named_buffers()}
        x1, _ = self.batch(np.arange(1))
        flops = FlopCounterMode(display=False)
        with torch.no_grad(), flops:
            out = self.logits(self.theta, x1)
        self.forward_flops = int(flops.get_total_flops())  # of one input's forward pass (matmuls, convolutions)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"the output function returned a {type(out).__name__}, not a torch tensor; output_fn "
                "must return the logits as a tensor (batch, classes), without .numpy() or .item()"
            )
        if out.ndim != 2 or out.shape[0] != 1:
            raise ValueError(
                f"the model's output (after the output function) has shape {tuple(out.shape)} for a "
                "batch of 1 input; influence needs logits of shape (batch, classes): pass output_fn= "
                "(or Task(output=...)) to extract them, e.g. lambda out: out.flatten(1)"
            )
        self._n_classes = int(out.shape[-1])
        self.input_shape = tuple(x1.shape[1:])  # of one input; test points must match it
        if self._y.min() < 0 or self._y.max() >= self._n_classes:
            raise ValueError(
                f"labels must lie in [0, {self._n_classes}) (the model has {self._n_classes} outputs); "
                f"got values from {int(self._y.min())} to {int(self._y.max())}"
            )
        with torch.no_grad():
            x2, y2 = self.batch(np.arange(min(2, self.n)))
            loss = self.task.loss(self.logits(self.theta, x2), y2)
        if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (len(y2),):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(
                f"loss_fn must return one loss per sample, shape (batch,) = ({len(y2)},), got {shape}; "
                "use reduction='none' (e.g. F.cross_entropy(logits, y, reduction='none'))"
            )

    # ------------------------------------------------------------------ basics
    @property
    def n(self) -> int:
        """Number of training points n (the 1/n of the influence convention)."""
        return len(self._y)

    @property
    def n_params(self) -> int:
        return int(self.theta.numel())

    @property
    def n_classes(self) -> int:
        """C, the number of model outputs."""
        return self._n_classes

    @property
    def X(self) -> torch.Tensor:
        """All training inputs (n, ...) of an array source (on the CPU or where they were given)."""
        if not isinstance(self.source, ArraySource):
            raise AttributeError(
                "this objective reads its training points from a data source, not arrays; use "
                "objective.batch(indices) to fetch some"
            )
        return self.source.X

    @property
    def y(self) -> torch.Tensor:
        """All training labels (n,), long."""
        return self._y

    def batch(self, indices: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Training points ``indices`` as (inputs, labels) on the model's device (floating inputs in its dtype)."""
        idx = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices, dtype=np.int64)
        x, y = self.source.fetch(idx)
        return self._prepare(x), y.to(self.device).long()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs on the model's device; floating inputs in the model's dtype, anything else untouched."""
        return x.to(self.device, self.dtype) if x.is_floating_point() else x.to(self.device)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: t.view(s) for k, t, s in zip(self.names, torch.split(theta, self.numels), self.shapes)}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """f_θ(x): (c, ...) -> (c, C), the model in eval mode, through the task's output function."""
        with eval_mode(self.model) as private:  # this thread's replica: the caller's module is never touched
            out = functional_call(private, (self.unflatten(theta), self.fixed, self.buffers), (self._prepare(x),))
        return self.task.output(out)

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss ℓ (c,) (softmax cross-entropy unless the task says otherwise)."""
        return self.task.loss(self.logits(theta, x), y)

    def measurements(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample query measurement f (c,) (the test loss unless the task says otherwise)."""
        return self.task.measure(self.logits(theta, x), y)

    def _single_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.losses(theta, x.unsqueeze(0), y.unsqueeze(0)).squeeze(0)

    def _single_measurement(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.measurements(theta, x.unsqueeze(0), y.unsqueeze(0)).squeeze(0)

    def chunks(self, indices: np.ndarray | None = None, chunk_size: int | None = None) -> Iterator[torch.Tensor]:
        """Index tensors of at most ``chunk_size`` into the data (all points if ``indices`` is None)."""
        size = chunk_size or self.chunk_size
        idx = np.arange(self.n) if indices is None else np.asarray(indices)
        for start in range(0, len(idx), size):
            yield torch.as_tensor(idx[start : start + size], device=self.device)

    def subset(self, indices: object | None) -> np.ndarray:
        """Validated index array (None = all n points)."""
        return np.arange(self.n) if indices is None else as_index_array(indices, self.n, "hessian/train indices")

    def _weights(self, indices: np.ndarray, weights: object | None) -> torch.Tensor:
        if weights is None:
            return torch.full((len(indices),), 1.0 / len(indices), device=self.device, dtype=self.dtype)
        w = torch.as_tensor(np.array(weights, dtype=np.float64)).to(self.device, self.dtype)  # a copy: may be read-only
        if w.shape != (len(indices),):
            raise ValueError(f"weights must have shape ({len(indices)},) like the indices, got {tuple(w.shape)}")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        return w / w.sum()

    # ------------------------------------------------------------------ gradients
    def per_sample_grads(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇ℓ(x_i, y_i) for a batch of inputs (c, ...) -> (c, p), by ``vmap(grad)`` (no regulariser term)."""
        x, y = self._prepare(x), y.to(self.device).long()
        return vmap(grad(self._single_loss), in_dims=(None, 0, 0))(self.theta, x, y)

    def _query_grads_chunk(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇f(x_t, y_t) of the task's measurement (the test loss by default) for a batch (c, ...) -> (c, p)."""
        if self.task.measurement == "loss":
            return self.per_sample_grads(x, y)
        x, y = self._prepare(x), y.to(self.device).long()
        return vmap(grad(self._single_measurement), in_dims=(None, 0, 0))(self.theta, x, y)

    def query_grads(self, X: object, y: object) -> torch.Tensor:
        """∇f(x_t, y_t) of the task's measurement (the test loss by default) for any number of points (k, ...)
        (arrays or tensors), ``chunk_size`` at a time -> (k, p)."""
        X = torch.as_tensor(X if isinstance(X, torch.Tensor) else np.asarray(X))
        y = torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y))
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(f"X and y must be non-empty with the same length, got {len(X)} and {len(y)}")
        return torch.cat(
            [
                self._query_grads_chunk(X[i : i + self.chunk_size], y[i : i + self.chunk_size])
                for i in range(0, len(X), self.chunk_size)
            ]
        )

    def train_grads(self, indices: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (index chunk, per-sample gradients (c, p)) over the training points."""
        for idx in self.chunks(indices):
            yield idx, self.per_sample_grads(*self.batch(idx))

    def grad_sum(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """Σ_{i∈indices} ∇ℓ_i (p,), by one backward pass per chunk (no per-sample gradients needed)."""
        total = torch.zeros_like(self.theta)
        for idx in self.chunks(indices):
            x, y = self.batch(idx)
            total += grad(lambda th: self.losses(th, x, y).sum())(self.theta)
        return total

    def materializes_grads(self, k: int) -> bool:
        """Whether :meth:`grad_dot` with k vectors forms per-sample gradients (True) or runs forward mode (False).

        Forward mode costs about k forward passes; per-sample gradients cost about one forward+backward pass plus
        writing c × p numbers and a (c, p) @ (p, k) product. So forward mode wins for few vectors and for models that
        use each weight about once per input (dense layers: forward FLOPs ≈ 2p), and per-sample gradients win for
        many vectors on models that reuse their weights (convolutions: forward FLOPs ≫ 2p); docs/SCALE.md has the
        measurements (``benchmarks/grad_dot_paths.py``). The rule depends only on the model and k, never on timing,
        so every process and executor makes the same choice (the two paths agree to rounding)."""
        return k >= MATERIALIZE_MIN_VECTORS and self.forward_flops >= WEIGHT_REUSE_MIN * 2 * self.n_params

    def grad_dot(self, V: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, path: str | None = None) -> torch.Tensor:
        """∇ℓ(x_i, y_i)ᵀ v_k for a batch (c, ...) and vectors V (k, p) -> (c, k).

        ``path``: "forward" (forward-mode ``jvp``: one forward pass with k tangents, never forming the (c, p)
        per-sample gradients), "per_sample" (per-sample gradients times Vᵀ, GRAD_BLOCK_BYTES of gradients at a time),
        or None: the one :meth:`materializes_grads` picks."""
        if path not in (None, "forward", "per_sample"):
            raise ValueError(f"path must be None, 'forward' or 'per_sample', got {path!r}")
        x, y = self._prepare(x), y.to(self.device).long()
        if path == "per_sample" or (path is None and self.materializes_grads(len(V))):
            itemsize = torch.finfo(self.dtype).bits // 8
            step = max(1, min(len(x), GRAD_BLOCK_BYTES // (self.n_params * itemsize)))
            return torch.cat(
                [self.per_sample_grads(x[i : i + step], y[i : i + step]) @ V.T for i in range(0, len(x), step)]
            )

        def directional(v: torch.Tensor) -> torch.Tensor:
            return jvp(lambda th: self.losses(th, x, y), (self.theta,), (v,))[1]

        return vmap(directional)(V).T

    # ------------------------------------------------------------------ curvature
    def _chunk_maps(self, idx: np.ndarray, w: torch.Tensor, mode: str) -> list[Operator]:
        """One linear map V (k, p) -> Σ_{i∈chunk} w_i ∇²ℓ_i V (or the Gauss-Newton term) per chunk of ``idx``.

        Hessian: reverse-over-reverse, ``vjp(grad(Σ w_i ℓ_i))`` (H is symmetric, so the pullback of the gradient is
        H v), vmapped over the k vectors. Gauss-Newton: Jv by ``jvp`` of the logits, the softmax block
        diag(p) − ppᵀ, then Jᵀ(·) by the cached ``vjp`` of the logits. Each map keeps its chunk's graph, so
        reusing the maps across solver iterations skips the forward/gradient recomputation."""
        if mode not in CURVATURE_MODES:
            raise ValueError(f"unknown curvature mode {mode!r}; choose one of {list(CURVATURE_MODES)}")
        if mode == "gauss_newton":
            self.task.require_gauss_newton()
        maps: list[Operator] = []
        for start, chunk in zip(range(0, len(idx), self.chunk_size), self.chunks(idx)):
            wc = w[start : start + len(chunk)]
            x, y = self.batch(chunk)
            if mode == "hessian":

                def weighted_loss(th: torch.Tensor, x=x, y=y, wc=wc) -> torch.Tensor:
                    return (self.losses(th, x, y) * wc).sum()

                _, pullback = vjp(grad(weighted_loss), self.theta)
                maps.append(lambda V, pb=pullback: vmap(pb)(V)[0])
            else:

                def logits(th: torch.Tensor, x=x) -> torch.Tensor:
                    return self.logits(th, x)

                z, pullback = vjp(logits, self.theta)
                p = torch.softmax(z.detach(), dim=-1)

                def one(v: torch.Tensor, logits=logits, pullback=pullback, p=p, wc=wc) -> torch.Tensor:
                    jv = jvp(logits, (self.theta,), (v,))[1]
                    hjv = p * jv - p * (p * jv).sum(-1, keepdim=True)
                    return pullback(hjv * wc[:, None])[0]

                maps.append(lambda V, one=one: vmap(one)(V))
        return maps

    def _apply(self, maps: list[Operator], V: torch.Tensor) -> torch.Tensor:
        single = V.ndim == 1
        V = V.reshape(-1, self.n_params).to(self.device, self.dtype)
        out = self.weight_decay * V
        for apply in maps:
            out = out + apply(V)
        return out[0] if single else out

    def hvp(
        self, V: torch.Tensor, indices: object | None = None, weights: object | None = None, mode: str = "hessian"
    ) -> torch.Tensor:
        """H_S v (or G_S v with mode="gauss_newton") for v (p,) or a batch V (k, p); S = ``indices`` (None: all),
        ``weights`` optional (normalised to sum 1). Includes the wd·v term. Chunked; see :meth:`_chunk_maps`."""
        idx = self.subset(indices)
        return self._apply(self._chunk_maps(idx, self._weights(idx, weights), mode), V)

    def operator(
        self,
        indices: object | None = None,
        weights: object | None = None,
        mode: str = "hessian",
        cache_limit: int = 8192,
    ) -> Operator:
        """The map V (k, p) -> H_S V as a closure, for solvers that apply it many times. When |S| <= ``cache_limit``
        the per-chunk linearisations are built once and reused (memory ∝ |S| activations); above it they are
        rebuilt at each product so memory stays bounded by the chunk size."""
        idx = self.subset(indices)
        w = self._weights(idx, weights)  # validated now, not at the first product
        if len(idx) <= cache_limit:
            maps = self._chunk_maps(idx, w, mode)
            return lambda V: self._apply(maps, V)
        if mode not in CURVATURE_MODES:
            raise ValueError(f"unknown curvature mode {mode!r}; choose one of {list(CURVATURE_MODES)}")
        if mode == "gauss_newton":
            self.task.require_gauss_newton()
        return lambda V: self._apply(self._chunk_maps(idx, w, mode), V)

    def hessian(
        self, indices: object | None = None, weights: object | None = None, mode: str = "hessian", block: int = 256
    ) -> torch.Tensor:
        """The exact matrix H_S (p, p), built column block by column block from HVPs (small models only)."""
        p = self.n_params
        if p > EXACT_MAX_PARAMS:
            raise ValueError(
                f"the exact Hessian of {p} parameters would need {p * p * 8 / 1e9:.1f} GB; "
                "use solver='cg' or 'lissa' for models this large"
            )
        idx = self.subset(indices)
        H = torch.empty(p, p, device=self.device, dtype=self.dtype)
        eye = torch.eye(p, device=self.device, dtype=self.dtype)
        op = self.operator(idx, weights, mode)
        for start in range(0, p, block):
            H[start : start + block] = op(eye[start : start + block])
        return 0.5 * (H + H.T)

    def gauss_newton_roots(
        self, indices: object | None = None, weights: object | None = None, *, unweighted: bool = False
    ) -> tuple[np.ndarray, torch.Tensor]:
        """(validated indices (m,), M (m, C−1, C)) with M_i = √w_i Λ_i^{1/2} Q_iᵀ, so M_iᵀM_i = w_i A_i and
        U_i = M_i J_i. Weights are normalised to sum 1 (uniform 1/m if None); ``unweighted=True`` uses w_i = 1."""
        self.task.require_gauss_newton()
        idx = self.subset(indices)
        w = (
            torch.ones(len(idx), device=self.device, dtype=torch.float64)
            if unweighted
            else self._weights(idx, weights).double()
        )
        with torch.no_grad():
            prob = torch.cat(
                [torch.softmax(self.logits(self.theta, self.batch(c)[0]), dim=-1) for c in self.chunks(idx)]
            )
        prob = prob.double()
        A = torch.diag_embed(prob) - prob[:, :, None] * prob[:, None, :]  # (m, C, C)
        lam, Q = torch.linalg.eigh(A)  # ascending; lam[:, 0] ≈ 0
        M = (lam[:, 1:].clamp_min(0) * w[:, None]).sqrt()[:, :, None] * Q[:, :, 1:].transpose(1, 2)
        return idx, M.to(self.dtype)

    def gauss_newton_factors(
        self, indices: object | None = None, weights: object | None = None, *, unweighted: bool = False
    ) -> torch.Tensor:
        """The dense factor U_S (m(C−1), p), rows point-major, with U_SᵀU_S + wd·I = G_S (see the module doc).

        Per-point Jacobians J_i (C, p) by ``vmap(jacrev)`` in chunks of (chunk, C, p) <= ~256 MB. Memory of the
        result: m(C−1)·p numbers. ``unweighted=True`` returns the raw U_i (Σ U_iᵀU_i = Σ J_iᵀ A_i J_i)."""
        idx, M = self.gauss_newton_roots(indices, weights, unweighted=unweighted)
        C, p = M.shape[2], self.n_params
        chunk = max(1, min(self.chunk_size, int(2**28 // (4 * C * p))))

        def single_logits(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.logits(theta, x.unsqueeze(0))[0]

        jac = vmap(jacrev(single_logits), in_dims=(None, 0))
        out = []
        for start, c in zip(range(0, len(idx), chunk), self.chunks(idx, chunk)):
            J = jac(self.theta, self.batch(c)[0])  # (c, C, p)
            out.append(torch.bmm(M[start : start + len(c)], J).reshape(-1, p))  # (c·(C−1), p)
        return torch.cat(out)

    def gauss_newton_operator(
        self, indices: object | None = None, weights: object | None = None
    ) -> "GaussNewtonFactors":
        """U_S as a matrix-free linear map (see :class:`GaussNewtonFactors`)."""
        return GaussNewtonFactors(self, indices, weights)

    def largest_eigenvalue(
        self, indices: object | None = None, weights: object | None = None, mode: str = "hessian", **options: float
    ) -> float:
        """λ_max of H_S (including wd), by power iteration (see :func:`largest_eigenvalue`)."""
        return largest_eigenvalue(
            self.operator(indices, weights, mode), self.n_params, self.device, self.dtype, **options
        )


class GaussNewtonFactors:
    """U_S (r, p), r = m(C−1), of :meth:`Objective.gauss_newton_factors` as a linear map that never stores it.

    ``matmul(V)``: V (k, p) -> U_S Vᵀ as (k, r), by ``jvp`` of the sample's logits (J_i v) then M_i (C−1, C).
    ``rmatmul(Y)``: Y (k, r) -> (U_Sᵀ Yᵀ)ᵀ as (k, p), by the cached ``vjp`` of the logits with cotangents M_iᵀ y_i.
    Each costs about one forward (resp. backward) pass over the m sample points per vector; memory is the sample's
    activations. ``dense()`` forms U_S. Picklable: the cached pullbacks are rebuilt after unpickling.
    """

    def __init__(self, objective: Objective, indices: object | None = None, weights: object | None = None):
        self.objective = objective
        self.indices, self.M = objective.gauss_newton_roots(indices, weights)
        self.rank_per_point = self.M.shape[1]
        self.shape = (len(self.indices) * self.rank_per_point, objective.n_params)
        self.weights = weights
        self._maps: list[tuple[torch.Tensor, Callable, Callable]] | None = None

    @classmethod
    def from_roots(
        cls, objective: Objective, indices: np.ndarray, roots: torch.Tensor, weights: object | None = None
    ) -> "GaussNewtonFactors":
        """The map with given roots M_S (m, C−1, C) (computed elsewhere, e.g. shared by several samples, or loaded
        from a file) instead of recomputing them."""
        self = cls.__new__(cls)
        self.objective, self.indices, self.M = (
            objective,
            np.asarray(indices),
            roots.to(objective.device, objective.dtype),
        )
        self.rank_per_point = self.M.shape[1]
        self.shape = (len(self.indices) * self.rank_per_point, objective.n_params)
        self.weights, self._maps = weights, None
        return self

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def _chunk_maps(self) -> list[tuple[torch.Tensor, Callable, Callable]]:
        if self._maps is None:
            obj = self.objective
            self._maps = []
            for chunk in obj.chunks(self.indices):

                def logits(th: torch.Tensor, x=obj.batch(chunk)[0]) -> torch.Tensor:
                    return obj.logits(th, x)

                _, pullback = vjp(logits, obj.theta)
                self._maps.append((chunk, logits, pullback))
        return self._maps

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """U_S Vᵀ transposed: (k, p) -> (k, r)."""
        obj, out, start = self.objective, [], 0
        for chunk, logits, _ in self._chunk_maps():
            M = self.M[start : start + len(chunk)]
            jv = vmap(lambda v, logits=logits: jvp(logits, (obj.theta,), (v,))[1])(V)  # (k, c, C)
            out.append(torch.einsum("irc,kic->kir", M, jv).reshape(len(V), -1))
            start += len(chunk)
        return torch.cat(out, dim=1)

    def rmatmul(self, Y: torch.Tensor) -> torch.Tensor:
        """(U_Sᵀ Yᵀ)ᵀ: (k, r) -> (k, p)."""
        k, R = len(Y), self.rank_per_point
        Y = Y.reshape(k, -1, R)
        out = torch.zeros(k, self.shape[1], device=Y.device, dtype=Y.dtype)
        start = 0
        for chunk, _, pullback in self._chunk_maps():
            M = self.M[start : start + len(chunk)]
            cot = torch.einsum("irc,kir->kic", M, Y[:, start : start + len(chunk)])  # (k, c, C)
            out += vmap(lambda c, pb=pullback: pb(c)[0])(cot)
            start += len(chunk)
        return out

    def dense(self) -> torch.Tensor:
        """U_S (r, p) by ``jacrev`` (memory r·p)."""
        return self.objective.gauss_newton_factors(self.indices, self.weights)


def largest_eigenvalue(
    op: Operator,
    dim: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> float:
    """Eigenvalue of largest magnitude of a symmetric operator (p,) -> (p,), by power iteration from a seeded
    random start; stops when the Rayleigh quotient changes by less than ``tol`` (relative)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device, dtype)
    v /= v.norm()
    value = 0.0
    for _ in range(max_iter):
        hv = op(v.unsqueeze(0))[0]
        new = float(v @ hv)
        norm = hv.norm()
        if not torch.isfinite(norm) or norm == 0:
            return new
        v = hv / norm
        if abs(new - value) <= tol * abs(new):
            return new
        value = new
    return value
