"""The r×r Gram K_S = U_S U_Sᵀ of the Gauss-Newton factor for many Hessian samples, from per-point pieces computed
once for the union of their points.

Notation of :mod:`influence_core.curvature.objective`: G_S = U_SᵀU_S + wd·I with U_S = stack_{i∈S} M_i J_i
((C−1) rows per point, r = m(C−1)), M_i = √w̃_i Λ_i^{1/2} Q_iᵀ (w̃ the sample's weights normalised to sum 1),
J_i = ∂logits_i/∂θ (C, p). The exact Woodbury solve (:class:`~influence_core.solvers.low_rank.LowRankInverse`)
needs K_S = U_S U_Sᵀ. The unweighted roots M_i⁰ = Λ_i^{1/2} Q_iᵀ and J_i do not depend on the sample, so for k
samples they are computed once for the union of their points (M_i = √w̃_i M_i⁰), and each sample only forms its
own Gram:

- **Linear layers** (every parameter of θ is the weight or bias of an ``nn.Linear`` applied once, to 2-D inputs:
  MLPs, logistic regression): J_i restricted to layer l is δ_il ⊗ [a_il, 1], with a_il the layer's input and
  δ_il = ∂logits_i/∂(layer output) (C, d_out). Then
      K_S[(i,r),(j,s)] = Σ_l (M_i δ_il)_r · (M_j δ_jl)_s · (a_il·a_jl + 1)
  costs r²·Σ_l d_out + m²·Σ_l d_in per sample instead of r²·p (digits MLP, m = 100: about 100x fewer flops).
  a and δ come from one forward pass and C backward passes over the union, on a private copy of the model (hooks
  on the shared model would fire in other threads' passes).
- **Any other model**: U_i⁰ = M_i⁰ J_i by ``vmap(jacrev)`` once for the union, then K_S = U_S U_Sᵀ by one matrix
  product per sample.

The Linear-layer pieces are checked against forward mode (J v for a random v on a few points) before use, so a
weight also used outside its module (tied weights) takes the generic path. Both return the same K_S as
``gauss_newton_factors(S, w) @ gauss_newton_factors(S, w).T`` (up to rounding;
``tests/influence/test_across_samples.py``),
together with the roots M_S (m, C−1, C) they used, which the solve's matrix-free
map must share (eigenvectors of a near-degenerate Λ_i are only defined up to rotation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from influence_core.curvature.objective import Objective
from influence_core.models.task import replica

__all__ = [
    "SampleGram",
    "sample_grams",
    "linear_layer_pieces",
    "LayerPiece",
    "gauss_newton_matrix",
    "SHARED_FACTOR_MAX_BYTES",
]

SHARED_FACTOR_MAX_BYTES = 512 * 1024**2
"""Memory allowed for the union's per-point factors U_i⁰ (generic path); above it each sample is done alone."""


class SampleGram:
    """K_S (r, r), the validated indices (m,) and the roots M_S (m, C−1, C) of one Hessian sample."""

    def __init__(
        self, indices: np.ndarray, weights: np.ndarray | None, roots: torch.Tensor, gram: torch.Tensor, method: str
    ):
        self.indices, self.weights, self.roots, self.gram, self.method = indices, weights, roots, gram, method


class LayerPiece(NamedTuple):
    """One ``nn.Linear`` layer's share of J: A (u, d_in [+1]) or None, D (u, C, d_out), and the names of its
    weight and bias in θ (None when not in θ)."""

    A: torch.Tensor | None
    D: torch.Tensor
    weight: str | None
    bias: str | None


def linear_layer_pieces(objective: Objective, indices: np.ndarray) -> list[LayerPiece] | None:
    """Per ``nn.Linear`` layer l holding parameters of θ: (A_l (u, d_in) or None when its weight is not in θ,
    D_l (u, C, d_out), names) with J_i|_l = D_l[i] ⊗ [A_l[i], 1] (bias column only when the bias is in θ; then the
    returned A carries the appended 1). None when θ is not made of such layers (use the generic path)."""
    model = objective.model
    chosen = set(objective.names)
    layers: list[tuple[str, nn.Linear, bool, bool]] = []
    covered: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            w, b = f"{name}.weight" if name else "weight", f"{name}.bias" if name else "bias"
            has_w, has_b = w in chosen, module.bias is not None and b in chosen
            if has_w or has_b:
                layers.append((name, module, has_w, has_b))
                covered |= {w} if has_w else set()
                covered |= {b} if has_b else set()
    if not layers or covered != chosen:
        return None
    try:
        private = replica(model)  # eval mode; the hooks below go on it, never on the caller's modules
    except TypeError:  # a model that cannot be copied takes the generic path
        return None
    modules = dict(private.named_modules())
    seen: dict[str, list] = {name: [] for name, *_ in layers}
    eps: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            seen[name].append(inputs[0].detach())
            return output + eps[name] if name in eps else output

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name, *_ in layers]
    A_out: list[list[torch.Tensor]] = [[] for _ in layers]
    D_out: list[list[torch.Tensor]] = [[] for _ in layers]
    C = objective.n_classes
    try:
        for chunk in objective.chunks(indices):
            x = objective.batch(chunk)[0]
            for name in seen:
                seen[name].clear()
            with torch.no_grad():  # shapes of the layer outputs
                shapes = {}
                probe = [
                    modules[name].register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
                    for name, *_ in layers
                ]
                try:
                    functional_call(
                        private, (objective.unflatten(objective.theta), objective.fixed, objective.buffers), (x,)
                    )
                finally:
                    for h in probe:
                        h.remove()
            if any(len(s) != 2 for s in shapes.values()) or any(len(v) != 1 for v in seen.values()):
                return None  # a layer applied twice or to (batch, seq, d) inputs: not a per-point outer product
            for name in seen:
                seen[name].clear()
            eps.clear()
            eps.update(
                {
                    name: torch.zeros(shapes[name], device=objective.device, dtype=objective.dtype, requires_grad=True)
                    for name, *_ in layers
                }
            )
            with torch.enable_grad():
                out = functional_call(
                    private, (objective.unflatten(objective.theta.detach()), objective.fixed, objective.buffers), (x,)
                )
                logits = objective.task.output(out)
                if logits.shape != (len(chunk), C):
                    return None
                tensors = [eps[name] for name, *_ in layers]
                per_class = [torch.autograd.grad(logits[:, c].sum(), tensors, retain_graph=c < C - 1) for c in range(C)]
            for li, (name, _, has_w, has_b) in enumerate(layers):
                D_out[li].append(torch.stack([g[li] for g in per_class], dim=1).detach())  # (c, C, d_out)
                if has_w:
                    a = seen[name][0].reshape(len(chunk), -1)
                    if has_b:
                        a = torch.cat([a, torch.ones(len(chunk), 1, device=a.device, dtype=a.dtype)], dim=1)
                    A_out[li].append(a)
            eps.clear()
    finally:
        for h in handles:
            h.remove()
    pieces = []
    for li, (name, _, has_w, has_b) in enumerate(layers):
        prefix = f"{name}." if name else ""
        pieces.append(
            LayerPiece(
                torch.cat(A_out[li]) if has_w else None,
                torch.cat(D_out[li]),
                f"{prefix}weight" if has_w else None,
                f"{prefix}bias" if has_b else None,
            )
        )
    return pieces if _pieces_reproduce_jvp(objective, indices, pieces) else None


def _pieces_reproduce_jvp(
    objective: Objective, indices: np.ndarray, pieces: list[LayerPiece], points: int = 16
) -> bool:
    """Check J v = Σ_l D_l (V_l A_l) against forward mode for a random v on a few points: catches what the hooks
    cannot see (a weight also used outside its module, tied weights), which then take the generic path."""
    from influence_core.curvature.objective import jvp

    idx = np.asarray(indices)[:points]
    x = objective.batch(idx)[0]
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(objective.n_params, generator=gen, dtype=torch.float64).to(objective.device, objective.dtype)
    exact = jvp(lambda th: objective.logits(th, x), (objective.theta,), (v,))[1]  # (k, C)
    parts = dict(zip(objective.names, torch.split(v, objective.numels)))
    approx = torch.zeros_like(exact)
    for A, D, w_name, b_name in pieces:
        d_out = D.shape[2]
        Vl = []
        if w_name is not None:
            Vl.append(parts[w_name].reshape(d_out, -1))
        if b_name is not None:
            Vl.append(parts[b_name].reshape(d_out, 1))
        Vl = torch.cat(Vl, dim=1)  # (d_out, d_in [+1])
        a = A[: len(idx)] if A is not None else torch.ones(len(idx), 1, device=D.device, dtype=D.dtype)
        approx += torch.einsum("kco,oa,ka->kc", D[: len(idx)], Vl, a)
    scale = float(exact.abs().max()) or 1.0
    tol = 1e-4 if objective.dtype == torch.float32 else 1e-9
    return float((approx - exact).abs().max()) <= tol * scale


def _normalised_weights(objective: Objective, indices: np.ndarray, weights: np.ndarray | None) -> torch.Tensor:
    return objective._weights(indices, weights).double()


def sample_grams(
    objective: Objective, samples: Sequence[tuple[np.ndarray, np.ndarray | None]], method: str = "auto"
) -> list[SampleGram]:
    """K_S = U_S U_Sᵀ for each sample (indices (m,), weights (m,) or None) of a Gauss-Newton objective, sharing the
    per-point pieces of the union of the samples' points (see the module doc). ``method``: "auto" (Linear-layer
    structure when it applies, else generic), "linear" (refuse with ValueError when it does not apply), "generic"."""
    if method not in ("auto", "linear", "generic"):
        raise ValueError(f"method must be 'auto', 'linear' or 'generic', got {method!r}")
    objective.task.require_gauss_newton()
    samples = [(objective.subset(idx), None if w is None else np.asarray(w, dtype=np.float64)) for idx, w in samples]
    union = np.unique(np.concatenate([idx for idx, _ in samples]))
    _, roots0 = objective.gauss_newton_roots(union, unweighted=True)  # (u, C−1, C)
    R = roots0.shape[1]
    pieces = None if method == "generic" else linear_layer_pieces(objective, union)
    if pieces is None and method == "linear":
        raise ValueError(
            "the Linear-layer Gram needs θ made only of nn.Linear weights/biases applied once to 2-D "
            "inputs; use method='generic'"
        )
    itemsize = torch.finfo(objective.dtype).bits // 8
    U0 = None
    if pieces is None and len(union) * R * objective.n_params * itemsize <= SHARED_FACTOR_MAX_BYTES:
        U0 = objective.gauss_newton_factors(union, unweighted=True).reshape(len(union), R, -1)  # (u, C−1, p)
    out = []
    for idx, w in samples:
        pos = np.searchsorted(union, idx)
        sw = _normalised_weights(objective, idx, w).sqrt().to(objective.dtype)  # (m,)
        roots = roots0[pos] * sw[:, None, None]  # (m, C−1, C)
        if pieces is not None:
            m = len(idx)
            K = torch.zeros(m, R, m, R, device=objective.device, dtype=objective.dtype)
            for A, D, _, _ in pieces:
                V = torch.bmm(roots, D[pos]).reshape(m * R, -1)  # (r, d_out)
                VV = (V @ V.T).view(m, R, m, R)
                if A is None:  # bias only: a·a + 1 → 1
                    K += VV
                else:
                    AA = A[pos] @ A[pos].T  # (m, m), bias 1 inside
                    K.addcmul_(VV, AA[:, None, :, None])
            K = K.view(m * R, m * R)
            how = "linear"
        else:
            if U0 is not None:
                U = (U0[pos] * sw[:, None, None]).reshape(len(idx) * R, -1)
            else:  # too many points to keep all factors: this sample's alone
                U = objective.gauss_newton_factors(idx, w)
            K = U @ U.T
            how = "generic"
        out.append(SampleGram(idx, w, roots, K, how))
    return out


def gauss_newton_matrix(
    objective: Objective, indices: object | None = None, weights: object | None = None
) -> torch.Tensor | None:
    """The dense G_S + wd·I (p, p) of a model made of ``nn.Linear`` layers, from the layer pieces (None when θ is
    not made of them: use ``Objective.hessian``). Block (l, l') = Σ_i (V_ilᵀ V_il') ⊗ (a_il a_il'ᵀ) with
    V_il = M_i δ_il (C−1, d_out): one matrix product over the points per block, 2·m·p² flops in all, instead of
    p HVPs over the sample (each a forward and a backward pass over the m points). Same matrix as
    ``objective.hessian(indices, weights, "gauss_newton")`` up to rounding."""
    idx, roots = objective.gauss_newton_roots(indices, weights)  # weighted, Σw̃ = 1
    pieces = linear_layer_pieces(objective, idx)
    if pieces is None:
        return None
    p, n_pts = objective.n_params, len(idx)
    offsets = dict(zip(objective.names, np.cumsum([0] + objective.numels[:-1]).tolist()))
    layout = []  # per layer: A with a ones column when needed, V (m, C−1, d_out), θ positions (d_out, d_in [+1])
    for A, D, w_name, b_name in pieces:
        d_out = D.shape[2]
        cols = []
        if w_name is not None:
            d_w = int(np.prod(objective.shapes[objective.names.index(w_name)])) // d_out
            cols.append(offsets[w_name] + np.arange(d_out)[:, None] * d_w + np.arange(d_w)[None, :])
        if b_name is not None:
            cols.append(offsets[b_name] + np.arange(d_out)[:, None])
        if A is None:  # bias only
            A = torch.ones(n_pts, 1, device=D.device, dtype=D.dtype)
        layout.append((A, torch.bmm(roots, D), np.concatenate(cols, axis=1)))
    G = torch.zeros(p, p, device=objective.device, dtype=objective.dtype)
    for A, V, pos in layout:
        for A2, V2, pos2 in layout:
            B = torch.bmm(V.transpose(1, 2), V2).reshape(n_pts, -1)  # (m, d_out·d_out')
            AA = (A[:, :, None] * A2[:, None, :]).reshape(n_pts, -1)  # (m, d_in·d_in')
            block = (B.T @ AA).reshape(V.shape[2], V2.shape[2], A.shape[1], A2.shape[1])
            block = block.permute(0, 2, 1, 3).reshape(pos.size, pos2.size)
            G[torch.as_tensor(pos.reshape(-1))[:, None], torch.as_tensor(pos2.reshape(-1))[None, :]] = block
    G.diagonal().add_(objective.weight_decay)
    return 0.5 * (G + G.T)
