"""A trained zoo model as plain arrays and JSON, and back: for the on-disk cache (:mod:`influence_core.array_store`).

``model_to_arrays(model)`` gives ``({"param:<name>": array}, record)``: the ``state_dict`` tensors as numpy arrays
(the file never holds a pickle) and a record with ``training_config`` (architecture, widths, dataset summary),
``training_report`` and ``weight_decay``. ``model_from_arrays`` rebuilds the same architecture with
:func:`~influence_core.models.zoo.build_model`, loads the tensors (shapes and names must match exactly) and
re-attaches the attributes :func:`~influence_core.models.training.train_model` sets, so the result is
indistinguishable from the freshly trained model (same outputs, bit for bit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .zoo import build_model

__all__ = ["model_to_arrays", "model_from_arrays", "PARAM_PREFIX"]

PARAM_PREFIX = "param:"


def model_to_arrays(model: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, record) of a model returned by ``train_model`` (it needs ``training_config``)."""
    if not hasattr(model, "training_config"):
        raise ValueError("only models trained by influence_core.train_model can be stored (no training_config)")
    arrays = {PARAM_PREFIX + name: t.detach().cpu().numpy().copy() for name, t in model.state_dict().items()}
    record = {
        "training_config": model.training_config,
        "training_report": dict(model.training_report),
        "weight_decay": float(model.weight_decay),
    }
    return arrays, record


def model_from_arrays(arrays: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> nn.Module:
    """The model stored by :func:`model_to_arrays`, in eval mode, on the CPU, in its training dtype.
    ``ValueError`` when the arrays do not fit the recorded architecture."""
    cfg = dict(record["training_config"])
    data = cfg["dataset"]
    options: dict[str, Any] = {"hidden": tuple(cfg["hidden"])} if cfg["arch"] == "mlp" else {}
    image_shape = tuple(data["image_shape"]) if data.get("image_shape") else None
    model = build_model(cfg["arch"], int(data["n_features"]), int(data["n_classes"]), image_shape, **options)
    dtype = torch.float64 if cfg.get("dtype") == "float64" else torch.float32
    model = model.to(dtype=dtype)
    state = {
        name[len(PARAM_PREFIX) :]: torch.as_tensor(np.asarray(a))
        for name, a in arrays.items()
        if name.startswith(PARAM_PREFIX)
    }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the stored tensors do not fit a {cfg['arch']} model: {str(exc)[:200]}") from None
    model.eval()
    model.weight_decay = float(record["weight_decay"])
    model.training_config = cfg
    model.training_report = {**dict(record["training_report"]), "loaded_from_disk": True}
    return model
