"""Small classifiers. Each maps flat inputs (n, d) to logits (n, C) and exposes ``features(x)``, the penultimate
layer (n, k) that the ``feature`` sampler clusters; ``forward(x) = head(features(x))`` with a final linear ``head``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from influence_core.data.sources import as_source
from influence_core.models.task import check_parameters, default_output, eval_mode

__all__ = ["Classifier", "LogisticRegression", "MLP", "SmallCNN", "ARCHITECTURES", "build_model"]


class Classifier(nn.Module):
    """Base class: ``features`` (penultimate layer) followed by a linear ``head`` giving logits."""

    head: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LogisticRegression(Classifier):
    """Multinomial logistic regression: logits = W x + b. Its features are the inputs themselves."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        self.head = nn.Linear(n_features, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLP(Classifier):
    """Multi-layer perceptron with smooth (tanh by default) activations, so the loss has a well-defined Hessian."""

    def __init__(self, n_features: int, n_classes: int, hidden: tuple[int, ...] = (64,), activation: str = "tanh"):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "softplus": nn.Softplus}
        if activation not in act:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(act)}")
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must list positive layer widths, got {hidden}")
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), act[activation]()]
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SmallCNN(Classifier):
    """Two 3x3 conv layers (tanh, 2x2 average pooling) and a small dense layer, for flattened images (n, h*w)."""

    def __init__(self, image_shape: tuple[int, int], n_classes: int, channels: tuple[int, int] = (8, 16),
                 hidden: int = 32):
        super().__init__()
        h, w = image_shape
        if h < 4 or w < 4:
            raise ValueError(f"SmallCNN needs images of at least 4x4, got {image_shape}")
        self.image_shape = (int(h), int(w))
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv(x.reshape(-1, 1, *self.image_shape)))


ARCHITECTURES = ("logreg", "mlp", "cnn")


def build_model(arch: str, n_features: int, n_classes: int, image_shape: tuple[int, int] | None = None,
                **options: Any) -> Classifier:
    """Create an untrained classifier: ``arch`` is ``"logreg"``, ``"mlp"`` (options ``hidden``, ``activation``) or
    ``"cnn"`` (needs ``image_shape``; options ``channels``, ``hidden``)."""
    if arch == "logreg":
        if options:
            raise ValueError(f"logreg takes no options, got {sorted(options)}")
        return LogisticRegression(n_features, n_classes)
    if arch == "mlp":
        return MLP(n_features, n_classes, **options)
    if arch == "cnn":
        if image_shape is None:
            raise ValueError("arch='cnn' needs image data (the dataset has no image_shape); use 'mlp' instead")
        return SmallCNN(image_shape, n_classes, **options)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}")


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's parameters (inputs are moved there; CPU and GPU both work).
    Parameters of mixed dtypes or devices: a ValueError that says how to fix it."""
    return check_parameters(model, [k for k, _ in model.named_parameters()])


def _input_batches(X: Any, batch_size: int, device: torch.device, dtype: torch.dtype) -> Any:
    """Chunks of the inputs X (array, tensor on any device, or a data source / Dataset / DataLoader) on ``device``;
    floating inputs in ``dtype``, integer inputs (token ids) untouched."""
    if isinstance(X, (np.ndarray, torch.Tensor, list, tuple)):
        X = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
        chunks = (X[i:i + batch_size] for i in range(0, len(X), batch_size))
    else:
        source = as_source(X)
        chunks = (source.fetch(np.arange(i, min(i + batch_size, len(source))))[0]
                  for i in range(0, len(source), batch_size))
    for x in chunks:
        yield x.to(device, dtype) if x.is_floating_point() else x.to(device)


@torch.no_grad()
def predict_logits(model: nn.Module, X: Any, batch_size: int = 1024, *,
                   output_fn: Callable[[Any], torch.Tensor] | None = None) -> np.ndarray:
    """Logits (n, C) as a float64 numpy array, computed in batches in eval mode (the model's mode is restored).
    ``X``: arrays, tensors (any device) or a data source; ``output_fn`` extracts the logits from the model's output
    (default :func:`~influence_core.models.task.default_output`)."""
    device, dtype = model_device_dtype(model)
    output = output_fn or default_output
    with eval_mode(model):
        out = [output(model(x)).double().cpu() for x in _input_batches(X, batch_size, device, dtype)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


@torch.no_grad()
def penultimate_features(model: nn.Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """Penultimate-layer features (n, k) as float64, from ``model.features`` (a user model without one: error),
    in eval mode (the model's mode is restored)."""
    if not hasattr(model, "features"):
        raise ValueError("the model has no features(x) method (penultimate layer); add one or use a logit sampler")
    device, dtype = model_device_dtype(model)
    with eval_mode(model):
        out = [model.features(x).double().cpu().reshape(len(x), -1)
               for x in _input_batches(X, batch_size, device, dtype)]
    return torch.cat(out).numpy()
