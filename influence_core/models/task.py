"""The task seam and model preparation: how the engine turns a user's model into logits, losses and parameters.

A :class:`Task` says, for any classifier the engine did not build:

- ``output(model_output) -> logits (c, C)``: extracts the logits from whatever ``model(x)`` returns (a tensor; a
  dict or ``ModelOutput`` with a ``"logits"`` entry; a tuple/list whose first element is the logits). Pass your
  own function for anything else (e.g. ``lambda out: out["scores"]``).
- ``loss(logits, y) -> (c,)``: the per-sample training loss ℓ_i, no regulariser (default: softmax cross-entropy,
  the loss :func:`~influence_core.models.training.train_model` uses). The curvature ``"gauss_newton"`` and the exact
  low-rank solve assume this default; a custom loss works with ``curvature="hessian"``.
- ``measurement``: the function f_t of a test point whose change the scores predict, ``"loss"`` (default: the
  training loss, so score[t, j] = predicted increase of test loss), ``"margin"`` (f_t = −(z_y − logsumexp_{k≠y} z_k),
  the negative margin: score = predicted decrease of the margin), or a callable ``(logits, y) -> (c,)``.

Inputs are passed to the model untouched (integer token ids stay integers). Model preparation (used by every
forward pass of the engine): the engine never evaluates the caller's module object itself. It evaluates a
:func:`replica`, a copy of the module tree in eval mode (Dropout off, BatchNorm on its running statistics) that
shares the caller's parameter and buffer tensors (no data is copied), one per thread where it is cached; so the
caller's parameters, ``requires_grad``, ``training`` flags and hooks are never touched, even for an instant, and any
number of threads may compute on one model (``torch.func.functional_call`` swaps tensors into the replica only).
:func:`select_parameters`
names the parameters influence is computed over (all trainable ones by default; a list of names or modules, or
``"last_layer"``).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Task",
    "default_output",
    "cross_entropy_loss",
    "margin_measurement",
    "eval_mode",
    "replica",
    "thread_replica",
    "select_parameters",
    "check_parameters",
    "resolve_weight_decay",
    "MEASUREMENTS",
    "WeightDecayWarning",
]

MEASUREMENTS = ("loss", "margin")


class WeightDecayWarning(UserWarning):
    """Influence is computed with weight decay 0 because none was given or recorded on the model."""


def default_output(out: Any) -> torch.Tensor:
    """Logits from a model's output: a tensor; ``out["logits"]`` or ``out.logits``; or ``out[0]`` of a tuple/list."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" in out:
            return out["logits"]
        raise TypeError(
            f"the model returns a dict with keys {sorted(map(str, out))} and no 'logits' entry; pass "
            "output_fn=lambda out: out[KEY] to say which entry holds the logits (batch, classes)"
        )
    if isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(
        f"the model returns a {type(out).__name__}, not logits; pass output_fn= (a function from the "
        "model's output to the logits tensor (batch, classes))"
    )


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per sample (c,)."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_measurement(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Negative margin −(z_y − logsumexp_{k≠y} z_k) per sample (c,): grows when the prediction gets worse."""
    correct = logits.gather(1, y[:, None])[:, 0]
    mask = torch.arange(logits.shape[-1], device=logits.device) == y[:, None]  # vmap-safe one-hot
    others = logits.masked_fill(mask, float("-inf"))
    return torch.logsumexp(others, dim=-1) - correct


@dataclass(frozen=True)
class Task:
    """Output function, per-sample loss and query measurement of a classification task (see the module doc)."""

    output: Callable[[Any], torch.Tensor] = default_output
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy_loss
    measurement: Any = "loss"

    def __post_init__(self) -> None:
        if not callable(self.output) or not callable(self.loss):
            raise TypeError("Task.output and Task.loss must be functions")
        if not (callable(self.measurement) or self.measurement in MEASUREMENTS):
            raise ValueError(
                f"measurement must be one of {list(MEASUREMENTS)} or a function (logits, y) -> (c,); "
                f"got {self.measurement!r}"
            )

    @property
    def softmax_loss(self) -> bool:
        """True when the loss is the default softmax cross-entropy (what Gauss-Newton and the low-rank solve use)."""
        return self.loss is cross_entropy_loss

    def measure(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """f_t for a batch of test points (c,)."""
        if self.measurement == "loss":
            return self.loss(logits, y)
        if self.measurement == "margin":
            return margin_measurement(logits, y)
        return self.measurement(logits, y)

    def require_gauss_newton(self) -> None:
        if not self.softmax_loss:
            raise ValueError(
                "curvature='gauss_newton' (and the exact low-rank solve) needs logits and the softmax "
                "cross-entropy loss; this task has a custom loss: use curvature='hessian', or keep the "
                "default loss and give output_fn= to extract the logits"
            )

    def describe(self) -> dict[str, str]:
        name = lambda f: getattr(f, "__name__", type(f).__name__)  # noqa: E731
        return {
            "output": name(self.output),
            "loss": name(self.loss),
            "measurement": self.measurement if isinstance(self.measurement, str) else name(self.measurement),
        }


def replica(model: nn.Module) -> nn.Module:
    """A private copy of ``model``'s module tree in eval mode that shares every parameter and buffer tensor with it.

    ``copy.deepcopy`` with the parameters and buffers pre-entered in its memo: the modules (and their attributes,
    hooks included) are new objects, the tensors are the caller's (no data copied, so the cost is that of copying
    the Python objects, not the weights). Switching the replica to eval mode, registering hooks on it or swapping
    tensors into it (``functional_call``) is invisible to the caller and to other threads. Parameters and buffers are
    read, never written: in eval mode BatchNorm does not update its running statistics.

    Raises TypeError when the model cannot be copied (e.g. it holds a lock or an open file as an attribute).
    """
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        private = copy.deepcopy(model, memo=shared)
    except Exception as exc:  # noqa: BLE001 - any failure to copy is reported the same way
        raise TypeError(
            f"the model could not be copied for a thread-safe evaluation ({type(exc).__name__}: "
            f"{exc}); influence needs a model that copy.deepcopy accepts: move locks, open files or "
            "other uncopyable objects out of the module's attributes"
        ) from exc
    return private.eval()


_REPLICAS: "weakref.WeakKeyDictionary[nn.Module, threading.local]" = weakref.WeakKeyDictionary()
_REPLICAS_LOCK = threading.Lock()


def thread_replica(model: nn.Module) -> nn.Module:
    """This thread's :func:`replica` of ``model``, made on first use and reused while ``model`` lives.

    A model whose parameter or buffer tensors were *replaced* since (``model.fc.weight = nn.Parameter(...)``,
    ``load_state_dict`` copies in place and needs nothing) gets a fresh replica: the cached one is checked against
    the caller's tensors by identity on every call.
    """
    with _REPLICAS_LOCK:
        local = _REPLICAS.get(model)
        if local is None:
            local = _REPLICAS[model] = threading.local()
    tensors = [t for t in itertools.chain(model.parameters(), model.buffers())]
    cached = getattr(local, "replica", None)
    if cached is None or len(local.tensors) != len(tensors) or any(a is not b for a, b in zip(local.tensors, tensors)):
        local.replica = replica(model)
        local.tensors = tensors
    return local.replica


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """This thread's eval-mode :func:`thread_replica` of ``model`` (the caller's module is never switched).

    Kept as a context manager so call sites read ``with eval_mode(model) as m: m(x)``: always use the yielded module.
    """
    yield thread_replica(model)


def _last_layer(model: nn.Module) -> list[str]:
    """Names of the parameters of the last module that owns parameters (``model.head`` when there is one)."""
    if isinstance(getattr(model, "head", None), nn.Module) and any(True for _ in model.head.parameters()):
        return ["head." + k for k, _ in model.head.named_parameters()]
    owner = None
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            owner = (name, module)
    if owner is None:
        raise ValueError("the model has no parameters")
    prefix = owner[0] + "." if owner[0] else ""
    return [prefix + k for k, _ in owner[1].named_parameters(recurse=False)]


def select_parameters(model: nn.Module, params: Any = None) -> list[str]:
    """Names (in ``named_parameters`` order) of the parameters influence is computed over.

    ``params``: None (every parameter with ``requires_grad``; frozen layers are left out), ``"last_layer"``
    (``model.head``, else the last module owning parameters), a module or a list of modules of the model, or a
    list of parameter names / name prefixes (``"head"`` selects ``head.weight`` and ``head.bias``)."""
    named = dict(model.named_parameters())
    if params is None:
        chosen = {k for k, v in named.items() if v.requires_grad}
        if not chosen:
            raise ValueError(
                "the model has no trainable parameters (all have requires_grad=False); pass params= "
                "to name the parameters influence should be computed over"
            )
    elif isinstance(params, str) and params in ("last_layer", "last-layer"):
        chosen = set(_last_layer(model))
    else:
        items = [params] if isinstance(params, (str, nn.Module)) else list(params)
        if not items:
            raise ValueError("params is empty; name at least one parameter or module (or pass None for all)")
        module_names = {id(m): n for n, m in model.named_modules()}
        chosen = set()
        for item in items:
            if isinstance(item, nn.Module):
                if id(item) not in module_names:
                    raise ValueError(f"the module {type(item).__name__} given in params is not part of the model")
                prefix = module_names[id(item)]
                hits = [k for k in named if not prefix or k == prefix or k.startswith(prefix + ".")]
            elif isinstance(item, str):
                hits = [k for k in named if k == item or k.startswith(item + ".")]
            else:
                raise TypeError(f"params entries must be parameter names or modules, got {type(item).__name__}")
            if not hits:
                raise ValueError(
                    f"params entry {item if isinstance(item, str) else type(item).__name__!r} matches "
                    f"no parameter; the model's parameters are {list(named)[:20]}"
                )
            chosen.update(hits)
    return [k for k in named if k in chosen]


def check_parameters(model: nn.Module, names: list[str]) -> tuple[torch.device, torch.dtype]:
    """The one device and floating dtype shared by the selected parameters (else a ValueError saying how to fix)."""
    named = dict(model.named_parameters())
    tensors = [named[k] for k in names]
    if not tensors:
        raise ValueError("the model has no parameters")
    dtypes = sorted({str(t.dtype) for t in tensors})
    devices = sorted({str(t.device) for t in tensors})
    if len(dtypes) > 1:
        raise ValueError(
            f"the model's parameters have mixed dtypes {dtypes}; influence needs one dtype: convert "
            "the model with model.float() or model.double() (e.g. after mixed-precision training)"
        )
    if len(devices) > 1:
        raise ValueError(
            f"the model's parameters live on several devices {devices}; move the model to one device "
            "with model.to(device)"
        )
    if not tensors[0].is_floating_point():
        raise ValueError(f"the parameters have dtype {dtypes[0]}; influence needs floating-point parameters")
    return tensors[0].device, tensors[0].dtype


def resolve_weight_decay(model: nn.Module, weight_decay: float | None) -> float:
    """wd of the training objective: the given value, else ``model.weight_decay`` (recorded by ``train_model``),
    else 0 with a :class:`WeightDecayWarning` (it changes the Hessian by wd·I, so it matters)."""
    if weight_decay is None:
        recorded = getattr(model, "weight_decay", None)
        if recorded is None:
            warnings.warn(
                "the model records no weight_decay and none was given, so influence assumes the model was "
                "trained without weight decay (wd = 0); pass weight_decay= (the L2 coefficient of your "
                "training objective (wd/2)·||θ||², which is torch.optim.SGD's or Adam's weight_decay) "
                "to silence this",
                WeightDecayWarning,
                stacklevel=3,
            )
            return 0.0
        weight_decay = recorded
    try:
        wd = float(weight_decay)
    except (TypeError, ValueError):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}") from None
    if not math.isfinite(wd) or wd < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    return wd
