"""Small classifiers. Each maps flat inputs (n, d) to logits (n, C) and exposes ``features(x)``, the penultimate
layer (n, k) that the ``feature`` sampler clusters; ``forward(x) = head(features(x))`` with a final linear ``head``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from influence_core.data.sources import as_source
from influence_core.models.task import check_parameters, default_output, eval_mode

__all__ = [
    "Classifier",
    "LogisticRegression",
    "MLP",
    "SmallCNN",
    "BasicBlock",
    "ResNet18",
    "ARCHITECTURES",
    "build_model",
    "logits_and_features",
]


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

    def __init__(
        self, image_shape: tuple[int, int], n_classes: int, channels: tuple[int, int] = (8, 16), hidden: int = 32
    ):
        super().__init__()
        h, w = image_shape
        if h < 4 or w < 4:
            raise ValueError(f"SmallCNN needs images of at least 4x4, got {image_shape}")
        self.image_shape = (int(h), int(w))
        c1, c2 = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.Tanh())
        self.head = nn.Linear(hidden, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv(x.reshape(-1, 1, *self.image_shape)))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with BatchNorm, ReLU, and an identity (or 1x1 conv + BatchNorm when
    the shape changes) shortcut: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)). Out-of-place ops only, so
    ``torch.func`` transforms (vmap, jvp) go through it."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet18(Classifier):
    """ResNet-18 (He et al. 2016; four stages of two :class:`BasicBlock` each, widths w, 2w, 4w, 8w, strides
    1, 2, 2, 2) adapted to small single-channel images the way CIFAR/MNIST ResNets are: the 7x7 stride-2 stem and
    its max-pool are replaced by one 3x3 stride-1 convolution (+ BatchNorm, ReLU), so a 28x28 digit keeps its
    resolution in the first stage (28 -> 28 -> 14 -> 7 -> 4). ``features(x)``: global average pool of the last
    stage, (n, 8w); ``head``: linear layer to the classes. Inputs: flat rows (n, h*w) or images (n, 1, h, w).

    Module names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1``..``layer4``) except that its
    ``fc`` is ``head`` here; with w = 64 and 10 classes it has 11,172,810 parameters (torchvision's 11,689,512 at
    1000 classes, less its 3-channel 7x7 stem and 1000-way head). torchvision itself is not used: its wheel for
    torch 2.13.0 is linked against the CUDA build of torch and does not import beside the CPU build.

    BatchNorm uses batch statistics while training and running statistics in eval mode, which is how the engine
    evaluates every model (:func:`~influence_core.models.task.eval_mode`): influence is computed for the eval-mode
    network, in which BatchNorm is a fixed affine map per channel.
    """

    def __init__(self, image_shape: tuple[int, int], n_classes: int, width: int = 64, in_channels: int = 1):
        super().__init__()
        h, w = image_shape
        if h < 8 or w < 8:
            raise ValueError(f"ResNet18 needs images of at least 8x8 (three stride-2 stages), got {image_shape}")
        if isinstance(width, bool) or int(width) < 1:
            raise ValueError(f"width must be a positive integer (64 for the standard ResNet-18), got {width!r}")
        self.image_shape = (int(h), int(w))
        self.in_channels = int(in_channels)
        width = int(width)
        self.conv1 = nn.Conv2d(self.in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, channels = [], width
        for i, c in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(channels, c, stride), BasicBlock(c, c, 1)))
            channels = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.head = nn.Linear(channels, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.in_channels, *self.image_shape)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


ARCHITECTURES = ("logreg", "mlp", "cnn", "resnet18")


def build_model(
    arch: str, n_features: int, n_classes: int, image_shape: tuple[int, int] | None = None, **options: Any
) -> Classifier:
    """Create an untrained classifier: ``arch`` is ``"logreg"``, ``"mlp"`` (options ``hidden``, ``activation``) or
    ``"cnn"`` (needs ``image_shape``; options ``channels``, ``hidden``) or ``"resnet18"`` (:class:`ResNet18`; needs
    ``image_shape``; option ``width``, 64 by default)."""
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
    if arch == "resnet18":
        if image_shape is None:
            raise ValueError("arch='resnet18' needs image data (the dataset has no image_shape); use 'mlp' instead")
        return ResNet18(image_shape, n_classes, **options)
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
        chunks = (X[i : i + batch_size] for i in range(0, len(X), batch_size))
    else:
        source = as_source(X)
        chunks = (
            source.fetch(np.arange(i, min(i + batch_size, len(source))))[0] for i in range(0, len(source), batch_size)
        )
    for x in chunks:
        yield x.to(device, dtype) if x.is_floating_point() else x.to(device)


@torch.no_grad()
def predict_logits(
    model: nn.Module, X: Any, batch_size: int = 1024, *, output_fn: Callable[[Any], torch.Tensor] | None = None
) -> np.ndarray:
    """Logits (n, C) as a float64 numpy array, computed in batches in eval mode (the model's mode is restored).
    ``X``: arrays, tensors (any device) or a data source; ``output_fn`` extracts the logits from the model's output
    (default :func:`~influence_core.models.task.default_output`)."""
    device, dtype = model_device_dtype(model)
    output = output_fn or default_output
    with eval_mode(model) as private:
        out = [output(private(x)).double().cpu() for x in _input_batches(X, batch_size, device, dtype)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


@torch.no_grad()
def penultimate_features(model: nn.Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """Penultimate-layer features (n, k) as float64, from ``model.features`` (a user model without one: error),
    in eval mode (the model's mode is restored)."""
    if not hasattr(model, "features"):
        raise ValueError("the model has no features(x) method (penultimate layer); add one or use a logit sampler")
    device, dtype = model_device_dtype(model)
    with eval_mode(model) as private:
        out = [
            private.features(x).double().cpu().reshape(len(x), -1) for x in _input_batches(X, batch_size, device, dtype)
        ]
    return torch.cat(out).numpy()


@torch.no_grad()
def logits_and_features(model: nn.Module, X: Any, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray] | None:
    """Logits (n, C) and penultimate features (n, k) as float64 in ONE pass, ``head(features(x))``, for a zoo
    :class:`Classifier` whose ``forward`` is exactly that (None for any other model); eval mode, mode restored.
    Equal to :func:`predict_logits` and :func:`penultimate_features` at half the cost (a ResNet-18 pass over mnist5k
    takes minutes on a CPU)."""
    if not (isinstance(model, Classifier) and type(model).forward is Classifier.forward):
        return None
    device, dtype = model_device_dtype(model)
    logits, features = [], []
    with eval_mode(model) as private:
        for x in _input_batches(X, batch_size, device, dtype):
            f = private.features(x)
            logits.append(private.head(f).double().cpu())
            features.append(f.double().cpu().reshape(len(x), -1))
    return torch.cat(logits).numpy(), torch.cat(features).numpy()
