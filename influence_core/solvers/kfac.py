"""K-FAC and EK-FAC: a block-diagonal Kronecker-factored curvature for ``nn.Linear`` and ``nn.Conv2d`` layers, fitted
on a Hessian sample, with a cached inverse.

Per layer l with weight W (d_out, d_in) (conv: d_in = c_in·kh·kw, the ``F.unfold`` patch) and bias b, the per-sample
gradient is D_i = Σ_t g_it a_itᵀ (d_out, d_in+1): a_it the layer input at position t with a 1 appended when the layer
has a bias (t runs over the T output positions of a conv, T = 1 for a linear layer on (c, d_in) inputs),
g_it = ∂ℓ_i/∂s_it the gradient of the loss at the pre-activation s = W a + b. With normalised sample weights
w_i (Σ w_i = 1) over the sample S and label cotangents r with coefficients c_r (see ``fisher``):

    A_l = Σ_i w_i Σ_t a_it a_itᵀ                         (d_in+1, d_in+1), = Q_A diag(λ_A) Q_Aᵀ
    G_l = Σ_i w_i Σ_r c_r Σ_t g_itr g_itrᵀ / T           (d_out, d_out),   = Q_G diag(λ_G) Q_Gᵀ
    K-FAC:   F_l ≈ G_l ⊗ A_l,  eigenvalues Λ[o, a] = λ_G[o] λ_A[a]       (Grosse & Martens 2016 for convs)
    EK-FAC:  Λ*[o, a] = Σ_i w_i Σ_r c_r ((Q_Gᵀ D_ir Q_A)[o, a])²        (George et al. 2018): the exact diagonal
             of the layer's Fisher block in the Kronecker eigenbasis Q_G ⊗ Q_A

``fisher`` sets the label cotangents ∂ℓ/∂z on the logits z (p = softmax(z)):
"true" (default): labels ỹ drawn from p with a seeded generator (``label_samples`` draws, c_r = 1/draws), the true
Fisher, equal in expectation to the Gauss-Newton matrix for softmax cross-entropy; "empirical": the true labels;
"gauss_newton": the exact expectation over ỹ, cotangents the C−1 rows of Λ^{1/2}Qᵀ for diag(p) − ppᵀ = QΛQᵀ (C−1
backward passes per chunk; deterministic). With one sample point and "gauss_newton", K-FAC of a linear layer equals
its exact Gauss-Newton block (no Kronecker approximation is made for a rank-one A).

Scale (the project's convention, :mod:`influence_core.curvature.objective`): the curvature approximated is the
Gauss-Newton
G_S = Σ w_i J_iᵀ(diag p_i − p_i p_iᵀ)J_i / Σ w_i + wd·I of the training loss (1/n)Σ CE + (wd/2)||θ||², so the
inverse applied to a layer block is Q (diag(Λ) + wd + δ_l)⁻¹ Qᵀ with Q = Q_G ⊗ Q_A. Damping δ: a number, or
"heuristic": per layer δ_l = 0.1 × mean(Λ_l) (Kronfluence's rule); the values used are recorded in ``damping_used``.

Parameters outside supported layers (BatchNorm, embeddings, a conv with groups > 1, ...) follow ``other``:
"error" (default) refuses and names them; "identity": their block is (wd + δ̄)·I (δ̄ the damping, or the mean of the
per-layer heuristic dampings), i.e. their gradient is only rescaled; "ignore": their block of the inverse is 0, so they
do not contribute to scores (Kronfluence's convention for modules it does not track).

Flat layout: parameters in the order of ``Objective.names`` (``model.named_parameters()``, trainable only), each
``reshape(-1)``; a layer's W and b are mapped to the columns [W | b] of D. :meth:`KFACInverse.solve` takes and returns
(k, p) batches like the project's other solvers. Factors are saved to ``.npz`` keyed by their configuration
(:mod:`influence_core.solvers.factor_io`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from influence_core.curvature.objective import EXACT_MAX_PARAMS, Objective
from influence_core.models.task import replica
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

__all__ = [
    "KFACInverse",
    "KFACError",
    "LayerBlock",
    "fit_kfac",
    "kfac_config",
    "layer_blocks",
    "KFAC_METHODS",
    "FISHER_TYPES",
    "OTHER_PARAMETERS",
    "HEURISTIC_DAMPING_SCALE",
]

KFAC_METHODS = ("kfac", "ekfac")
FISHER_TYPES = ("true", "empirical", "gauss_newton")
OTHER_PARAMETERS = ("error", "identity", "ignore")
HEURISTIC_DAMPING_SCALE = 0.1
FORMAT = "influence_core.solvers.kfac/1"
_SUBCHUNK_BYTES = 64 * 1024**2


class KFACError(ValueError):
    """The model or the request does not fit K-FAC (unsupported parameters, a layer used twice, bad options)."""


@dataclass(frozen=True)
class LayerBlock:
    """One Kronecker block: the module's name and kind, D's shape (d_out, d_in [+1 with bias]) and the flat slices
    [start, stop) of its weight and bias in the parameter vector."""

    module: str
    kind: str
    d_out: int
    d_in: int
    weight: tuple[int, int]
    bias: tuple[int, int] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "kind": self.kind,
            "d_out": self.d_out,
            "d_in": self.d_in,
            "weight": list(self.weight),
            "bias": None if self.bias is None else list(self.bias),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LayerBlock":
        return cls(
            d["module"],
            d["kind"],
            int(d["d_out"]),
            int(d["d_in"]),
            tuple(d["weight"]),
            None if d["bias"] is None else tuple(d["bias"]),
        )


def _unsupported_reason(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"a grouped convolution (groups={module.groups})"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r} (only 'zeros')"
        if isinstance(module.padding, str) and module.padding == "same":
            if any(d * (k - 1) % 2 for d, k in zip(module.dilation, module.kernel_size)):
                return "padding='same' with an even kernel (asymmetric padding)"
    return None


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0)
        return tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
    return tuple(module.padding)


def layer_blocks(objective: Objective) -> tuple[list[LayerBlock], list[tuple[str, int, int]], dict[str, nn.Module]]:
    """(blocks of the supported layers, other trainable parameters as (name, start, stop), modules by name)."""
    offsets: dict[str, tuple[int, int]] = {}
    start = 0
    for name, numel in zip(objective.names, objective.numels):
        offsets[name] = (start, start + numel)
        start += numel
    blocks: list[LayerBlock] = []
    modules: dict[str, nn.Module] = {}
    covered: set[str] = set()
    for mod_name, module in objective.model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or _unsupported_reason(module) is not None:
            continue
        prefix = f"{mod_name}." if mod_name else ""
        w_name, b_name = prefix + "weight", prefix + "bias"
        if w_name not in offsets:
            if module.weight.requires_grad:
                raise KFACError(
                    f"layer {mod_name!r} shares its weight with another module (tied weights); "
                    "K-FAC needs each weight to belong to one layer"
                )
            continue  # frozen weight: its bias (if trainable) is an "other" parameter
        has_bias = module.bias is not None and b_name in offsets
        if module.bias is not None and module.bias.requires_grad and b_name not in offsets:
            raise KFACError(f"layer {mod_name!r} shares its bias with another module (tied weights)")
        d_out = module.weight.shape[0]
        d_in = int(np.prod(module.weight.shape[1:])) + int(has_bias)
        kind = "linear" if isinstance(module, nn.Linear) else "conv2d"
        blocks.append(LayerBlock(mod_name, kind, d_out, d_in, offsets[w_name], offsets[b_name] if has_bias else None))
        modules[mod_name] = module
        covered.add(w_name)
        if has_bias:
            covered.add(b_name)
    others = [(name, *offsets[name]) for name in objective.names if name not in covered]
    return blocks, others, modules


def _describe_others(objective: Objective, others: list[tuple[str, int, int]]) -> str:
    owners = dict(objective.model.named_modules())
    parts = []
    for name, a, b in others:
        owner = owners.get(name.rpartition(".")[0])
        why = _unsupported_reason(owner) if owner is not None else None
        kind = type(owner).__name__ if owner is not None else "?"
        parts.append(f"{name} ({kind}{', ' + why if why else ''}, {b - a} numbers)")
    return ", ".join(parts)


def _sample_arrays(objective: Objective, sample: Any, weights: Any) -> tuple[np.ndarray, np.ndarray | None]:
    if weights is None and getattr(sample, "weights", None) is not None:
        weights = sample.weights  # a HessianSample carries its importance weights
    if sample is not None and hasattr(sample, "indices"):
        sample = sample.indices
    idx = objective.subset(None if sample is None else np.asarray(sample))
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    objective._weights(idx, w)  # validates the weights (shape, finite, >= 0, not all zero)
    return idx, w


def kfac_config(
    objective: Objective,
    sample: Any = None,
    weights: Any = None,
    *,
    method: str = "ekfac",
    fisher: str = "true",
    label_samples: int = 1,
    seed: int = 0,
    other: str = "error",
) -> dict[str, Any]:
    """The configuration the factors depend on (what their file key hashes): method, Fisher type and its label
    draws, the sample (indices, weights) and its data, the model's parameters θ, wd, ``other`` and the layout."""
    if method not in KFAC_METHODS:
        raise KFACError(f"unknown method {method!r}; choose one of {list(KFAC_METHODS)}")
    if fisher not in FISHER_TYPES:
        raise KFACError(f"unknown fisher {fisher!r}; choose one of {list(FISHER_TYPES)}")
    if other not in OTHER_PARAMETERS:
        raise KFACError(f"unknown other={other!r}; choose one of {list(OTHER_PARAMETERS)}")
    if isinstance(label_samples, bool) or int(label_samples) != label_samples or label_samples < 1:
        raise KFACError(f"label_samples must be a positive integer, got {label_samples!r}")
    idx, w = _sample_arrays(objective, sample, weights)
    chunk = torch.as_tensor(idx, device=objective.device)
    return {
        "method": method,
        "fisher": fisher,
        "label_samples": int(label_samples) if fisher == "true" else None,
        "seed": int(seed) if fisher == "true" else None,
        "m": int(len(idx)),
        "sample": fingerprint(idx, w if w is not None else "uniform"),
        "data": fingerprint(*objective.batch(chunk)),
        "model": fingerprint(objective.theta),
        "weight_decay": objective.weight_decay,
        "other": other,
        "layout": [[n, list(s)] for n, s in zip(objective.names, objective.shapes)],
    }


# --------------------------------------------------------------------------------------------------------------------
# Per-chunk statistics
# --------------------------------------------------------------------------------------------------------------------


def _activations(block: LayerBlock, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Layer inputs a (c, T, d_in) in float64, with the appended 1 for the bias."""
    if block.kind == "linear":
        a = x.reshape(x.shape[0], -1, x.shape[-1])
    else:
        a = F.unfold(x, module.kernel_size, module.dilation, _conv_padding(module), module.stride).transpose(1, 2)
    a = a.double()
    if block.bias is not None:
        a = torch.cat([a, torch.ones(*a.shape[:2], 1, dtype=a.dtype, device=a.device)], dim=2)
    return a


def _output_grads(block: LayerBlock, g: torch.Tensor) -> torch.Tensor:
    """Pre-activation gradients (c, T, d_out) in float64."""
    if block.kind == "linear":
        return g.reshape(g.shape[0], -1, g.shape[-1]).double()
    return g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2).double()


def _cotangents(
    logits: torch.Tensor, y: torch.Tensor, fisher: str, label_samples: int, gen: torch.Generator
) -> list[tuple[torch.Tensor, float]]:
    """Label cotangents ∂ℓ/∂z (c, C) on the logits and their coefficients c_r (see the module doc)."""
    z = logits.detach()
    p = torch.softmax(z.double(), dim=-1)
    C = p.shape[1]
    if fisher == "empirical":
        return [((p - F.one_hot(y, C).double()).to(z.dtype), 1.0)]
    if fisher == "true":
        draws = torch.multinomial(p.cpu(), label_samples, replacement=True, generator=gen).to(z.device)
        return [
            ((p - F.one_hot(draws[:, s], C).double()).to(z.dtype), 1.0 / label_samples) for s in range(label_samples)
        ]
    lam, Q = torch.linalg.eigh(torch.diag_embed(p) - p[:, :, None] * p[:, None, :])  # ascending, lam[:, 0] ≈ 0
    M = lam[:, 1:].clamp_min(0).sqrt()[:, :, None] * Q[:, :, 1:].transpose(1, 2)  # (c, C−1, C)
    return [(M[:, r].to(z.dtype), 1.0) for r in range(C - 1)]


def _chunk_statistics(
    model: nn.Module,
    blocks: list[LayerBlock],
    modules: dict[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    fisher: str,
    label_samples: int,
    gen: torch.Generator,
    output: Any = None,
) -> tuple[list[torch.Tensor], list[list[tuple[torch.Tensor, float]]]]:
    """For one chunk: activations a per block and, per block, the (g (c, T, d_out), c_r) of every cotangent."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if name in inputs:
                raise KFACError(
                    f"layer {name!r} is applied more than once per forward pass; K-FAC needs each "
                    "layer used once (use other='identity' after freezing it, or restructure the model)"
                )
            inputs[name] = args[0].detach()
            outputs[name] = out

        return hook

    handles = [modules[b.module].register_forward_hook(make_hook(b.module)) for b in blocks]
    try:
        with torch.enable_grad():
            out = model(x)  # a private eval-mode replica (dropout off), as the objective evaluates it
            logits = out if output is None else output(out)
    finally:
        for h in handles:
            h.remove()
    missing = [b.module for b in blocks if b.module not in outputs]
    if missing:
        raise KFACError(f"layers {missing} were not used in the forward pass; freeze them (requires_grad=False)")
    acts = [_activations(b, modules[b.module], inputs[b.module]) for b in blocks]
    outs = [outputs[b.module] for b in blocks]
    grads: list[list[tuple[torch.Tensor, float]]] = [[] for _ in blocks]
    cots = _cotangents(logits, y, fisher, label_samples, gen)
    for r, (cot, coef) in enumerate(cots):
        gs = torch.autograd.grad(logits, outs, grad_outputs=cot, retain_graph=r < len(cots) - 1, allow_unused=True)
        for l, (b, g) in enumerate(zip(blocks, gs)):
            if g is None:
                raise KFACError(f"layer {b.module!r} does not influence the logits; freeze it (requires_grad=False)")
            grads[l].append((_output_grads(b, g), coef))
    return acts, grads


# --------------------------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------------------------


def fit_kfac(
    objective: Objective,
    sample: Any = None,
    weights: Any = None,
    *,
    method: str = "ekfac",
    fisher: str = "true",
    damping: float | str = 0.0,
    label_samples: int = 1,
    seed: int = 0,
    other: str = "error",
    chunk_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> "KFACInverse":
    """Fit K-FAC (``method="kfac"``) or EK-FAC (``"ekfac"``) factors of ``objective``'s model on the sample.

    ``sample``: a :class:`~influence_core.sampling.samplers.HessianSample` (its weights are used unless ``weights`` is
    given), an index array, or None (all n points). ``fisher``, ``damping`` and ``other``: see the module doc;
    ``seed`` seeds the label draws of ``fisher="true"`` (``label_samples`` per point). ``chunk_size``: points per
    forward/backward pass (default the objective's). ``cache_dir``: load the factors from
    ``cache_dir/<method>-<key>.npz`` when that file exists for this configuration, else fit and save them there.
    Two passes over the sample for EK-FAC (factors, then the eigenvalue correction), one for K-FAC.
    """
    config = kfac_config(
        objective, sample, weights, method=method, fisher=fisher, label_samples=label_samples, seed=seed, other=other
    )
    _check_damping_spec(damping)
    blocks, others, modules = layer_blocks(objective)
    if not blocks:
        raise KFACError(
            "the model has no trainable nn.Linear or nn.Conv2d layer; K-FAC has nothing to factor "
            "(use solver='cg' or 'arnoldi')"
        )
    if others and other == "error":
        raise KFACError(
            f"K-FAC supports nn.Linear and nn.Conv2d (groups=1) layers only; these trainable parameters "
            f"are elsewhere: {_describe_others(objective, others)}. Pass other='identity' (their block is "
            "(wd + damping)·I) or other='ignore' (they do not contribute to scores), or freeze them"
        )
    if cache_dir is not None:
        path = Path(cache_dir) / f"{method}-{config_key(config)}.npz"
        if path.is_file():
            return KFACInverse.load(path, objective, damping=damping)
    idx, w_np = _sample_arrays(objective, sample, weights)
    w_all = objective._weights(idx, w_np).double()
    size = int(chunk_size or objective.chunk_size)
    start = time.perf_counter()
    model = replica(objective.model)  # the hooks go on a private eval-mode copy, never on the caller's modules
    private_modules = dict(model.named_modules())
    modules = {name: private_modules[name] for name in modules}
    d = [(b.d_in, b.d_out) for b in blocks]
    A = [torch.zeros(di, di, dtype=torch.float64, device=objective.device) for di, _ in d]
    G = [torch.zeros(do, do, dtype=torch.float64, device=objective.device) for _, do in d]

    def passes():
        gen = torch.Generator().manual_seed(int(seed))  # the same label draws in both passes
        for s, chunk in zip(range(0, len(idx), size), objective.chunks(idx, size)):
            x, yb = objective.batch(chunk)
            yield (
                w_all[s : s + len(chunk)],
                _chunk_statistics(model, blocks, modules, x, yb, fisher, label_samples, gen, objective.task.output),
            )

    for w, (acts, grads) in passes():
        for l, a in enumerate(acts):
            wa = a * w[:, None, None]
            A[l] += wa.reshape(-1, a.shape[2]).T @ a.reshape(-1, a.shape[2])
            T = a.shape[1]
            for g, coef in grads[l]:
                wg = g * (w[:, None, None] * coef / T)
                G[l] += wg.reshape(-1, g.shape[2]).T @ g.reshape(-1, g.shape[2])
    eig = []
    for Al, Gl in zip(A, G):
        la, qa = torch.linalg.eigh(0.5 * (Al + Al.T))
        lg, qg = torch.linalg.eigh(0.5 * (Gl + Gl.T))
        # contiguous copies: the solve then runs the same kernels on fitted and on reloaded factors (bitwise equal)
        eig.append((qa.contiguous(), la.clamp_min(0), qg.contiguous(), lg.clamp_min(0)))
    if method == "kfac":
        lams = [torch.outer(lg, la) for qa, la, qg, lg in eig]
    else:
        lams = [torch.zeros(do, di, dtype=torch.float64, device=objective.device) for di, do in d]
        for w, (acts, grads) in passes():
            for l, a in enumerate(acts):
                qa, _, qg, _ = eig[l]
                at = a @ qa  # (c, T, d_in)
                if a.shape[1] == 1:
                    s2 = sum(coef * (g[:, 0] @ qg) ** 2 for g, coef in grads[l])  # (c, d_out)
                    lams[l] += (s2 * w[:, None]).T @ (at[:, 0] ** 2)
                    continue
                step = max(1, int(_SUBCHUNK_BYTES // (8 * a.shape[2] * blocks[l].d_out)))
                for g, coef in grads[l]:
                    gt = g @ qg  # (c, T, d_out)
                    for i in range(0, len(a), step):
                        Dt = torch.einsum("ito,ita->ioa", gt[i : i + step], at[i : i + step])
                        lams[l] += coef * torch.einsum("i,ioa->oa", w[i : i + step], Dt**2)
    factors = [{"qa": qa, "la": la, "qg": qg, "lg": lg, "lam": lam} for (qa, la, qg, lg), lam in zip(eig, lams)]
    inverse = KFACInverse(config, blocks, others, factors, damping, fit_seconds=time.perf_counter() - start)
    inverse.covariances = [{"A": Al, "G": Gl} for Al, Gl in zip(A, G)]
    if cache_dir is not None:
        inverse.save(path)
    return inverse


def _check_damping_spec(damping: float | str) -> None:
    if isinstance(damping, str):
        if damping != "heuristic":
            raise KFACError(f"damping must be a number >= 0 or 'heuristic', got {damping!r}")
        return
    if isinstance(damping, bool) or damping is None or not math.isfinite(damping) or damping < 0:
        raise KFACError(f"damping must be a finite number >= 0 or 'heuristic', got {damping!r}")


# --------------------------------------------------------------------------------------------------------------------
# The fitted inverse
# --------------------------------------------------------------------------------------------------------------------


class KFACInverse:
    """The fitted (EK-)K-FAC approximation of (G_S + δI)⁻¹, block-diagonal by layer; ``solve(B)`` for (k, p) batches.

    Attributes: ``config`` (what the factors depend on; ``key`` hashes it), ``blocks`` (:class:`LayerBlock` per
    layer), ``others`` (parameters outside the blocks), ``factors`` (per block: ``qa``, ``la``, ``qg``, ``lg``, the
    eigenpairs of A and G, and ``lam`` (d_out, d_in), the eigenvalues used: λ_G λ_Aᵀ for K-FAC, Λ* for EK-FAC),
    ``damping`` (the spec), ``damping_used`` (δ per block, and for ``others``), ``fit_seconds``.
    After :func:`fit_kfac` (not after :meth:`load`) ``covariances`` holds the raw A and G per block.
    """

    def __init__(
        self,
        config: dict[str, Any],
        blocks: list[LayerBlock],
        others: list[tuple[str, int, int]],
        factors: list[dict[str, torch.Tensor]],
        damping: float | str = 0.0,
        *,
        fit_seconds: float = 0.0,
    ):
        _check_damping_spec(damping)
        self.config = config
        self.blocks = blocks
        self.others = [tuple(o) for o in others]
        self.factors = factors
        self.fit_seconds = fit_seconds
        self.covariances: list[dict[str, torch.Tensor]] | None = None
        self.weight_decay = float(config["weight_decay"])
        self.other = config["other"]
        self.n_params = sum(len(range(*b.weight)) + (len(range(*b.bias)) if b.bias else 0) for b in blocks) + sum(
            b - a for _, a, b in self.others
        )
        self.damping = damping
        if damping == "heuristic":
            layer = [HEURISTIC_DAMPING_SCALE * float(f["lam"].mean()) for f in factors]
        else:
            layer = [float(damping)] * len(blocks)
        other_damping = float(np.mean(layer)) if damping == "heuristic" else float(damping)
        self.damping_used = {"layers": {b.module: d for b, d in zip(blocks, layer)}, "others": other_damping}
        self._layer_damping = layer
        for b, f, dl in zip(blocks, factors, layer):
            if float((f["lam"] + self.weight_decay + dl).min()) <= 0:
                raise SolverError(
                    f"the {config['method']} curvature of layer {b.module!r} has zero eigenvalues and "
                    f"weight decay + damping = {self.weight_decay + dl:g}: pass damping > 0 "
                    "(e.g. 0.01 or 'heuristic')"
                )
        if self.others and self.other == "identity" and self.weight_decay + other_damping <= 0:
            raise SolverError(
                "other='identity' needs weight decay + damping > 0 for the parameters outside the "
                "K-FAC layers; pass damping > 0"
            )

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def key(self) -> str:
        """16 hex digits of the configuration (damping excluded: the factors do not depend on it)."""
        return config_key(self.config)

    def with_damping(self, damping: float | str) -> "KFACInverse":
        """The same factors with another damping (no refit)."""
        inv = KFACInverse(self.config, self.blocks, self.others, self.factors, damping, fit_seconds=self.fit_seconds)
        inv.covariances = self.covariances
        return inv

    # ------------------------------------------------------------------ algebra
    def _layer_matrix(self, B: torch.Tensor, b: LayerBlock) -> torch.Tensor:
        """The columns of layer b in B (k, p) as D (k, d_out, d_in) = [W | b]."""
        W = B[:, b.weight[0] : b.weight[1]].reshape(len(B), b.d_out, -1)
        if b.bias is None:
            return W
        return torch.cat([W, B[:, b.bias[0] : b.bias[1]].unsqueeze(-1)], dim=2)

    def _write_layer(self, X: torch.Tensor, b: LayerBlock, D: torch.Tensor) -> None:
        nw = b.d_in - (b.bias is not None)
        X[:, b.weight[0] : b.weight[1]] = D[:, :, :nw].reshape(len(X), -1)
        if b.bias is not None:
            X[:, b.bias[0] : b.bias[1]] = D[:, :, nw]

    def _apply(self, B: torch.Tensor, inverse: bool, damping: bool = True) -> torch.Tensor:
        if B.ndim == 1:
            B = B.unsqueeze(0)
        if B.ndim != 2 or B.shape[1] != self.n_params:
            raise ValueError(
                f"right-hand sides must be (k, {self.n_params}) (or ({self.n_params},)), got shape {tuple(B.shape)}"
            )
        if not torch.isfinite(B).all():
            raise ValueError("right-hand side contains NaN or inf (check the model's outputs and the data)")
        Bd = B.double()
        X = torch.zeros_like(Bd)
        for b, f, dl in zip(self.blocks, self.factors, self._layer_damping):
            qa, qg = f["qa"].to(Bd.device), f["qg"].to(Bd.device)
            shift = self.weight_decay + (dl if damping else 0.0)
            Dt = qg.T @ self._layer_matrix(Bd, b) @ qa  # (k, d_out, d_in) in the eigenbasis
            lam = f["lam"].to(Bd.device) + shift
            Dt = Dt / lam if inverse else Dt * lam
            self._write_layer(X, b, qg @ Dt @ qa.T)
        if self.other == "identity":
            shift = self.weight_decay + (self.damping_used["others"] if damping else 0.0)
            for _, a, e in self.others:
                X[:, a:e] = Bd[:, a:e] / shift if inverse else Bd[:, a:e] * shift
        return X.to(B.dtype)

    def solve(self, B: torch.Tensor) -> SolveResult:
        """X (k, p) = (Ĝ_S + wd·I + δI)⁻¹ bᵀ for each row b of B (k, p) or (p,), Ĝ_S the (EK-)K-FAC curvature."""
        start = time.perf_counter()
        X = self._apply(B, inverse=True)
        damping = float(np.mean(self._layer_damping)) if self.damping == "heuristic" else float(self.damping)
        return SolveResult(
            X,
            self.method,
            0,
            True,
            damping,
            seconds=time.perf_counter() - start,
            info={
                "factor_seconds": self.fit_seconds,
                "inverse": self.method,
                "fisher": self.config["fisher"],
                "damping_rule": self.damping,
                "layer_damping": dict(self.damping_used["layers"]),
                "key": self.key,
            },
        )

    def matmul(self, B: torch.Tensor, damping: bool = False) -> torch.Tensor:
        """(Ĝ_S + wd·I [+ δI]) B for B (k, p): the approximated curvature itself (``other="ignore"`` blocks are 0)."""
        return self._apply(B, inverse=False, damping=damping)

    def dense(self, damping: bool = False) -> torch.Tensor:
        """The approximated curvature (p, p), Ĝ_S + wd·I [+ δI] (small models only)."""
        if self.n_params > EXACT_MAX_PARAMS:
            raise ValueError(f"a dense {self.n_params}² matrix is too large; use matmul/solve")
        eye = torch.eye(self.n_params, dtype=torch.float64, device=self.factors[0]["qa"].device)
        return self.matmul(eye, damping)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the factors to ``path`` (.npz; a directory: ``<dir>/<method>-<key>.npz``) and return the path."""
        path = save_path(path, f"{self.method}-{self.key}")
        arrays = {f"{i}.{name}": t.detach().cpu().numpy() for i, f in enumerate(self.factors) for name, t in f.items()}
        header = {
            "config": self.config,
            "key": self.key,
            "blocks": [b.to_dict() for b in self.blocks],
            "others": [list(o) for o in self.others],
            "damping": self.damping,
            "damping_used": self.damping_used,
            "fit_seconds": self.fit_seconds,
        }
        return write_factor_file(path, FORMAT, header, arrays)

    @classmethod
    def load(
        cls, path: str | os.PathLike, objective: Objective | None = None, *, damping: float | str | None = None
    ) -> "KFACInverse":
        """Factors saved by :meth:`save`. With ``objective``, the file must have been fitted for its model
        (same parameter layout, parameters θ and weight decay), else :class:`FactorFileError`. ``damping``: use
        this damping instead of the saved one."""
        header, arrays = read_factor_file(path, FORMAT)
        try:
            config = header["config"]
            blocks = [LayerBlock.from_dict(d) for d in header["blocks"]]
            others = [tuple(o) for o in header["others"]]
            factors = []
            for i, b in enumerate(blocks):
                f = {name: torch.as_tensor(arrays[f"{i}.{name}"]) for name in ("qa", "la", "qg", "lg", "lam")}
                shapes = {
                    "qa": (b.d_in, b.d_in),
                    "la": (b.d_in,),
                    "qg": (b.d_out, b.d_out),
                    "lg": (b.d_out,),
                    "lam": (b.d_out, b.d_in),
                }
                if any(tuple(f[k].shape) != s for k, s in shapes.items()):
                    raise FactorFileError(
                        f"{str(path)!r}: factor shapes of layer {b.module!r} do not match its "
                        "recorded layout; the file is corrupt, fit again"
                    )
                factors.append(f)
            if config_key(config) != header["key"]:
                raise FactorFileError(
                    f"{str(path)!r}: the configuration does not match its key; the file was edited or is corrupt"
                )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, FactorFileError):
                raise
            raise FactorFileError(
                f"{str(path)!r} has an incomplete or corrupt header/arrays ({err!r}); fit the factors again"
            ) from err
        if objective is not None:
            check_fitted_for(path, config, objective, "the factors")
        inv = cls(
            config,
            blocks,
            others,
            factors,
            header["damping"] if damping is None else damping,
            fit_seconds=float(header.get("fit_seconds", 0.0)),
        )
        if objective is not None:
            for f in inv.factors:
                for k in f:
                    f[k] = f[k].to(objective.device)
        return inv


# --------------------------------------------------------------------------------------------------------------------
# The registry's "kfac" and "ekfac" solvers
# --------------------------------------------------------------------------------------------------------------------

DAMPING_RULES = ("fixed", "heuristic")


def _registry_fit(method: str):
    def fit(
        objective: Objective,
        indices: np.ndarray | None,
        weights: np.ndarray | None,
        damping: float,
        curvature: str,
        *,
        fisher: str = "true",
        damping_rule: str = "fixed",
        label_samples: int = 1,
        seed: int = 0,
        other: str = "error",
        factor_file: str | os.PathLike | None = None,
    ) -> Any:
        """Fit (EK-)K-FAC factors on the sample; options: ``fisher`` ("true" labels drawn from the model with
        ``seed``, "empirical" true labels, "gauss_newton" the exact expectation), ``damping_rule`` ("fixed": the
        damping δ; "heuristic": per layer 0.1 × mean eigenvalue instead), ``label_samples``, ``other`` (parameters
        outside Linear/Conv2d: "error", "identity", "ignore"), ``factor_file`` (a .npz path or a directory: reuse
        the saved factors of this configuration, else fit and save them there)."""
        from influence_core.solvers.factor_io import load_or_fit
        from influence_core.solvers.registry import FactorFit

        if curvature != "gauss_newton":
            raise KFACError(
                f"solver {method!r} approximates the Gauss-Newton (Fisher) matrix, which it factors "
                f"layer by layer; curvature={curvature!r} is not available. Pass "
                "curvature='gauss_newton', or use solver 'arnoldi', 'cg' or 'exact' for the Hessian"
            )
        if damping_rule not in DAMPING_RULES:
            raise KFACError(f"damping_rule must be one of {list(DAMPING_RULES)}, got {damping_rule!r}")
        spec: float | str = "heuristic" if damping_rule == "heuristic" else float(damping)
        config = kfac_config(
            objective,
            indices,
            weights,
            method=method,
            fisher=fisher,
            label_samples=label_samples,
            seed=seed,
            other=other,
        )
        inverse, where = load_or_fit(
            factor_file,
            f"{method}-{config_key(config)}",
            config,
            lambda path: KFACInverse.load(path, objective, damping=spec),
            lambda: fit_kfac(
                objective,
                indices,
                weights,
                method=method,
                fisher=fisher,
                damping=spec,
                label_samples=label_samples,
                seed=seed,
                other=other,
            ),
        )
        used = float(np.mean(inverse._layer_damping)) if spec == "heuristic" else float(damping)
        options = {
            "fisher": fisher,
            "damping_rule": damping_rule,
            "label_samples": label_samples,
            "seed": seed,
            "other": other,
            "factor_file": None if factor_file is None else str(factor_file),
        }
        info = {
            "inverse": method,
            "fisher": fisher,
            "damping_rule": damping_rule,
            "layer_damping": dict(inverse.damping_used["layers"]),
            "key": inverse.key,
            "factor_seconds": inverse.fit_seconds,
            "layers": len(inverse.blocks),
            "other_parameters": [name for name, _, _ in inverse.others],
            **where,
        }
        return FactorFit(inverse, objective, method, indices, weights, used, curvature, options, info=info)

    return fit


def _register() -> None:
    from influence_core.solvers.registry import register_solver

    register_solver(
        "kfac",
        _registry_fit("kfac"),
        description="K-FAC: Kronecker-factored Gauss-Newton/Fisher per Linear/Conv2d layer (cached "
        "eigendecompositions)",
    )
    register_solver(
        "ekfac",
        _registry_fit("ekfac"),
        description="EK-FAC: K-FAC eigenbasis with the eigenvalues refitted on the sample",
    )


_register()
