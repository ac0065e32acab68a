"""Influence Explorer engine: influence functions for PyTorch classifiers with the Hessian estimated on a
well-chosen sample of the training data. No Streamlit here; long steps take a ``progress(fraction, message)``
callback (:data:`influence_core.progress.Progress`); wrapped by ``cancellable(progress, token)`` it stops the step at
its next progress point with ``Cancelled`` once ``token.cancel()`` is called.

Public API (stable names, imported on first use so that ``python -m influence_core --help`` does not load torch)::

    InfluenceConfig (the algorithm's settings, with named presets), load_dataset, dataset_from_arrays, train_model,
    influence_scores, InfluenceCalculator, top_influences,
    sample_hessian_subset, available_samplers, register_sampler, class_removal, ClassRemoval,
    available_solvers, register_solver, fit_inverse, Task, as_source (data sources: arrays, Dataset, DataLoader),
    the shipped LDS ground truth (load_ground_truth, lds_against, retrain_key: whether a model is a file's model),
    and what the app builds on (projections, fitted inverses across samples and their storage, the disk store).

Where things live (one subpackage per concern): ``config`` (:class:`InfluenceConfig`: the algorithm's settings and
their presets, shared by the API, the command line, the studies and the app), ``data`` (datasets, sources),
``models`` (zoo, training, task), ``curvature`` (the objective and its derivatives), ``solvers`` (registry, one
module per solver), ``sampling`` (samplers), ``influence`` (calculator, scoring grid, executors), ``removal``,
``evaluation`` (metrics, leave-one-out, LDS, memory); above them, never imported by them: ``studies``, ``bench``,
``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "influence_core.config": "InfluenceConfig PRESETS available_presets preset_values",
    "influence_core.data.datasets": "Dataset DatasetError available_datasets dataset_from_arrays load_dataset load_npz",
    "influence_core.influence.calculator": "InfluenceCalculator NotFittedError influence_scores top_influences",
    "influence_core.models.zoo": "build_model penultimate_features predict_logits",
    "influence_core.sampling.samplers": "HessianSample SamplerInputs available_samplers draw_sample register_sampler "
    "confidence curvature_proxy RENAMED_SAMPLERS sampler_description",
    "influence_core.sampling.projection": "project_2d",
    "influence_core.influence.across_samples": "fit_across_samples scores_across_samples",
    "influence_core.evaluation.lds": "RetrainPlan",
    "influence_core.evaluation.ground_truth": "GROUND_TRUTHS GroundTruth ground_truths_of_recipe lds_against "
    "load_ground_truth model_recipe retrain_key shipped_recipe spec_recipe training_recipe",
    "influence_core.evaluation.mislabel": "mislabel_detection",
    "influence_core.solvers.fitted_io": "FittedStateError inverse_from_arrays inverse_to_arrays is_storable",
    "influence_core.models.storage": "model_from_arrays model_to_arrays",
    "influence_core.array_store": "ArrayStore StoreFileError StoredEntry code_version",
    "influence_core.keys": "content_key digest",
    "influence_core.solvers.registry": "FittedInverse available_solvers fit_inverse register_solver",
    "influence_core.solvers.base": "SolveResult SolverDivergedError SolverError SolverNotConvergedWarning",
    "influence_core.data.sources": "ArraySource DataSource DatasetSource as_source",
    "influence_core.sampling.subsets": "sample_hessian_subset sampler_inputs",
    "influence_core.models.task": "Task",
    "influence_core.models.training": "train_model",
    "influence_core.removal.class_removal": "ClassRemoval RemovalResult class_removal removal_solvers",
    "influence_core.progress": "CancelToken Cancelled Progress cancellable",
    "influence_core.evaluation.metrics": "mean_std per_class_accuracy",
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names.split()}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'influence_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
