"""Glue between a trained model and the samplers: compute what samplers look at (logits, penultimate features,
labels) for the training set, and draw a Hessian sample. The sampling rules themselves live in
:mod:`influence_core.samplers`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from .data import Dataset
from .models import penultimate_features, predict_logits
from .samplers import FEATURE_SAMPLERS, HessianSample, SamplerInputs, draw_sample

__all__ = ["sampler_inputs", "sample_hessian_subset"]


def sampler_inputs(model: nn.Module, dataset: Dataset, with_features: bool = True) -> SamplerInputs:
    """Labels (n,), logits (n, C) and, when the model has ``features``, penultimate features (n, k) of the
    training set, as float64 numpy arrays."""
    logits = predict_logits(model, dataset.X_train)
    features = penultimate_features(model, dataset.X_train) if with_features and hasattr(model, "features") else None
    return SamplerInputs(labels=np.asarray(dataset.y_train), logits=logits, features=features)


def sample_hessian_subset(model: nn.Module, dataset: Dataset, sampler: str, m: int, seed: int = 0,
                          pool: Any | None = None, *, inputs: SamplerInputs | None = None,
                          **options: Any) -> HessianSample:
    """Choose m training indices (and weights, for importance samplers) to estimate the Hessian on.

    ``sampler`` is a name from :func:`influence_core.samplers.available_samplers`; ``pool`` restricts the
    candidates (e.g. the remaining classes in class removal; None = all training points). ``inputs`` can be passed
    to reuse precomputed logits/features. The result behaves as an index array (``np.asarray(sample)``) and carries
    ``.weights`` (None when uniform); pass it as ``hessian_indices`` to :func:`influence_core.influence_scores`.
    """
    if inputs is None:
        inputs = sampler_inputs(model, dataset, with_features=(sampler in FEATURE_SAMPLERS))
    return draw_sample(sampler, inputs, m, seed=seed, pool=None if pool is None else np.asarray(pool), **options)
