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
import logging
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import streamlit as st
import torch

import influence_core as ic
from influence_core.evaluation import metrics
from influence_core import Cancelled, confidence

from . import artifacts, jobs
from .config import CURVATURE, SOLVER_OPTIONS, DataConfig, RunConfig, run_from_query, run_to_query
from .config import SOLVER_OPTIONS as REMOVAL_SOLVER_OPTIONS

# The app's models are small (thousands of parameters): torch's intra-op threads only add synchronisation, which on
# a shared machine slows training down many times (docs/APP.md has the measurement).
torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))

LOG = logging.getLogger("influence_explorer")
RUN_KEY = "run_config"
PAYLOAD_KEY = "npz_payloads"
MAX_MODELS = 8
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


# ---------------------------------------------------------------------------------------------------- jobs

CANCELLED_KEY = "cancelled_jobs"  # this session's cancelled job keys: not restarted until asked again
CANCEL_NOTICE_KEY = "cancel_notice"  # set by the Cancel button, shown once by ui.components.page_header


@st.cache_resource(show_spinner=False)
def job_board() -> jobs.JobBoard:
    """The running long computations of the server process, shared by all sessions (see :mod:`ui.jobs`)."""
    return jobs.JobBoard()


def session_id() -> str:
    if "session_id" not in st.session_state:
        st.session_state["session_id"] = uuid.uuid4().hex
    return st.session_state["session_id"]


def _job_widget_key(key: tuple) -> str:
    return "job_cancel_" + hashlib.sha1(repr(key).encode()).hexdigest()[:16]


def _cancel_pressed(key: tuple, label: str) -> None:
    """The Cancel button's callback (runs at the start of the rerun its click triggers). Does nothing when the job
    finished meanwhile (its result is cached: the page shows it)."""
    board = job_board()
    if board.get(key) is None:
        return
    stopped = board.cancel(key, session_id())
    st.session_state.setdefault(CANCELLED_KEY, set()).add(key)
    st.session_state[CANCEL_NOTICE_KEY] = (
        f"Cancelled: {label}. Nothing half-done was kept; ask again (Train, Run, Start again) to restart it."
        if stopped else f"Cancelled: {label}, for this session. Another session still waits for it, so the work "
                        "goes on for them (and its result is then cached).")


def clear_cancelled() -> None:
    """Forget this session's cancellations: an explicit request (a Train or Run button, "Start again") runs the
    work again."""
    st.session_state.pop(CANCELLED_KEY, None)


def run_job(key: tuple, label: str, compute: Callable[[ic.Progress], object],
            draw: Callable[[float, str], None] | None = None):
    """``compute(progress)`` as a shared background job (:class:`ui.jobs.JobBoard`; one per ``key`` for all
    sessions), waited for here with a progress bar (or the page's own ``draw(fraction, message)``) and a Cancel
    button. ``compute`` runs in another thread: it must not call Streamlit (resolve datasets, models and caches
    before). Returns its result; raises its error, or :class:`influence_core.progress.Cancelled` when this session
    cancelled it (now or earlier: a cancelled key is not restarted until :func:`clear_cancelled`).

    Pressing Cancel reruns the page (Streamlit interrupts this wait at its next bar update, within a quarter of a
    second); its callback cancels the job unless another session still waits on it (the rule is in
    :mod:`ui.jobs`). Any other click leaves the job running: the rerun page finds it and waits again."""
    sid = session_id()
    if key in st.session_state.get(CANCELLED_KEY, ()):
        raise Cancelled(f"{label}: cancelled")
    board = job_board()
    job = board.join(key, label, compute, sid)
    slot = st.empty()
    try:
        with slot.container():
            if draw is None:
                bar = st.progress(0.0, text=f"{label}…")

                def draw(fraction: float, message: str) -> None:
                    bar.progress(fraction, text=f"{label}: {message}")
            st.button("Cancel", key=_job_widget_key(key), on_click=_cancel_pressed, args=(key, label),
                      help="Stops this computation at its next step (if no other session is waiting for it); "
                           "nothing half-done is kept.")
        return jobs.wait(job, sid, draw)
    except Cancelled:
        st.session_state.setdefault(CANCELLED_KEY, set()).add(key)
        raise
    finally:
        board.leave(key, sid)
        slot.empty()


# ---------------------------------------------------------------------------------------------------- data


@st.cache_resource(show_spinner=False, max_entries=16)
def _load_dataset(cfg: DataConfig, _payload: bytes | None) -> ic.Dataset:
    if cfg.name == "npz":
        if _payload is None:
            raise ic.DatasetError("the uploaded .npz is no longer in this session; upload it again on the home page")
        name = (cfg.npz_filename or "upload").rsplit(".", 1)[0]
        return ic.load_npz(_payload, seed=cfg.seed, name=name)  # allow_pickle=False, size-limited
    return artifacts.builtin_dataset(cfg, on_problem=report_cache_problem)


def get_dataset(cfg: DataConfig) -> ic.Dataset:
    """The dataset for ``cfg`` (raises :class:`influence_core.DatasetError` with a clear message)."""
    payload = st.session_state.get(PAYLOAD_KEY, {}).get(cfg.npz_digest) if cfg.name == "npz" else None
    return _load_dataset(cfg, payload)


# ---------------------------------------------------------------------------------------------------- models


@st.cache_resource(show_spinner=False)
def _model_store() -> dict:
    """Models in memory, shared by all sessions: {run: model} (most recently used last), one lock per run (held
    while that run is trained or loaded, so other runs and cached models never wait for it), a lock for the dict,
    and the recent disk-cache problems (shown on the home page)."""
    return {"models": OrderedDict(), "lock": threading.Lock(), "run_locks": {}, "problems": deque(maxlen=20)}


def report_cache_problem(message: str) -> None:
    """A corrupt or foreign disk-cache file (already removed and being recomputed): logged and kept for the home
    page's cache section."""
    LOG.warning("disk cache: %s", message)
    _model_store()["problems"].append(message)


def cache_problems() -> list[str]:
    return list(_model_store()["problems"])


def has_model(run: RunConfig) -> bool:
    """In memory, or in the disk cache (then the next :func:`get_model` loads it in well under a second)."""
    return run in _model_store()["models"] or artifacts.is_stored(artifacts.MODEL_KIND, run.cache_key())


def evict_one(models: OrderedDict, keep: object) -> object:
    """Drop the model that is cheapest to get back: the smallest training time (``training_report["seconds"]``),
    the least recently used among equals, never ``keep`` (the one just asked for). Returns the dropped key.

    Evicting by age alone could drop an MNIST-5k CNN (minutes to retrain) to keep a digits model trained in seconds.
    (An evicted model stays in the disk cache.)"""
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


def get_model(run: RunConfig, progress: Callable[[float, str], None] | None = None,
              on_problem: Callable[[str], None] | None = None):
    """The trained model for ``run``: from memory, else from the disk cache, else trained once (with
    ``progress``) and saved; shared read-only by all sessions. Only sessions asking for the same run wait for
    each other (one lock per run)."""
    return _model_from(_model_store(), run, get_dataset(run.data), progress, on_problem)


def _model_from(store: dict, run: RunConfig, dataset: ic.Dataset, progress: Callable[[float, str], None] | None,
                on_problem: Callable[[str], None] | None):
    """:func:`get_model` without Streamlit calls (also run by a background job). A cancelled training raises
    ``Cancelled`` before anything is stored (in memory or on disk)."""
    models: OrderedDict = store["models"]
    with store["lock"]:
        if run in models:
            models.move_to_end(run)
            return models[run]
    with store["lock"]:
        run_lock = store["run_locks"].setdefault(run, threading.Lock())
    with run_lock:
        with store["lock"]:  # trained by another session while this one waited
            if run in models:
                return models[run]
        def problem(message: str) -> None:
            LOG.warning("disk cache: %s", message)
            store["problems"].append(message)
            if on_problem is not None:
                on_problem(message)

        model = artifacts.load_or_train(run, dataset, progress, on_problem=problem)
        with store["lock"]:
            models[run] = model
            while len(models) > MAX_MODELS:
                evict_one(models, keep=run)
        return model


def ensure_model(run: RunConfig):
    """Train if needed and return the model; page-level helper. Loading or training runs as a shared background
    job (:func:`run_job`: a progress bar and a Cancel button, emptied when it ends, so they never stay on the
    page above an error); raises ``Cancelled`` when this session cancelled it."""
    store = _model_store()
    if run in store["models"]:
        return get_model(run)
    dataset = get_dataset(run.data)  # here, not in the job's thread: an upload's bytes live in this session
    action = "Loading" if has_model(run) else "Training"
    problems: list[str] = []
    model = run_job(("model", run), f"{action} {run.model.arch} on {run.data.label()}",
                    lambda progress: _model_from(store, run, dataset, progress, problems.append))
    for message in problems:
        st.warning(f"Disk cache: {message}.")
    return model


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
    """The model's view, from the disk cache when it holds it (see :func:`ui.artifacts.load_or_view`)."""
    model, dataset = get_model(run), get_dataset(run.data)
    a = artifacts.load_or_view(run, model, dataset, on_problem=report_cache_problem)
    features = a["train_features"] if a["train_features"].shape[1] else None
    inputs = ic.SamplerInputs(labels=a["train_labels"], logits=a["train_logits"], features=features)
    return ModelView(
        inputs=inputs,
        test_logits=a["test_logits"],
        test_features=a["test_features"],
        train_pred=inputs.logits.argmax(1),
        test_pred=a["test_logits"].argmax(1),
        train_conf=confidence(inputs.logits),
        test_conf=confidence(a["test_logits"]),
        n_params=n_params(model),
    )


def projection_input(run: RunConfig, space: str) -> np.ndarray:
    view = get_view(run)
    if space == "logits":
        return np.vstack([view.inputs.logits, view.test_logits])
    return np.vstack([view.inputs.features, view.test_features])


@st.cache_resource(show_spinner=False, max_entries=64)
def _projection(run: RunConfig, space: str, method: str) -> np.ndarray:
    xy = artifacts.load_or_project(run, projection_input(run, space), space, method, on_problem=report_cache_problem)
    xy.setflags(write=False)  # shared by every session
    return xy


def get_projection(run: RunConfig, space: str, method: str) -> np.ndarray:
    """(n_train + n_test, 2) map of the penultimate features or the logits (train rows first), computed once per
    configuration and kept on disk (read-only array)."""
    return _projection(run, space, method)


def projection_ready(run: RunConfig, space: str, method: str) -> bool:
    """True when the map is in memory or on disk (showing it costs no computation)."""
    return (method == "pca" or artifacts.map_is_stored(run, space, method)
            or _background_maps().get((run, space, method)) == "done")


@st.cache_resource(show_spinner=False)
def _background_maps() -> dict:
    return {}


def start_projection_in_background(run: RunConfig, space: str, method: str) -> float:
    """Compute the map in a daemon thread (once per configuration and process) and return the seconds since it
    was started; the page shows PCA meanwhile and reruns when :func:`projection_ready` turns True."""
    jobs = _background_maps()
    key = (run, space, method)
    with _model_store()["lock"]:
        started = jobs.get(("started",) + key)
        if started is None:
            started = time.time()
            jobs[("started",) + key] = started
            X = projection_input(run, space)

            def work() -> None:
                try:
                    artifacts.load_or_project(run, X, space, method, on_problem=report_cache_problem)
                    jobs[key] = "done"
                except Exception as exc:  # noqa: BLE001 - shown by the page when it asks again
                    LOG.exception("background %s map failed", method)
                    jobs[key] = f"failed: {exc}"

            threading.Thread(target=work, name=f"map-{method}-{space}", daemon=True).start()
    return time.time() - started


def background_projection_error(run: RunConfig, space: str, method: str) -> str | None:
    state = _background_maps().get((run, space, method))
    return state[len("failed: "):] if isinstance(state, str) and state.startswith("failed: ") else None


def clear_disk_cache() -> int:
    """Remove every disk-cache file and drop the in-memory models, views and maps (every session recomputes on
    its next request). Returns the number of files removed."""
    store = artifacts.disk_store()
    removed = store.clear() if store is not None else 0
    with _model_store()["lock"]:
        _model_store()["models"].clear()
    get_view.clear()
    _projection.clear()
    _background_maps().clear()
    get_calculator.clear()  # fitted inverses (defined below)
    _spread_inverses.clear()
    return removed


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


def _fit_options(spec: tuple) -> dict:
    """The solver options of a spec; the full-data exact reference forms its Gauss-Newton matrix from the layer
    pieces of nn.Linear models (``matrix="structured"``: one matrix product per layer pair instead of p HVPs;
    others fall back)."""
    sampler, _, _, solver = spec
    options = dict(SOLVER_OPTIONS.get(solver, {}))
    if sampler is None and solver == "exact":
        options["matrix"] = "structured"
    return options


def _inverse_configs(run: RunConfig, specs: list, damping: float, objective, samples: list) -> list[dict]:
    return [artifacts.inverse_config(run, spec, damping, CURVATURE, _fit_options(spec), objective, sample)
            for spec, sample in zip(specs, samples)]


@st.cache_resource(show_spinner=False, max_entries=24)
def get_calculator(run: RunConfig, sampler: str | None, m: int, seed: int, solver: str, damping: float):
    """A fitted InfluenceCalculator (and a lock: ``scores`` records ``last_solve``, so one caller at a time).

    ``sampler=None`` is the full-data Hessian. The fitted inverse comes from the disk cache when it holds it (no
    refit after a restart; see :func:`ui.artifacts.load_or_fit_inverses`), else it is fitted and saved."""
    model, dataset = get_model(run), get_dataset(run.data)
    calc = ic.InfluenceCalculator(model, dataset.X_train, dataset.y_train)
    sample = None if sampler is None else get_sample(run, sampler, m, seed)
    spec = (sampler, int(m), int(seed), solver)

    def fit(_missing: list[int]) -> list:
        if sample is not None:  # the spread's fit (exact: low-rank Woodbury with the Linear-layer Gram)
            from influence_core import fit_across_samples

            return fit_across_samples(calc.objective, [sample], solver=solver, damping=float(damping),
                                      curvature=CURVATURE, **SOLVER_OPTIONS.get(solver, {}))
        calc.fit(hessian_indices=sample, solver=solver, damping=float(damping), curvature=CURVATURE,
                 **_fit_options(spec))
        return [calc.inverse]

    (inverse,), _ = artifacts.load_or_fit_inverses(
        run, calc.objective, _inverse_configs(run, [spec], damping, calc.objective, [sample]), fit,
        on_problem=report_cache_problem)
    if calc.inverse is not inverse:
        calc.use_fitted(inverse)
    return calc, threading.Lock()


@st.cache_resource(show_spinner=False, max_entries=MAX_MODELS)
def _spread_calculator(run: RunConfig):
    """An unfitted InfluenceCalculator of the run (its objective and scoring), with a lock, for the spread."""
    model, dataset = get_model(run), get_dataset(run.data)
    return ic.InfluenceCalculator(model, dataset.X_train, dataset.y_train), threading.Lock()


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


@st.cache_resource(show_spinner=False, max_entries=4)  # each entry holds one fitted inverse per spec
def _spread_inverses(run: RunConfig, specs: tuple[Spec, ...], damping: float) -> list:
    """The fitted inverses of the spread's specs (on the spread calculator's objective), kept in memory for the
    next test point: from the disk cache, the missing ones fitted together by ``fit_across_samples``."""
    from influence_core import fit_across_samples

    calc, _ = _spread_calculator(run)
    samples = [get_sample(run, *spec[:3]) for spec in specs]
    solver = specs[0][3]

    def fit_missing(missing: list[int]) -> list:
        return fit_across_samples(calc.objective, [samples[i] for i in missing], solver=solver,
                                  damping=float(damping), curvature=CURVATURE, **SOLVER_OPTIONS.get(solver, {}))

    inverses, _ = artifacts.load_or_fit_inverses(run, calc.objective,
                                                 _inverse_configs(run, list(specs), damping, calc.objective, samples),
                                                 fit_missing, on_problem=report_cache_problem)
    return inverses


@st.cache_data(show_spinner=False, max_entries=128)
def seed_spread(run: RunConfig, samplers: tuple[str, ...], m: int, seeds: tuple[int, ...], solver: str,
                damping: float, test_index: int, k: int) -> list[dict]:
    """Per sampler and seed: Spearman and top-k overlap of the scores against the full-data Hessian's.

    All samplers × seeds at once (``influence_core.influence.across_samples``): fitted inverses from the disk
    cache when there, the missing ones fitted together (per-point Gauss-Newton pieces shared, exact low-rank
    solve), the test gradient once and one scoring pass."""
    from influence_core import scores_across_samples

    specs = tuple((name, int(m), int(s), solver) for name in samplers for s in seeds)
    ref = reference_row(run, damping, test_index)["scores"]
    calc, lock = _spread_calculator(run)
    inverses = _spread_inverses(run, specs, float(damping))
    dataset, i = get_dataset(run.data), int(test_index)
    with lock:
        scores, _ = scores_across_samples(calc, inverses, dataset.X_test[i:i + 1], dataset.y_test[i:i + 1])
    return [{"sampler": spec[0], "seed": spec[2], "spearman_vs_full": metrics.spearman(row[0], ref),
             "topk_overlap_vs_full": metrics.topk_overlap(row[0], ref, k)}
            for spec, row in zip(specs, scores)]


# ---------------------------------------------------------------------------------------------------- removal


@st.cache_resource(show_spinner=False, max_entries=4)
def get_removal_task(run: RunConfig):
    """``influence_core.removal.class_removal.ClassRemoval`` for the model (caches g_c and retrained references), with a lock."""
    from influence_core import ClassRemoval

    return ClassRemoval(get_model(run), get_dataset(run.data)), threading.Lock()


def removal_solver_choices() -> list[str]:
    """Every registered solver (the removal's curvature is Gauss-Newton, so K-FAC/EK-FAC apply)."""
    from influence_core import removal_solvers

    return removal_solvers()


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
    settings and shared by all sessions, as a cancellable background job (:func:`run_job`; a cancel during the
    reference retraining stores no reference); ``progress(fraction, message)`` draws its progress (on this
    script's thread) only when it is computed. Returns a copy (callers may not mutate the shared record)."""
    key = (run, int(removed_class), sampler, int(m), int(seed), solver, float(damping), bool(reference), bool(memory))
    store = _removal_store()
    with store["lock"]:
        if key in store["records"]:
            store["records"].move_to_end(key)
            return copy.deepcopy(store["records"][key])
    task, lock = get_removal_task(run)

    def compute(job_progress: Callable[[float, str], None]) -> dict:  # a background job: no Streamlit here
        with lock:
            with store["lock"]:  # another session may have computed it while this one waited for the task
                if key in store["records"]:
                    return store["records"][key]
            result = task.run(int(removed_class), sampler, int(m), int(seed), solver=solver,
                              damping=float(damping), retrain_reference=reference, measure_memory=memory,
                              progress=job_progress, **REMOVAL_SOLVER_OPTIONS.get(solver, {})).to_dict()
        with store["lock"]:
            store["records"][key] = result
            while len(store["records"]) > MAX_REMOVAL_RECORDS:
                store["records"].popitem(last=False)
        return result

    result = run_job(("removal",) + key, f"Class removal of class {int(removed_class)}, {sampler}, seed {int(seed)}",
                     compute, draw=progress)
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
