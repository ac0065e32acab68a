"""Glue between a trained model and the samplers: compute what samplers look at (logits, penultimate features,
labels) for the training set, and draw a Hessian sample. The sampling rules themselves live in
:mod:`influence_core.sampling.samplers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from influence_core.data.datasets import Dataset
from influence_core.data.sources import as_source, source_labels
from influence_core.models.zoo import logits_and_features, penultimate_features, predict_logits
from influence_core.sampling.samplers import HessianSample, SamplerInputs, draw_sample, sampler_needs

__all__ = ["sampler_inputs", "sample_hessian_subset"]


def _training_data(dataset: Any) -> Any:
    """The training set of a :class:`Dataset`, of a tuple (X_train, y_train, X_test, y_test) or (X_train, y_train),
    or a data source / torch Dataset / DataLoader, as a data source."""
    if isinstance(dataset, Dataset):
        return as_source(dataset.X_train, dataset.y_train)
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 4):
        return as_source(dataset[0], dataset[1])
    try:
        return as_source(dataset)
    except (TypeError, ValueError):
        raise TypeError(
            "dataset must be an influence_core Dataset, a tuple (X_train, y_train, X_test, y_test), or a "
            f"data source / torch Dataset / DataLoader of the training set; got {type(dataset).__name__}"
        ) from None


def sampler_inputs(
    model: nn.Module,
    dataset: Any,
    with_features: bool = True,
    *,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
) -> SamplerInputs:
    """Labels (n,), logits (n, C) and, when the model has ``features``, penultimate features (n, k) of the
    training set, as float64 numpy arrays (model evaluated in eval mode; chunk by chunk for a data source).
    ``dataset``: see :func:`sample_hessian_subset`."""
    source = _training_data(dataset)
    both = logits_and_features(model, source) if with_features and output_fn is None else None
    if both is not None:  # a zoo classifier: one pass gives both
        logits, features = both
    else:
        logits = predict_logits(model, source, output_fn=output_fn)
        features = penultimate_features(model, source) if with_features and hasattr(model, "features") else None
    return SamplerInputs(labels=source_labels(source).numpy(), logits=logits, features=features)


def sample_hessian_subset(
    model: nn.Module,
    dataset: Any,
    sampler: str,
    m: int,
    seed: int = 0,
    pool: Any | None = None,
    *,
    inputs: SamplerInputs | None = None,
    output_fn: Callable[[Any], torch.Tensor] | None = None,
    **options: Any,
) -> HessianSample:
    """Choose m training indices (and weights, for importance samplers) to estimate the Hessian on.

    ``dataset``: a :class:`Dataset`, a tuple (X_train, y_train, X_test, y_test) like :func:`influence_scores`
    takes, or a data source / torch Dataset / DataLoader of the training set. ``sampler`` is a name from
    :func:`influence_core.sampling.samplers.available_samplers`; ``pool`` restricts the candidates (e.g. the remaining
    classes in class removal; None = all training points). ``inputs`` can be passed to reuse precomputed
    logits/features (otherwise only what the sampler declares it needs is computed). Pass the result itself as
    ``hessian_indices`` to :func:`influence_core.influence_scores`: it carries ``.weights`` (None when uniform),
    which ``np.asarray(sample)`` would drop.
    """
    if inputs is None:
        inputs = sampler_inputs(model, dataset, with_features="features" in sampler_needs(sampler), output_fn=output_fn)
    return draw_sample(sampler, inputs, m, seed=seed, pool=None if pool is None else np.asarray(pool), **options)
