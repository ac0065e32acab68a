"""Influence Explorer engine: influence functions for PyTorch classifiers with the Hessian estimated on a
well-chosen sample of the training data. No Streamlit here; long steps take a ``progress(fraction, message)``
callback.

Public API (stable names)::

    load_dataset, dataset_from_arrays, train_model, influence_scores, InfluenceCalculator, top_influences,
    sample_hessian_subset, available_samplers, register_sampler, class_removal,
    available_solvers, register_solver, fit_inverse, Task, as_source (data sources: arrays, Dataset, DataLoader)
"""

from .data import Dataset, DatasetError, available_datasets, dataset_from_arrays, load_dataset, load_npz
from .influence import InfluenceCalculator, NotFittedError, influence_scores, top_influences
from .models import build_model, penultimate_features, predict_logits
from .samplers import HessianSample, SamplerInputs, available_samplers, draw_sample, register_sampler
from .solver_registry import FittedInverse, available_solvers, fit_inverse, register_solver
from .solvers import SolveResult, SolverDivergedError, SolverError, SolverNotConvergedWarning
from .sources import ArraySource, DataSource, DatasetSource, as_source
from .subsets import sample_hessian_subset, sampler_inputs
from .task import Task
from .training import train_model

__version__ = "0.1.0"

__all__ = [
    "Dataset", "DatasetError", "available_datasets", "dataset_from_arrays", "load_dataset", "load_npz",
    "InfluenceCalculator", "NotFittedError", "influence_scores", "top_influences",
    "build_model", "penultimate_features", "predict_logits",
    "HessianSample", "SamplerInputs", "available_samplers", "draw_sample", "register_sampler",
    "SolveResult", "SolverDivergedError", "SolverError", "SolverNotConvergedWarning",
    "sample_hessian_subset", "sampler_inputs", "train_model",
    "FittedInverse", "available_solvers", "fit_inverse", "register_solver",
    "ArraySource", "DataSource", "DatasetSource", "as_source", "Task",
]

try:  # the class-removal module lands separately; keep the package importable without it
    from .removal import RemovalResult, class_removal  # noqa: F401

    __all__ += ["RemovalResult", "class_removal"]
except ImportError:  # pragma: no cover
    pass
