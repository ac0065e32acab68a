"""Small classifiers. Each maps flat inputs (n, d) to logits (n, C) and exposes ``features(x)``, the penultimate
layer (n, k) that the ``feature`` sampler clusters; ``forward(x) = head(features(x))`` with a final linear ``head``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

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
    """Device and floating dtype of the model's parameters (inputs are moved there; CPU and GPU both work)."""
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("the model has no parameters")
    return p.device, p.dtype


@torch.no_grad()
def predict_logits(model: nn.Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """Logits (n, C) as a float64 numpy array, computed in batches in eval mode."""
    device, dtype = model_device_dtype(model)
    X = torch.as_tensor(np.asarray(X))
    out = [model(X[i:i + batch_size].to(device=device, dtype=dtype)).double().cpu()
           for i in range(0, len(X), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


@torch.no_grad()
def penultimate_features(model: nn.Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """Penultimate-layer features (n, k) as float64, from ``model.features`` (a user model without one: error)."""
    import numpy as np

    if not hasattr(model, "features"):
        raise ValueError("the model has no features(x) method (penultimate layer); add one or use a logit sampler")
    device, dtype = model_device_dtype(model)
    X = torch.as_tensor(np.asarray(X))
    out = [model.features(X[i:i + batch_size].to(device=device, dtype=dtype)).double().cpu()
           for i in range(0, len(X), batch_size)]
    return torch.cat(out).numpy()
