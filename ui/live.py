"""Cached computations of the Faithfulness, Lesson and Explorer pages (all maths in ``influence_core``).

Runs that report progress (the live LDS, the mislabel demo) are kept in a shared store like the class-removal
records in :mod:`ui.state` (not ``st.cache_data``, which would replay the progress bar's calls on a hit): computed
once per settings, shared read-only by all sessions, with one lock per store, as cancellable background jobs
(:func:`ui.state.run_job`: a progress bar and a Cancel button; a cancelled run stores nothing, finished LDS
retrains stay in their disk cache).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import streamlit as st

from influence_core import curvature_proxy

from .config import RunConfig
from .state import get_calculator, get_dataset, get_model, get_view, reference_solver, run_job

Progress = Callable[[float, str], None]
LIVE_ARCHS = ("logreg", "mlp")
LIVE_MAX_PARAMS = 5000
LIVE_DATASETS = ("digits",)
MAX_RECORDS = 32


@st.cache_resource(show_spinner=False)
def _store() -> dict:
    return {"records": OrderedDict(), "lock": threading.Lock(), "busy": {}}


def _cached(key: tuple, compute: Callable[[], Any], store: dict | None = None) -> Any:
    """``compute()`` once per ``key`` for all sessions (a second caller of the same key waits for the first)."""
    store = _store() if store is None else store
    with store["lock"]:
        if key in store["records"]:
            store["records"].move_to_end(key)
            return store["records"][key]
        lock = store["busy"].setdefault(key, threading.Lock())
    with lock:
        with store["lock"]:
            if key in store["records"]:
                return store["records"][key]
        try:
            value = compute()
        finally:
            with store["lock"]:
                store["busy"].pop(key, None)
        with store["lock"]:
            store["records"][key] = value
            while len(store["records"]) > MAX_RECORDS:
                store["records"].popitem(last=False)
    return value


def is_cached(key: tuple) -> bool:
    return key in _store()["records"]


def _cached_job(key: tuple, label: str, compute: Callable[[Progress], Any], progress: Progress | None) -> Any:
    """:func:`_cached` of ``compute(progress)`` as a background job (``progress`` draws it on this thread)."""
    store = _store()
    with store["lock"]:
        if key in store["records"]:
            store["records"].move_to_end(key)
            return store["records"][key]
    return run_job(key, label, lambda job_progress: _cached(key, lambda: compute(job_progress), store), draw=progress)


# ------------------------------------------------------------------------------------------------------ live LDS


def live_lds_allowed(run: RunConfig) -> str | None:
    """None when a live LDS can run on ``run``'s model, else the reason (small models on digits only: K retrains
    of the model from scratch)."""
    if run.data.name not in LIVE_DATASETS or run.model.arch not in LIVE_ARCHS:
        return (f"the live LDS retrains the model K x 2 times, so it runs on the digits logistic regression or MLP "
                f"only (the current model is a {run.model.arch} on {run.data.label()}); train one on the home page")
    if get_view(run).n_params > LIVE_MAX_PARAMS:
        return f"the model has {get_view(run).n_params:,} parameters; the live LDS needs at most {LIVE_MAX_PARAMS:,}"
    return None


def live_lds_key(run: RunConfig, samplers: tuple[str, ...], ms: tuple[int, ...], n_seeds: int, n_subsets: int,
                 n_test: int) -> tuple:
    return ("lds", run, tuple(samplers), tuple(int(m) for m in ms), int(n_seeds), int(n_subsets), int(n_test))


def live_lds(run: RunConfig, samplers: tuple[str, ...], ms: tuple[int, ...], n_seeds: int, n_subsets: int,
             n_test: int, progress: Progress | None = None) -> dict[str, Any]:
    """A small LDS study on the current model (``influence_core.studies.lds.run_lds_study``): ``n_subsets``
    half-size subsets retrained with 2 seeds (cached on disk per retrain, see ``influence_core.evaluation.lds``),
    ``n_test`` test points, the samplers x m x ``n_seeds`` seeds with Gauss-Newton + damping 0.01 as in the
    committed studies. Returns the JSON record of the study."""
    reason = live_lds_allowed(run)
    if reason:
        raise ValueError(reason)

    dataset, model = get_dataset(run.data), get_model(run)  # on this thread: compute runs in a job's thread

    def compute(progress: Progress) -> dict[str, Any]:
        from influence_core import RetrainPlan
        from influence_core.studies.faithfulness import StudyConfig
        from influence_core.studies.lds import run_lds_study

        config = StudyConfig(dataset=run.data.name, arch=run.model.arch, seed=run.data.seed,
                             samplers=tuple(samplers), ms=tuple(int(m) for m in ms), n_seeds=int(n_seeds),
                             n_test_points=int(n_test), gram_budget_mb=0.0)
        result = run_lds_study(config, RetrainPlan(n_subsets=int(n_subsets), n_seeds=2), dataset=dataset,
                               model=model, progress=progress)
        record = result.to_json()
        record["retrain_info"] = {k: result.context["retrain"].get(k) for k in
                                  ("cached", "retrained", "wall_seconds", "retrain_seconds_mean", "cache_dir")}
        return record

    return _cached_job(live_lds_key(run, samplers, ms, n_seeds, n_subsets, n_test), "Live LDS", compute, progress)


# ------------------------------------------------------------------------------------------------------ mislabels


def mislabel_key(run: RunConfig, fraction: float, seed: int) -> tuple:
    return ("mislabel", run.data, float(run.model.weight_decay), float(fraction), int(seed))


def mislabel_demo(run: RunConfig, fraction: float, seed: int, progress: Progress | None = None):
    """``influence_core.evaluation.mislabel.mislabel_detection`` on ``run``'s dataset with logistic regression
    (the run's weight decay), Gauss-Newton (= the Hessian for logistic regression) + damping 0.01, exact solve."""
    dataset = get_dataset(run.data)

    def compute(progress: Progress):
        from influence_core import mislabel_detection

        return mislabel_detection(dataset, "logreg", float(fraction), int(seed),
                                  train_settings={"weight_decay": float(run.model.weight_decay)},
                                  progress=progress)

    return _cached_job(mislabel_key(run, fraction, seed), "Mislabel demo", compute, progress)


# ------------------------------------------------------------------------------------------------------ explorer


def self_influence(run: RunConfig, damping: float = 0.01) -> np.ndarray:
    """(n_train,) self-influence (1/n)∇ℓ_jᵀ(H + δI)⁻¹∇ℓ_j of every training point under the full-data
    Gauss-Newton Hessian (exact solve: small models only)."""
    if reference_solver(run) != "exact":
        raise ValueError(f"self-influence of every training point needs the exact full-data solve, which the app "
                         f"uses for small models only (this one has {get_view(run).n_params:,} parameters); train a "
                         "smaller model on the home page")

    def compute() -> np.ndarray:
        calc, lock = get_calculator(run, None, get_dataset(run.data).n_train, 0, "exact", float(damping))
        with lock:
            return calc.self_influence()

    return _cached(("self_influence", run, float(damping)), compute)


def curvature(run: RunConfig) -> np.ndarray:
    """(n_train,) Gauss-Newton curvature proxy 1 − Σp² of every training point."""
    return curvature_proxy(get_view(run).inputs.logits)
