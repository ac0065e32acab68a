"""Deterministic training of the training objective used everywhere in this package:

    L(θ) = (1/n) Σ_i w_i · CE(f_θ(x_i), y_i) + (wd/2) · ||θ||²      (w_i = 1 unless sample weights are given)

Mini-batch Adam (seeded shuffling) followed by a full-batch L-BFGS "polish" that drives the full objective to a
stationary point; logistic regression uses L-BFGS alone and reaches the optimum (needed by leave-one-out checks).
The weight decay is recorded on the model (``model.weight_decay``) so influence uses the same objective.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from influence_core.checks import check_int, check_real, check_seed
from influence_core.data.datasets import Dataset
from influence_core.models.zoo import ARCHITECTURES, build_model, model_device_dtype, predict_logits
from influence_core.progress import Progress

__all__ = ["TrainingConfig", "train_model", "fit_full_batch", "objective", "Progress", "accuracy"]

"""Progress callback: ``progress(fraction_done in [0, 1], message)``."""


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainingConfig:
    """Training settings (all recorded with the model).

    arch: "logreg", "mlp" or "cnn". seed: fixes initialisation and batch order. epochs/batch_size/lr: Adam phase
    (ignored for logreg). weight_decay: wd in the objective above. hidden: MLP widths. polish_steps: L-BFGS
    iterations on the full objective after Adam (logreg: the whole fit), run in steps of 20 iterations, so a
    number that is not a multiple of 20 is rounded up to one (25 runs 40). dtype: "float32" or "float64".
    grad_tol: stationarity target: when the full-batch gradient norm ||∇L(θ)|| is still above it after
    ``polish_steps``, L-BFGS continues up to ``max_polish_steps`` iterations in all (influence functions assume
    ∇L(θ̂) = 0). The final norm and whether the target was reached are in ``model.training_report``.
    lr_schedule: "constant" (the default) or "cosine": the Adam learning rate decays from ``lr`` to 0 along
    half a cosine over all mini-batch steps, lr_t = lr·(1 + cos(π t/T))/2, which ends Adam much closer to a
    minimum, so the full-batch polish needs fewer iterations (the app's MNIST-5k CNN recipe, README).
    width: base width of ``resnet18`` (64 = the standard ResNet-18). ``resnet18`` is not polished unless
    ``polish_steps`` is given: full-batch L-BFGS puts the whole training set through the network in one graph
    (mnist5k on 2 CPU cores: minutes and gigabytes per gradient, docs/RESNET18.md); its report then says
    ``polish: "skipped ..."`` and the gradient norm is NaN (not computed). The polish runs in eval mode, the mode in
    which the engine evaluates the model (BatchNorm on running statistics).
    """

    arch: str = "mlp"
    seed: int = 0
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-3
    hidden: tuple[int, ...] = (64,)
    polish_steps: int = 100
    dtype: str = "float32"
    grad_tol: float = 1e-3
    max_polish_steps: int = 2000
    lr_schedule: str = "constant"
    width: int = 64
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {list(ARCHITECTURES)}")
        check_seed("seed", self.seed)
        check_real("weight_decay", self.weight_decay, 0)
        check_real("lr (learning rate)", self.lr, 0, low_open=True)
        check_int("epochs", self.epochs, 0, MAX_EPOCHS)
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("polish_steps", self.polish_steps, 0, MAX_POLISH_STEPS)
        check_int("max_polish_steps", self.max_polish_steps, 0, MAX_POLISH_STEPS)
        check_real("grad_tol", self.grad_tol, 0, low_open=True)
        check_int("width", self.width, 1, MAX_WIDTH)
        if not isinstance(self.hidden, tuple) or not self.hidden:
            raise ValueError(f"hidden must be a non-empty tuple of layer widths, got {self.hidden!r}")
        for h in self.hidden:
            check_int("hidden (each layer width)", h, 1, MAX_WIDTH)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")


MAX_EPOCHS = 100_000
MAX_BATCH = 10**8
MAX_POLISH_STEPS = 1_000_000
MAX_WIDTH = 65_536
"""Bounds of the training budget and sizes (far above any recipe here; they stop a typo from running for days)."""


def objective(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    sample_weight: torch.Tensor | None = None,
    n_total: int | None = None,
) -> torch.Tensor:
    """(1/n_total) Σ w_i CE_i + (wd/2)||θ||²; ``n_total`` defaults to len(X) (set it to the full n for batches of
    a weighted sum)."""
    losses = F.cross_entropy(model(X), y, reduction="none")
    if sample_weight is not None:
        losses = losses * sample_weight
    n = len(X) if n_total is None else n_total
    reg = sum((p * p).sum() for p in model.parameters())
    return losses.sum() / n + 0.5 * weight_decay * reg


FULL_BATCH_MAX_VALUES = 1_000_000
"""Above this many input values (rows x features) the full-batch objective is evaluated in chunks of about
``CHUNK_VALUES`` values with the gradients accumulated: the same objective and gradient up to float rounding, and
faster for large inputs such as the MNIST-5k CNN's, because the activations of one chunk stay in the CPU caches.
Smaller inputs (digits, MNIST-1D) keep the single pass, so their models are unchanged bit for bit."""
CHUNK_VALUES = 200_000


def _chunk_rows(X: torch.Tensor) -> int:
    per_row = max(1, X[0].numel()) if len(X) else 1
    return len(X) if X.numel() <= FULL_BATCH_MAX_VALUES else max(1, CHUNK_VALUES // per_row)


def full_objective_backward(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, weight_decay: float, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The full objective (1/n)Σ w_i CE_i + (wd/2)||θ||² (detached scalar), with its gradient ACCUMULATED into the
    parameters' ``.grad`` (zero them first), in chunks of rows for large inputs (see ``FULL_BATCH_MAX_VALUES``)."""
    n, rows = len(X), _chunk_rows(X)
    if rows >= n:
        loss = objective(model, X, y, weight_decay, sample_weight)
        loss.backward()
        return loss.detach()
    total = torch.zeros((), dtype=X.dtype, device=X.device)
    for i in range(0, n, rows):
        losses = F.cross_entropy(model(X[i : i + rows]), y[i : i + rows], reduction="none")
        if sample_weight is not None:
            losses = losses * sample_weight[i : i + rows]
        part = losses.sum() / n
        part.backward()
        total += part.detach()
    reg = 0.5 * weight_decay * sum((p * p).sum() for p in model.parameters())
    if torch.is_tensor(reg) and reg.requires_grad:
        reg.backward()
    return total + (reg.detach() if torch.is_tensor(reg) else reg)


def fit_full_batch(
    model: nn.Module,
    X: Any,
    y: Any,
    weight_decay: float,
    *,
    sample_weight: Any | None = None,
    max_iter: int = 500,
    tol: float = 1e-9,
    progress: Progress | None = None,
    lbfgs_tolerance_grad: float | None = None,
) -> dict[str, float]:
    """Minimise the full objective with L-BFGS (strong Wolfe line search), in place.

    ``sample_weight`` (n,) multiplies each loss term; the mean still divides by n (so weight 0 removes a point
    exactly as the influence convention assumes). Returns the final objective and gradient norm. Stops when the
    gradient's 2-norm is below ``tol``; torch's L-BFGS also stops inside a step when the gradient's max-abs entry
    is below ``lbfgs_tolerance_grad`` (default ``tol``).
    """
    device, dtype = model_device_dtype(model)

    def on_device(a: Any, dtype: torch.dtype) -> torch.Tensor:  # tensors on any device: no numpy round trip
        return (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(device=device, dtype=dtype)

    X, y = on_device(X, dtype), on_device(y, torch.long)
    w = None if sample_weight is None else on_device(sample_weight, dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=20,
        history_size=50,
        tolerance_grad=tol if lbfgs_tolerance_grad is None else lbfgs_tolerance_grad,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    outer = max(1, int(np.ceil(max_iter / 20)))
    evaluations = [0, 0]  # [outer step, evaluations in it]

    def closure() -> torch.Tensor:
        # a progress point per evaluation of the full objective (not only per 20-iteration step): a cancel
        # (influence_core.progress.cancellable) then stops an MNIST-5k CNN polish within one pass over the data
        if progress and evaluations[1]:
            progress(
                (evaluations[0] + min(evaluations[1] / 25, 1.0)) / outer,
                f"L-BFGS: step {evaluations[0] + 1}/{outer}, evaluation {evaluations[1] + 1}",
            )
        evaluations[1] += 1
        opt.zero_grad()
        return full_objective_backward(model, X, y, weight_decay, w)

    for k in range(outer):
        evaluations[:] = [k, 0]
        opt.step(closure)
        gnorm = torch.sqrt(sum((p.grad**2).sum() for p in params)).item()
        if progress:
            progress((k + 1) / outer, f"L-BFGS: grad norm {gnorm:.2e}")
        if gnorm < tol:
            break
    with torch.no_grad():
        loss = objective(model, X, y, weight_decay, w).item()
    model.zero_grad(set_to_none=True)
    return {"objective": loss, "grad_norm": gnorm}


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss or weights; the message names the learning rate and what to change."""


def _diverged(what: str, cfg: TrainingConfig) -> TrainingDivergedError:
    return TrainingDivergedError(
        f"training diverged: {what} (learning rate lr={cfg.lr:g}, weight_decay="
        f"{cfg.weight_decay:g}); lower the learning rate (e.g. lr={cfg.lr / 10:g}) and retry"
    )


def _full_objective_record(model: nn.Module, X: torch.Tensor, y: torch.Tensor, weight_decay: float) -> dict:
    """The full objective and its gradient norm at the model's current parameters (its own dtype)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = objective(model, X, y, weight_decay)
    grads = torch.autograd.grad(loss, params)
    return {"objective": float(loss.item()), "grad_norm": float(torch.sqrt(sum((g * g).sum() for g in grads)))}


def accuracy(model: nn.Module, X: Any, y: Any) -> float:
    """Fraction of correct argmax predictions."""
    return float(np.mean(predict_logits(model, X).argmax(1) == np.asarray(y)))


def _check_device(device: Any) -> torch.device:
    """A torch device that exists here (not 'meta'); refused in one line otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None
    if dev.type == "meta":
        raise ValueError("device 'meta' holds no data; train on 'cpu' (or an available accelerator)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this torch has no CUDA device available; use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def train_model(
    dataset: Dataset,
    arch: str = "mlp",
    seed: int = 0,
    *,
    progress: Progress | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    device: str | torch.device = "cpu",
    **settings: Any,
) -> nn.Module:
    """Train a classifier on ``dataset`` deterministically (same seed, same weights on the same machine).

    ``settings`` are the fields of :class:`TrainingConfig` (epochs, batch_size, lr, weight_decay, hidden,
    polish_steps, dtype). Returns the model in eval mode with ``model.weight_decay``, ``model.training_config``
    (a dict) and ``model.training_report`` (accuracies, final objective, seconds) attached. ``on_epoch(e, model)``
    is called after Adam epoch e = 1, 2, … with the model being trained (read it, e.g. copy its ``state_dict`` as
    a TracIn checkpoint; changing it changes the run).
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"dataset must be an influence_core Dataset, got {type(dataset).__name__}; make one from "
            "arrays with dataset_from_arrays(X_train, y_train, X_test, y_test)"
        )
    if on_epoch is not None and not callable(on_epoch):
        raise TypeError(f"on_epoch must be a function on_epoch(epoch, model) or None, got {type(on_epoch).__name__}")
    known = set(TrainingConfig.__dataclass_fields__) - {"arch", "seed", "extra"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(known)}")
    if "hidden" in settings:
        hidden = settings["hidden"]
        settings["hidden"] = (
            tuple(np.atleast_1d(hidden).tolist())
            if isinstance(hidden, (list, tuple, np.ndarray, int, np.integer))
            else hidden
        )
    device = _check_device(device)
    if arch == "resnet18":
        settings.setdefault("polish_steps", 0)  # see TrainingConfig: no full-batch L-BFGS unless asked for
    cfg = TrainingConfig(arch=arch, seed=seed, **settings)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    options: dict[str, Any] = (
        {"hidden": cfg.hidden} if arch == "mlp" else {"width": cfg.width} if arch == "resnet18" else {}
    )
    model = build_model(arch, dataset.n_features, dataset.n_classes, dataset.image_shape, **options)
    model = model.to(device=device, dtype=dtype)
    X = torch.as_tensor(dataset.X_train, device=device, dtype=dtype)
    y = torch.as_tensor(dataset.y_train, device=device)
    if not torch.isfinite(X).all():  # after the cast to the training dtype: large values can overflow there
        raise ValueError(f"the training inputs overflow to inf/NaN in {cfg.dtype}; rescale them")
    n = len(X)

    adam_epochs = 0 if arch == "logreg" else cfg.epochs
    total = adam_epochs + 1
    if adam_epochs:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        steps_total = adam_epochs * math.ceil(n / cfg.batch_size)
        schedule = (
            None
            if cfg.lr_schedule == "constant"
            else torch.optim.lr_scheduler.LambdaLR(
                opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, steps_total) / steps_total))
            )
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        for epoch in range(adam_epochs):
            order = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                opt.zero_grad()
                loss = objective(model, X[idx], y[idx], cfg.weight_decay)
                if not torch.isfinite(loss):
                    raise _diverged(f"the loss became {loss.item()} in epoch {epoch + 1} of Adam", cfg)
                loss.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
            if on_epoch is not None:
                on_epoch(epoch + 1, model)
            if progress:
                progress((epoch + 1) / total, f"epoch {epoch + 1}/{adam_epochs}")
    steps = cfg.polish_steps if arch != "logreg" else max(cfg.polish_steps, 500)
    final = {"objective": float("nan"), "grad_norm": float("nan")}
    model.eval()  # polish and record the objective the engine sees (BatchNorm on running statistics, no Dropout)
    if steps:
        final = fit_full_batch(
            model,
            X,
            y,
            cfg.weight_decay,
            max_iter=steps,
            progress=progress
            and (lambda f, m: progress((adam_epochs + 0.5 * f) / total, f"polish (full-batch L-BFGS): {m}")),
        )
    if (steps and not math.isfinite(final["objective"])) or not all(
        torch.isfinite(p).all() for p in model.parameters()
    ):
        raise _diverged(f"training ended with objective {final['objective']} and non-finite weights", cfg)
    extra = max(0, cfg.max_polish_steps - steps) if steps else 0
    if extra and not final["grad_norm"] <= cfg.grad_tol:  # not yet stationary: polish on towards grad_tol,
        # in float64 (float32 L-BFGS stalls once the objective's changes fall below its precision), then back
        model.double()
        fit_full_batch(
            model,
            X.double(),
            y,
            cfg.weight_decay,
            max_iter=extra,
            tol=cfg.grad_tol,
            lbfgs_tolerance_grad=1e-12,
            progress=progress
            and (
                lambda f, m: progress(
                    (adam_epochs + 0.5 + 0.5 * f) / total, f"polish to grad norm <= {cfg.grad_tol:g} (float64): {m}"
                )
            ),
        )
        model.to(dtype)
        final = _full_objective_record(model, X, y, cfg.weight_decay)
    final["polish"] = "l-bfgs" if steps else "skipped (polish_steps=0): grad_norm not computed"
    final["grad_tol"] = cfg.grad_tol
    final["grad_tol_reached"] = bool(final["grad_norm"] <= cfg.grad_tol)
    model.eval()
    if progress:
        progress(1.0, "done")
    model.weight_decay = cfg.weight_decay
    model.training_config = {**asdict(cfg), "hidden": list(cfg.hidden), "dataset": dataset.describe()}
    model.training_report = {
        "torch_threads": torch.get_num_threads(),  # float sums, hence the weights, depend on it (see README)
        "train_accuracy": accuracy(model, dataset.X_train, dataset.y_train),
        "test_accuracy": accuracy(model, dataset.X_test, dataset.y_test),
        **final,
        "seconds": time.perf_counter() - start,
    }
    return model
