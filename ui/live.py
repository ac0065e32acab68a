"""The Faithfulness, Lesson and Explorer pages' own computations (all maths in ``influence_core``).

The live LDS, the live frontier point, the mislabel demo and the self-influence of every training point run as
shared jobs on the workers (:func:`ui.state.job_result`: a progress bar and a Cancel button; :mod:`ui.compute` does
the work): computed once per settings, kept for every session; a cancelled run stores nothing, finished LDS retrains
stay in their disk cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from influence_core import curvature_proxy

from . import compute
from .config import RunConfig
from .state import _payload, get_view, has_result, job_result, reference_solver
from .workers import Task

Progress = Callable[[float, str], None]
LIVE_ARCHS = ("logreg", "mlp")
LIVE_MAX_PARAMS = 5000
LIVE_DATASETS = ("digits",)


def is_cached(key: tuple) -> bool:
    return has_result(key)


# ------------------------------------------------------------------------------------------------------ live LDS


def live_lds_allowed(run: RunConfig) -> str | None:
    """None when a live LDS can run on ``run``'s model, else the reason (small models on digits only: K retrains
    of the model from scratch)."""
    if run.data.name not in LIVE_DATASETS or run.model.arch not in LIVE_ARCHS:
        return (
            f"the live LDS retrains the model K x 2 times, so it runs on the digits logistic regression or MLP "
            f"only (the current model is a {run.model.arch} on {run.data.label()}); train one on the home page"
        )
    if get_view(run).n_params > LIVE_MAX_PARAMS:
        return f"the model has {get_view(run).n_params:,} parameters; the live LDS needs at most {LIVE_MAX_PARAMS:,}"
    return None


def live_lds_key(
    run: RunConfig, samplers: tuple[str, ...], ms: tuple[int, ...], n_seeds: int, n_subsets: int, n_test: int
) -> tuple:
    return ("lds", run, tuple(samplers), tuple(int(m) for m in ms), int(n_seeds), int(n_subsets), int(n_test))


def live_lds(
    run: RunConfig,
    samplers: tuple[str, ...],
    ms: tuple[int, ...],
    n_seeds: int,
    n_subsets: int,
    n_test: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """A small LDS study on the current model (``influence_core.studies.lds.run_lds_study``): ``n_subsets``
    half-size subsets retrained with 2 seeds (cached on disk per retrain, see ``influence_core.evaluation.lds``),
    ``n_test`` test points, the samplers x m x ``n_seeds`` seeds with Gauss-Newton + damping 0.01 as in the
    committed studies. Returns the JSON record of the study."""
    reason = live_lds_allowed(run)
    if reason:
        raise ValueError(reason)

    task = Task(
        compute.live_lds,
        (
            run,
            tuple(samplers),
            tuple(int(m) for m in ms),
            int(n_seeds),
            int(n_subsets),
            int(n_test),
            _payload(run.data),
        ),
    )
    return job_result(live_lds_key(run, samplers, ms, n_seeds, n_subsets, n_test), "Live LDS", task, progress)


# ------------------------------------------------------------------------------------------------------ frontier


def frontier_point_key(
    run: RunConfig, name: str, sampler: str, m: int, seed: int, solver: str, damping: float, options: tuple
) -> tuple:
    return ("frontier_point", run, name, sampler, int(m), int(seed), solver, float(damping), tuple(options))


def frontier_point(
    run: RunConfig,
    name: str,
    sampler: str,
    m: int,
    seed: int,
    solver: str,
    damping: float,
    curvature: str,
    options: tuple,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The LDS of the current model's influence (``sampler``, ``m``, ``seed``, ``solver``) against the shipped
    ground truth ``name`` and its cost (:func:`ui.compute.frontier_point`), as a shared job on the workers: computed
    once per settings, kept for every session. The job refuses a model that is not the ground truth's."""
    task = Task(
        compute.frontier_point,
        (
            run,
            name,
            sampler,
            int(m),
            int(seed),
            solver,
            float(damping),
            curvature,
            tuple(options),
            _payload(run.data),
        ),
    )
    key = frontier_point_key(run, name, sampler, m, seed, solver, damping, options)
    return job_result(key, f"LDS of {sampler} m = {m} ({solver}) against {name}", task, progress)


# ------------------------------------------------------------------------------------------------------ mislabels


def mislabel_key(run: RunConfig, fraction: float, seed: int) -> tuple:
    return ("mislabel", run.data, float(run.model.weight_decay), float(fraction), int(seed))


def mislabel_demo(run: RunConfig, fraction: float, seed: int, progress: Progress | None = None):
    """``influence_core.evaluation.mislabel.mislabel_detection`` on ``run``'s dataset with logistic regression
    (the run's weight decay), Gauss-Newton (= the Hessian for logistic regression) + damping 0.01, exact solve."""
    task = Task(
        compute.mislabel, (run.data, float(run.model.weight_decay), float(fraction), int(seed), _payload(run.data))
    )
    return job_result(mislabel_key(run, fraction, seed), "Mislabel demo", task, progress)


# ------------------------------------------------------------------------------------------------------ explorer


def self_influence(run: RunConfig, damping: float = 0.01) -> np.ndarray:
    """(n_train,) self-influence (1/n)∇ℓ_jᵀ(H + δI)⁻¹∇ℓ_j of every training point under the full-data
    Gauss-Newton Hessian (exact solve: small models only)."""
    if reference_solver(run) != "exact":
        raise ValueError(
            f"self-influence of every training point needs the exact full-data solve, which the app "
            f"uses for small models only (this one has {get_view(run).n_params:,} parameters); train a "
            "smaller model on the home page"
        )

    return job_result(
        ("self_influence", run, float(damping)),
        "Self-influence of every training point",
        Task(compute.self_influence, (run, float(damping), _payload(run.data))),
    )


def curvature(run: RunConfig) -> np.ndarray:
    """(n_train,) Gauss-Newton curvature proxy 1 − Σp² of every training point."""
    return curvature_proxy(get_view(run).inputs.logits)
