"""Cached loaders shared by the pages: everything expensive is computed once per small hashable key.

- Datasets, trained models, sampler inputs, Hessian samples and fitted influence calculators are
  ``st.cache_resource`` objects: shared read-only across sessions (never mutate them).
- 2-D projections and per-test-point influence rows are ``st.cache_data`` (small arrays, copied per reader).

Keys are :class:`ui.config.RunConfig` plus a few scalars. All maths is done by ``influence_core``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import streamlit as st
import torch

import influence_core as ic
from influence_core.evaluation import metrics
from influence_core.sampling.projection import project_2d
from influence_core.sampling.samplers import confidence

from .config import DataConfig, RunConfig, run_from_query, run_to_query

# The app's models are small (thousands of parameters): torch's intra-op threads only add synchronisation, and on a
# shared 2-core machine they made training 10-20x slower (measured: digits MLP 37.6 s with 2 threads vs 2.0 s with 1).
torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))

RUN_KEY = "run_config"
PAYLOAD_KEY = "npz_payloads"
MAX_MODELS = 8
CURVATURE = "gauss_newton"  # the subset Hessian of a network is indefinite; Gauss-Newton keeps it PSD
INTERACTIVE_EXACT_MAX_PARAMS = 3000  # app latency: above this the full-data reference uses CG, not a (p, p) matrix


# ---------------------------------------------------------------------------------------------------- session


def current_run() -> RunConfig:
    """The configuration chosen on the home page: this session's choice, else the one in the URL's query
    parameters (so a browser reload keeps it), else the default digits MLP."""
    if RUN_KEY not in st.session_state:
        st.session_state[RUN_KEY] = run_from_query(st.query_params.to_dict())
    return st.session_state[RUN_KEY]


def set_run(run: RunConfig) -> None:
    """Make ``run`` this session's configuration and write it into the URL (see :func:`ui.config.run_to_query`)."""
    st.session_state[RUN_KEY] = run
    st.query_params.from_dict(run_to_query(run))
    payloads = st.session_state.get(PAYLOAD_KEY, {})
    for digest in [d for d in payloads if d != run.data.npz_digest]:  # keep only the current run's upload
        del payloads[digest]


def remember_upload(data: bytes, filename: str | None) -> DataConfig:
    """Keep the uploaded .npz's bytes in this session (keyed by digest) and return the DataConfig naming it.

    A session keeps at most two files of at most the upload limit each: the current run's upload and this new one
    (which replaces any earlier candidate; :func:`set_run` drops all but the current run's), so a failed upload
    does not lose the file the current model was trained on."""
    digest = hashlib.sha256(data).hexdigest()
    current = st.session_state.get(RUN_KEY)
    keep = {current.data.npz_digest} if current is not None and current.data.name == "npz" else set()
    old = st.session_state.get(PAYLOAD_KEY, {})
    st.session_state[PAYLOAD_KEY] = {**{d: b for d, b in old.items() if d in keep}, digest: bytes(data)}
    return DataConfig(name="npz", npz_digest=digest, npz_filename=filename)


# ---------------------------------------------------------------------------------------------------- data


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_dataset(cfg: DataConfig, _payload: bytes | None) -> ic.Dataset:
    if cfg.name == "npz":
        if _payload is None:
            raise ic.DatasetError("the uploaded .npz is no longer in this session; upload it again on the home page")
        name = (cfg.npz_filename or "upload").rsplit(".", 1)[0]
        return ic.load_npz(_payload, seed=cfg.seed, name=name)  # allow_pickle=False, size-limited
    if cfg.name == "mnist1d":
        return ic.load_dataset("mnist1d", seed=cfg.seed, num_samples=cfg.num_samples)
    return ic.load_dataset(cfg.name, seed=cfg.seed)


def get_dataset(cfg: DataConfig) -> ic.Dataset:
    """The dataset for ``cfg`` (raises :class:`influence_core.DatasetError` with a clear message)."""
    payload = st.session_state.get(PAYLOAD_KEY, {}).get(cfg.npz_digest) if cfg.name == "npz" else None
    return _load_dataset(cfg, payload)


# ---------------------------------------------------------------------------------------------------- models


@st.cache_resource(show_spinner=False)
def _model_store() -> dict:
    return {"models": OrderedDict(), "lock": threading.Lock()}


def has_model(run: RunConfig) -> bool:
    return run in _model_store()["models"]


def evict_one(models: OrderedDict, keep: object) -> object:
    """Drop the model that is cheapest to get back: the smallest training time (``training_report["seconds"]``),
    the least recently used among equals, never ``keep`` (the one just asked for). Returns the dropped key.

    Evicting by age alone dropped an MNIST-5k CNN (367 s to retrain) to keep a 2 s digits model."""
    candidates = [key for key in models if key != keep]
    age = {key: i for i, key in enumerate(models)}  # 0 = least recently used
    victim = min(candidates, key=lambda key: (float(models[key].training_report.get("seconds", 0.0)), age[key]))
    del models[victim]
    return victim


def cached_models() -> list[tuple[RunConfig, float]]:
    """The models kept in memory (shared by all sessions), most recently used first, with their training times."""
    store = _model_store()
    with store["lock"]:
        items = list(store["models"].items())
    return [(run, float(model.training_report.get("seconds", 0.0))) for run, model in reversed(items)]


def get_model(run: RunConfig, progress: Callable[[float, str], None] | None = None):
    """The trained model for ``run``, trained once (with ``progress``) and shared read-only by all sessions."""
    store = _model_store()
    with store["lock"]:
        models: OrderedDict = store["models"]
        if run in models:
            models.move_to_end(run)
            return models[run]
        dataset = get_dataset(run.data)
        cfg = run.model
        model = ic.train_model(dataset, arch=cfg.arch, seed=cfg.seed, progress=progress, **cfg.train_kwargs())
        models[run] = model
        while len(models) > MAX_MODELS:
            evict_one(models, keep=run)
        return model


def ensure_model(run: RunConfig):
    """Train (with a progress bar) if needed and return the model; page-level helper. The bar lives in a
    placeholder that is emptied in ``finally``, so it never stays on the page above an error."""
    if has_model(run):
        return get_model(run)
    slot = st.empty()
    try:
        bar = slot.progress(0.0, text=f"Training {run.model.arch} on {run.data.label()}…")

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"Training: {message}")

        return get_model(run, progress)
    finally:
        slot.empty()


def n_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@dataclass(frozen=True, eq=False)
class ModelView:
    """What the pages show about a trained model: logits, features, predictions and confidence."""

    inputs: ic.SamplerInputs  # training labels, logits, features (what samplers look at)
    test_logits: np.ndarray
    test_features: np.ndarray
    train_pred: np.ndarray
    test_pred: np.ndarray
    train_conf: np.ndarray
    test_conf: np.ndarray
    n_params: int


@st.cache_resource(show_spinner=False, max_entries=MAX_MODELS)
def get_view(run: RunConfig) -> ModelView:
    model, dataset = get_model(run), get_dataset(run.data)
    inputs = ic.sampler_inputs(model, dataset)
    test_logits = ic.predict_logits(model, dataset.X_test)
    return ModelView(
        inputs=inputs,
        test_logits=test_logits,
        test_features=ic.penultimate_features(model, dataset.X_test),
        train_pred=inputs.logits.argmax(1),
        test_pred=test_logits.argmax(1),
        train_conf=confidence(inputs.logits),
        test_conf=confidence(test_logits),
        n_params=n_params(model),
    )


@st.cache_data(show_spinner="Computing the 2-D map…", max_entries=32)
def get_projection(run: RunConfig, space: str, method: str) -> np.ndarray:
    """(n_train + n_test, 2) map of the penultimate features or the logits (train rows first)."""
    view = get_view(run)
    if space == "logits":
        X = np.vstack([view.inputs.logits, view.test_logits])
    else:
        X = np.vstack([view.inputs.features, view.test_features])
    return project_2d(X, method=method, seed=0)


# ---------------------------------------------------------------------------------------------------- samples


@st.cache_resource(show_spinner=False, max_entries=128)
def get_sample(run: RunConfig, sampler: str, m: int, seed: int, pool: tuple[int, ...] | None = None):
    """A Hessian sample (raises ValueError with a clear message for impossible settings, e.g. m > pool)."""
    return ic.sample_hessian_subset(get_model(run), get_dataset(run.data), sampler, int(m), seed=int(seed),
                                    pool=None if pool is None else np.asarray(pool), inputs=get_view(run).inputs)


# ---------------------------------------------------------------------------------------------------- influence


def reference_solver(run: RunConfig) -> str:
    """Solver of the full-data reference: exact for small models (one factorisation), CG otherwise."""
    return "exact" if get_view(run).n_params <= INTERACTIVE_EXACT_MAX_PARAMS else "cg"


SOLVER_OPTIONS = {"exact": {}, "cg": {"tol": 1e-6, "max_iter": 500}, "lissa": {"tol": 1e-4, "max_iter": 3000}}


@st.cache_resource(show_spinner=False, max_entries=24)
def get_calculator(run: RunConfig, sampler: str | None, m: int, seed: int, solver: str, damping: float):
    """A fitted InfluenceCalculator (and a lock: ``scores`` records ``last_solve``, so one caller at a time).

    ``sampler=None`` is the full-data Hessian."""
    model, dataset = get_model(run), get_dataset(run.data)
    calc = ic.InfluenceCalculator(model, dataset.X_train, dataset.y_train)
    sample = None if sampler is None else get_sample(run, sampler, m, seed)
    calc.fit(hessian_indices=sample, solver=solver, damping=float(damping), curvature=CURVATURE,
             **SOLVER_OPTIONS.get(solver, {}))
    return calc, threading.Lock()


Spec = tuple  # (sampler | None, m, seed, solver): one Hessian sample and solver; sampler None = full data


def reference_spec(run: RunConfig) -> Spec:
    return (None, get_dataset(run.data).n_train, 0, reference_solver(run))


@st.cache_data(show_spinner=False, max_entries=1024)
def _ihvp(run: RunConfig, spec: Spec, damping: float, test_index: int) -> dict:
    """s = (H_S + δI)⁻¹ ∇ℓ(test point) for one spec, with the solve's record (trace, iterations, time)."""
    calc, lock = get_calculator(run, *spec, damping)
    dataset = get_dataset(run.data)
    i = int(test_index)
    with lock:
        solve = calc.ihvp(calc.gradients(dataset.X_test[i:i + 1], dataset.y_test[i:i + 1]))
    return {"x": solve.x.detach().cpu().numpy(), "trace": list(solve.trace), "iterations": int(solve.iterations),
            "converged": bool(solve.converged), "solve_seconds": float(solve.seconds), "method": solve.method}


@st.cache_data(show_spinner=False, max_entries=512)
def influence_rows(run: RunConfig, specs: tuple[Spec, ...], damping: float, test_index: int) -> list[dict]:
    """Scores of every training point on test point ``test_index`` (n_train,) for each spec, with the solve
    records. The iHVPs are solved per spec (cached); the scores of all specs are then formed in ONE pass over the
    training set (``InfluenceCalculator.scores_from_ihvp`` with k right-hand sides)."""
    import torch

    start = time.perf_counter()
    solves = [_ihvp(run, spec, damping, test_index) for spec in specs]
    calc, lock = get_calculator(run, *specs[0], damping)
    S = torch.as_tensor(np.concatenate([s["x"] for s in solves]))
    with lock:
        scores = calc.scores_from_ihvp(S)
    seconds = time.perf_counter() - start
    return [{**{k: v for k, v in s.items() if k != "x"}, "scores": scores[j], "seconds": seconds}
            for j, s in enumerate(solves)]


def influence_row(run: RunConfig, sampler: str | None, m: int, seed: int, solver: str, damping: float,
                  test_index: int) -> dict:
    return influence_rows(run, ((sampler, int(m), int(seed), solver),), damping, test_index)[0]


def reference_row(run: RunConfig, damping: float, test_index: int) -> dict:
    return influence_rows(run, (reference_spec(run),), damping, test_index)[0]


@st.cache_data(show_spinner=False, max_entries=128)
def seed_spread(run: RunConfig, samplers: tuple[str, ...], m: int, seeds: tuple[int, ...], solver: str,
                damping: float, test_index: int, k: int) -> list[dict]:
    """Per sampler and seed: Spearman and top-k overlap of the scores against the full-data Hessian's."""
    specs = [(name, int(m), int(s), solver) for name in samplers for s in seeds]
    rows = influence_rows(run, (reference_spec(run), *specs), damping, test_index)
    ref = rows[0]["scores"]
    return [{"sampler": spec[0], "seed": spec[2], "spearman_vs_full": metrics.spearman(row["scores"], ref),
             "topk_overlap_vs_full": metrics.topk_overlap(row["scores"], ref, k)}
            for spec, row in zip(specs, rows[1:])]


# ---------------------------------------------------------------------------------------------------- removal


@st.cache_resource(show_spinner=False, max_entries=4)
def get_removal_task(run: RunConfig):
    """``influence_core.removal.class_removal.ClassRemoval`` for the model (caches g_c and retrained references), with a lock."""
    from influence_core.removal.class_removal import ClassRemoval

    return ClassRemoval(get_model(run), get_dataset(run.data)), threading.Lock()


def removal_solver_choices() -> list[str]:
    """Every registered solver (the removal's curvature is Gauss-Newton, so K-FAC/EK-FAC apply)."""
    from influence_core.removal.class_removal import removal_solvers

    return removal_solvers()


REMOVAL_SOLVER_OPTIONS = {"exact": {}, "cg": {"tol": 1e-6, "max_iter": 500}, "lissa": {"tol": 1e-4, "max_iter": 5000}}


MAX_REMOVAL_RECORDS = 512


@st.cache_resource(show_spinner=False)
def _removal_store() -> dict:
    """Class-removal records shared by all sessions: {key: record}, most recently used last, and a lock.

    Deliberately NOT ``st.cache_data``: that cache records the Streamlit calls made inside the function and replays
    them on a hit, so a progress bar created outside and updated inside raised ``CacheReplayClosureError`` on the
    second press of "Run class removal" (and in every other session that ran the same settings). Here the
    progress callback runs only while a record is computed, and a hit never touches any element."""
    return {"records": OrderedDict(), "lock": threading.Lock()}


def removal_run(run: RunConfig, removed_class: int, sampler: str, m: int, seed: int, solver: str, damping: float,
                reference: bool, memory: bool, progress: Callable[[float, str], None] | None = None) -> dict:
    """One class removal (``ClassRemoval.run``) as its JSON record (``RemovalResult.to_dict``), computed once per
    settings and shared by all sessions; ``progress(fraction, message)`` is called only when it is computed.
    Returns a copy (callers may not mutate the shared record)."""
    key = (run, int(removed_class), sampler, int(m), int(seed), solver, float(damping), bool(reference), bool(memory))
    store = _removal_store()
    with store["lock"]:
        if key in store["records"]:
            store["records"].move_to_end(key)
            return copy.deepcopy(store["records"][key])
    task, lock = get_removal_task(run)
    with lock:
        with store["lock"]:  # another session may have computed it while this one waited for the task
            if key in store["records"]:
                return copy.deepcopy(store["records"][key])
        result = task.run(int(removed_class), sampler, int(m), int(seed), solver=solver, damping=float(damping),
                          retrain_reference=reference, measure_memory=memory, progress=progress,
                          **REMOVAL_SOLVER_OPTIONS.get(solver, {})).to_dict()
    with store["lock"]:
        store["records"][key] = result
        while len(store["records"]) > MAX_REMOVAL_RECORDS:
            store["records"].popitem(last=False)
    return copy.deepcopy(result)


def removal_is_cached(run: RunConfig, removed_class: int, sampler: str, m: int, seed: int, solver: str,
                      damping: float, reference: bool, memory: bool) -> bool:
    key = (run, int(removed_class), sampler, int(m), int(seed), solver, float(damping), bool(reference), bool(memory))
    return key in _removal_store()["records"]


@st.cache_data(show_spinner=False, max_entries=64)
def reference_predictions(run: RunConfig, removed_class: int) -> np.ndarray:
    """Test predictions of the model retrained from scratch without the class (cached by the removal task)."""
    task, lock = get_removal_task(run)
    with lock:
        ref = task.reference_model(int(removed_class))
    return ic.predict_logits(ref, get_dataset(run.data).X_test).argmax(1)
