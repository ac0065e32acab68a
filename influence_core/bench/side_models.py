"""Rebuild the project's MLP and SmallCNN from their state_dict in a separate environment (torch only; imports
nothing from influence_core), for the Kronfluence and pyDVL sides of ``bench kfac-compare``.

The module names match :mod:`influence_core.models.zoo` (``body.{2k}`` Linear + Tanh, ``conv.{0,3}`` Conv2d + Tanh +
AvgPool2d(2), ``dense.1`` Linear + Tanh, ``head``), so ``load_state_dict`` takes the exported weights unchanged and
every library sees the same layers as ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class SideMLP(nn.Module):
    def __init__(self, sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(a, b), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-2], sizes[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SideCNN(nn.Module):
    def __init__(self, image_shape: tuple[int, int], c1: int, c2: int, hidden: int, n_classes: int):
        super().__init__()
        h, w = image_shape
        self.image_shape = (h, w)
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), hidden), nn.Tanh())
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense(self.conv(x.reshape(-1, 1, *self.image_shape))))


def rebuild(weights: dict[str, torch.Tensor], settings: dict[str, Any], dtype: torch.dtype) -> nn.Module:
    """The model of ``settings["arch"]`` ("mlp" or "cnn", with ``image_shape`` for a CNN) carrying ``weights``."""
    if settings["arch"] == "cnn":
        c1, c2 = weights["conv.0.weight"].shape[0], weights["conv.3.weight"].shape[0]
        hidden, n_classes = weights["dense.1.weight"].shape[0], weights["head.weight"].shape[0]
        model: nn.Module = SideCNN(tuple(settings["image_shape"]), c1, c2, hidden, n_classes)
    elif settings["arch"] == "mlp":
        n_hidden = len([k for k in weights if k.startswith("body.") and k.endswith(".weight")])
        sizes = [weights["body.0.weight"].shape[1]] if n_hidden else [weights["head.weight"].shape[1]]
        sizes += [weights[f"body.{2 * i}.weight"].shape[0] for i in range(n_hidden)] + [weights["head.weight"].shape[0]]
        model = SideMLP(sizes)
    else:
        raise ValueError(f"the side scripts rebuild 'mlp' and 'cnn' models, not {settings['arch']!r}")
    model = model.to(dtype)
    model.load_state_dict(weights)
    return model.eval()


ARRAYS = ("X_train", "y_train", "X_query", "y_query", "settings")
"""Members of ``problem.npz`` that are not model weights."""


def load_problem(directory: str | Path) -> tuple[dict[str, Any], nn.Module, tuple[torch.Tensor, ...]]:
    """``problem.npz`` of ``directory`` (never unpickled): the settings, the rebuilt model, and
    (X_train, y_train, X_query, y_query) as tensors in the settings' dtype; sets the threads and the seed."""
    data = np.load(Path(directory) / "problem.npz", allow_pickle=False)
    settings = json.loads(str(data["settings"]))
    torch.set_num_threads(int(settings["threads"]))
    torch.manual_seed(int(settings["seed"]))
    dtype = torch.float64 if settings["dtype"] == "float64" else torch.float32
    weights = {k: torch.as_tensor(data[k]) for k in data.files if k not in ARRAYS}
    model = rebuild(weights, settings, dtype)
    tensors = (
        torch.as_tensor(data["X_train"]).to(dtype),
        torch.as_tensor(data["y_train"]).long(),
        torch.as_tensor(data["X_query"]).to(dtype),
        torch.as_tensor(data["y_query"]).long(),
    )
    return settings, model, tensors
