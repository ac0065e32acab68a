"""What the pages ask for, shared by every session: everything expensive is computed once per small hashable key.

- Heavy work (training, fits, scoring, the across-seed spread, class removal) runs as jobs on the Dask workers
  (:mod:`ui.workers`, the functions of :mod:`ui.compute`): a page submits the job's keys, draws its progress with a
  Cancel button (:func:`run_job`) and keeps the (small) result here for every session (:func:`job_result`).
  Identical requests share one job.
- Datasets, trained models (built from the arrays the training job returns), their views and Hessian samples
  are ``st.cache_resource`` objects or in-memory stores: shared read-only across sessions (never mutate them).
- 2-D maps come from the disk cache or the map worker process (:mod:`ui.map_worker`).

Keys are :class:`ui.config.RunConfig` plus a few scalars. All maths is done by ``influence_core``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

import influence_core as ic
from influence_core import Cancelled, confidence

from . import artifacts, compute, jobs, workers
from .config import CURVATURE, DataConfig, RunConfig, run_from_query, run_to_query
from .workers import Task

# The app's models are small (thousands of parameters): torch's intra-op threads only add synchronisation, which on
# a shared machine slows training down many times (docs/APP.md has the measurement).
torch.set_num_threads(int(os.environ.get("INFLUENCE_EXPLORER_TORCH_THREADS", "1")))

LOG = logging.getLogger("influence_explorer")
RUN_KEY = "run_config"
PAYLOAD_KEY = "npz_payloads"
MAX_MODELS = 8
INTERACTIVE_EXACT_MAX_PARAMS = compute.INTERACTIVE_EXACT_MAX_PARAMS
MAX_RESULTS = 1024


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
    return jobs.JobBoard(make=workers.make_job)


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
        if stopped
        else f"Cancelled: {label}, for this session. Another session still waits for it, so the work "
        "goes on for them (and its result is then cached)."
    )


def clear_cancelled() -> None:
    """Forget this session's cancellations: an explicit request (a Train or Run button, "Start again") runs the
    work again."""
    st.session_state.pop(CANCELLED_KEY, None)


def run_job(
    key: tuple, label: str, compute: Callable[[ic.Progress], object], draw: Callable[[float, str], None] | None = None
):
    """``compute(progress)`` as a shared background job (:class:`ui.jobs.JobBoard`; one per ``key`` for all
    sessions), waited for here with a progress bar (or the page's own ``draw(fraction, message)``) and a Cancel
    button. ``compute`` runs in another thread: it must not call Streamlit (resolve datasets, models and caches
    before). Returns its result; raises its error, or :class:`influence_core.progress.Cancelled` when this session
    cancelled it (now or earlier: a cancelled key is not restarted until :func:`clear_cancelled`).

    Pressing Cancel reruns the page (Streamlit interrupts this wait at its next bar update, within a quarter of a
    second); its callback cancels the job unless another session still waits on it (the rule is in
    :mod:`ui.jobs`). Any other click leaves the job running: the rerun page finds it and waits again.

    ``compute`` is a :class:`ui.workers.Task` (run on the Dask workers) or a plain callable (run in a thread of this
    process). Outside a session (``python -m ui.prepare``, tests calling this module directly) the work runs to its
    end without a page (:func:`ui.workers.call`)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return workers.call(compute) if isinstance(compute, Task) else compute(lambda f, m: None)
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

            st.button(
                "Cancel",
                key=_job_widget_key(key),
                on_click=_cancel_pressed,
                args=(key, label),
                help="Stops this computation at its next step (if no other session is waiting for it); "
                "nothing half-done is kept.",
            )
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
    # an upload is kept in the disk cache under its digest, where the workers find it (ui.artifacts.dataset)
    return artifacts.dataset(cfg, _payload, on_problem=report_cache_problem)


def _payload(cfg: DataConfig) -> bytes | None:
    """The upload's bytes for a job, whenever the session holds them: the workers find an upload in the disk cache
    by its key, but the cache may have evicted it (its byte budget, another session's clean-up) while this process
    still holds the dataset in memory, and a job without the bytes would then fail with "upload it again"."""
    if cfg.name != "npz":
        return None
    return st.session_state.get(PAYLOAD_KEY, {}).get(cfg.npz_digest)


def get_dataset(cfg: DataConfig) -> ic.Dataset:
    """The dataset for ``cfg`` (raises :class:`influence_core.DatasetError` with a clear message)."""
    payload = st.session_state.get(PAYLOAD_KEY, {}).get(cfg.npz_digest) if cfg.name == "npz" else None
    return _load_dataset(cfg, payload)


# ---------------------------------------------------------------------------------------------------- models


@st.cache_resource(show_spinner=False)
def _model_store() -> dict:
    """Models in memory, shared by all sessions: {run: model} (most recently used last), their views' arrays, a
    lock for the dicts, and the recent disk-cache problems (shown on the home page)."""
    return {"models": OrderedDict(), "views": {}, "lock": threading.Lock(), "problems": deque(maxlen=20)}


def report_cache_problem(message: str) -> None:
    """A corrupt or foreign disk-cache file (already removed and being recomputed): logged and kept for the home
    page's cache section."""
    LOG.warning("disk cache: %s", message)
    _model_store()["problems"].append(message)


def cache_problems() -> list[str]:
    """The disk-cache problems met by this process and by the workers (see :func:`ui.compute.report_problem`)."""
    seen = list(_model_store()["problems"])
    try:
        for found in workers.run_everywhere(compute.problems):
            seen.extend(found)  # every event, repeats included: the same file can go bad twice
    except Exception:  # noqa: BLE001 - the workers are unreachable: show what this process saw
        pass
    return seen


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


def adopt_model(run: RunConfig, trained: dict):
    """The model of a finished training job (:func:`ui.compute.train`: its arrays, record and view), kept in
    memory for every session (or the one another session adopted first)."""
    from influence_core import model_from_arrays

    store = _model_store()
    with store["lock"]:
        if run in store["models"]:
            store["models"].move_to_end(run)
            return store["models"][run]
        model = model_from_arrays(trained["arrays"], trained["record"])
        model.training_report = dict(trained["report"])
        store["models"][run] = model
        store["views"][run] = trained["view"]
        while len(store["models"]) > MAX_MODELS:
            store["views"].pop(evict_one(store["models"], keep=run), None)
        return model


def _train_task(run: RunConfig) -> Task:
    return Task(compute.train, (run, _payload(run.data)))


def get_model(run: RunConfig):
    """The trained model for ``run``: from memory, else loaded or trained by a worker (waited for without a
    page: the pages call :func:`ensure_model` first, which shows progress and Cancel); shared read-only."""
    store = _model_store()
    with store["lock"]:
        if run in store["models"]:
            store["models"].move_to_end(run)
            return store["models"][run]
    return adopt_model(run, workers.call(_train_task(run)))


def ensure_model(run: RunConfig):
    """Train if needed and return the model; page-level helper. Loading or training runs as a shared job on the
    workers (:func:`run_job`: a progress bar and a Cancel button, emptied when it ends, so they never stay on the
    page above an error); raises ``Cancelled`` when this session cancelled it."""
    if run in _model_store()["models"]:
        return get_model(run)
    get_dataset(run.data)  # here: an upload's bytes live in this session (and go to the disk cache for the workers)
    action = "Loading" if has_model(run) else "Training"
    trained = run_job(("model", run), f"{action} {run.model.arch} on {run.data.label()}", _train_task(run))
    for message in trained.get("problems", []):
        st.warning(f"Disk cache: {message}.")
    return adopt_model(run, trained)


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
    model = get_model(run)
    a = _model_store()["views"].get(run)
    if a is None:
        a = artifacts.load_or_view(run, model, get_dataset(run.data), on_problem=report_cache_problem)
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
    return (
        method == "pca"
        or artifacts.map_is_stored(run, space, method)
        or _background_maps().get((run, space, method)) == "done"
    )


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
    return state[len("failed: ") :] if isinstance(state, str) and state.startswith("failed: ") else None


def forget_in_memory() -> None:
    """Drop every in-memory result, model and view, here and on the workers (the disk cache stays): as after a
    server restart."""
    with _model_store()["lock"]:
        _model_store()["models"].clear()
        _model_store()["views"].clear()
    with _results()["lock"]:
        _results()["records"].clear()
        _results()["references"].clear()
    get_view.clear()
    get_sample.clear()
    _projection.clear()
    _background_maps().clear()
    workers.run_everywhere(compute.forget)


def clear_disk_cache() -> int:
    """Remove every disk-cache file and drop the in-memory models, views, maps and results (every session
    recomputes on its next request). Returns the number of files removed."""
    store = artifacts.disk_store()
    removed = store.clear() if store is not None else 0
    forget_in_memory()
    return removed


# ---------------------------------------------------------------------------------------------------- samples


@st.cache_resource(show_spinner=False, max_entries=128)
def get_sample(run: RunConfig, sampler: str, m: int, seed: int, pool: tuple[int, ...] | None = None):
    """A Hessian sample (raises ValueError with a clear message for impossible settings, e.g. m > pool); drawn
    from the model's view as the workers draw it (:func:`ui.compute.sample`)."""
    return ic.sample_hessian_subset(
        get_model(run),
        get_dataset(run.data),
        sampler,
        int(m),
        seed=int(seed),
        pool=None if pool is None else np.asarray(pool),
        inputs=get_view(run).inputs,
    )


# ---------------------------------------------------------------------------------------------------- results


@st.cache_resource(show_spinner=False)
def _results() -> dict:
    """The results of finished jobs, shared by all sessions: {job key: result} (most recently used last, at most
    ``MAX_RESULTS``), the class-removal references' test predictions, and a lock.

    Not ``st.cache_data``: that cache records the Streamlit calls made inside the function and replays them on a
    hit, so the progress bar and Cancel button drawn while a job runs raised ``CacheReplayClosureError`` on the
    second request. Here a hit never touches any element."""
    return {"records": OrderedDict(), "references": {}, "lock": threading.Lock()}


def job_result(key: tuple, label: str, task: Task, draw: Callable[[float, str], None] | None = None):
    """``task``'s result for ``key``: from memory when a session computed it before, else as a shared job
    (:func:`run_job`: progress, Cancel) whose result is then kept for every session. Returns a copy (callers may
    not mutate the shared result)."""
    store = _results()
    with store["lock"]:
        if key in store["records"]:
            store["records"].move_to_end(key)
            return copy.deepcopy(store["records"][key])
    result = run_job(key, label, task, draw)
    keep(key, result)
    return copy.deepcopy(result)


def keep(key: tuple, result) -> None:
    store = _results()
    with store["lock"]:
        store["records"][key] = result
        while len(store["records"]) > MAX_RESULTS:
            store["records"].popitem(last=False)


def has_result(key: tuple) -> bool:
    return key in _results()["records"]


# ---------------------------------------------------------------------------------------------------- influence

Spec = tuple  # (sampler | None, m, seed, solver): one Hessian sample and solver; sampler None = full data


def reference_solver(run: RunConfig) -> str:
    """Solver of the full-data reference: exact for small models (one factorisation), CG otherwise."""
    return "exact" if get_view(run).n_params <= INTERACTIVE_EXACT_MAX_PARAMS else "cg"


def reference_spec(run: RunConfig) -> Spec:
    return (None, get_dataset(run.data).n_train, 0, reference_solver(run))


def _specs(specs) -> tuple:
    return tuple((s[0], int(s[1]), int(s[2]), s[3]) for s in specs)


def get_calculator(run: RunConfig, sampler: str | None, m: int, seed: int, solver: str, damping: float):
    """A fitted InfluenceCalculator and its lock, in THIS process (:func:`ui.compute.calculator`; for tools and
    tests: the pages' work runs on the workers)."""
    return compute.calculator(run, (sampler, int(m), int(seed), solver), float(damping), _payload(run.data))


def rows_key(run: RunConfig, specs, damping: float, test_index: int) -> tuple:
    return ("rows", run, _specs(specs), float(damping), int(test_index))


def influence_rows(run: RunConfig, specs: tuple[Spec, ...], damping: float, test_index: int) -> list[dict]:
    """Scores of every training point on test point ``test_index`` (n_train,) for each spec, with the solve
    records (:func:`ui.compute.influence_rows`), as a shared job with progress and Cancel."""
    specs = _specs(specs)
    what = "the full-data Hessian" if len(specs) == 1 and specs[0][0] is None else f"{len(specs)} Hessians"
    return job_result(
        rows_key(run, specs, damping, test_index),
        f"Influence on test point #{int(test_index)} under {what}",
        Task(compute.influence_rows, (run, specs, float(damping), int(test_index), _payload(run.data))),
    )


def influence_row(
    run: RunConfig, sampler: str | None, m: int, seed: int, solver: str, damping: float, test_index: int
) -> dict:
    return influence_rows(run, ((sampler, int(m), int(seed), solver),), damping, test_index)[0]


def reference_row(run: RunConfig, damping: float, test_index: int) -> dict:
    return influence_rows(run, (reference_spec(run),), damping, test_index)[0]


def spread_specs(samplers: tuple[str, ...], m: int, seeds: tuple[int, ...], solver: str) -> tuple:
    return tuple((name, int(m), int(s), solver) for name in samplers for s in seeds)


def spread_key(
    run: RunConfig,
    samplers: tuple[str, ...],
    m: int,
    seeds: tuple[int, ...],
    solver: str,
    damping: float,
    test_index: int,
    k: int,
) -> tuple:
    return (
        "spread",
        run,
        tuple(samplers),
        int(m),
        tuple(int(s) for s in seeds),
        solver,
        float(damping),
        int(test_index),
        int(k),
    )


def seed_spread(
    run: RunConfig,
    samplers: tuple[str, ...],
    m: int,
    seeds: tuple[int, ...],
    solver: str,
    damping: float,
    test_index: int,
    k: int,
) -> list[dict]:
    """Per sampler and seed: Spearman and top-k overlap of the scores against the full-data Hessian's
    (:func:`ui.compute.seed_spread`: fitted inverses from the disk cache when there, the missing ones fitted
    together), as a shared job with progress and Cancel."""
    key = spread_key(run, samplers, m, seeds, solver, damping, test_index, k)
    task = Task(
        compute.seed_spread,
        (
            run,
            tuple(samplers),
            int(m),
            tuple(int(s) for s in seeds),
            solver,
            float(damping),
            int(test_index),
            int(k),
            reference_spec(run),
            _payload(run.data),
        ),
    )
    return job_result(key, f"Spread across {len(seeds)} seeds on test point #{int(test_index)}", task)


def spread_cost(
    run: RunConfig, samplers: tuple[str, ...], m: int, seeds: tuple[int, ...], solver: str, damping: float
) -> tuple[int, int]:
    """(Hessian samples the spread needs, how many of them are already fitted on disk), for the page's caption.
    Iterative solvers store nothing: all of theirs count as to be solved."""
    specs = spread_specs(samplers, m, seeds, solver)
    if solver in ("cg", "lissa") or artifacts.disk_store() is None:
        return len(specs), 0
    calc_objective = None
    stored = 0
    for spec in specs:
        try:
            sample = get_sample(run, *spec[:3])
            if calc_objective is None:
                calc_objective = _objective(run)
            config = artifacts.inverse_config(
                run, spec, damping, CURVATURE, compute.fit_options(spec), calc_objective, sample
            )
            stored += artifacts.inverse_is_stored(config)
        except Exception:  # noqa: BLE001 - the caption is a hint; the job reports real errors
            return len(specs), 0
    return len(specs), stored


@st.cache_resource(show_spinner=False, max_entries=MAX_MODELS)
def _objective(run: RunConfig):
    """The model's objective (θ, for the fitted inverses' keys): no fitting, a few milliseconds."""
    dataset = get_dataset(run.data)
    return ic.InfluenceCalculator(get_model(run), dataset.X_train, dataset.y_train).objective


# ---------------------------------------------------------------------------------------------------- removal


def removal_solver_choices() -> list[str]:
    """Every registered solver (the removal's curvature is Gauss-Newton, so K-FAC/EK-FAC apply)."""
    from influence_core import removal_solvers

    return removal_solvers()


def _removal_key(
    run: RunConfig,
    removed_class: int,
    sampler: str,
    m: int,
    seed: int,
    solver: str,
    damping: float,
    reference: bool,
    memory: bool,
) -> tuple:
    return (
        "removal",
        run,
        int(removed_class),
        sampler,
        int(m),
        int(seed),
        solver,
        float(damping),
        bool(reference),
        bool(memory),
    )


def removal_run(
    run: RunConfig,
    removed_class: int,
    sampler: str,
    m: int,
    seed: int,
    solver: str,
    damping: float,
    reference: bool,
    memory: bool,
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """One class removal (``ClassRemoval.run``, :func:`ui.compute.removal`) as its JSON record, computed once per
    settings and shared by all sessions, as a cancellable job (a cancel during the reference retraining stores no
    reference); ``progress(fraction, message)`` draws its progress (on this script's thread) while it is
    computed. Returns a copy (callers may not mutate the shared record)."""
    key = _removal_key(run, removed_class, sampler, m, seed, solver, damping, reference, memory)
    with _results()["lock"]:
        record = _results()["records"].get(key)
    if record is None:
        task = Task(
            compute.removal,
            (
                run,
                int(removed_class),
                sampler,
                int(m),
                int(seed),
                solver,
                float(damping),
                bool(reference),
                bool(memory),
                _payload(run.data),
            ),
        )
        record = run_job(
            key, f"Class removal of class {int(removed_class)}, {sampler}, seed {int(seed)}", task, draw=progress
        )
        record = dict(record)
        predictions = record.pop("reference_test_pred", None)
        if predictions is not None:
            with _results()["lock"]:
                _results()["references"][(run, int(removed_class))] = predictions
        keep(key, record)
    return copy.deepcopy(record)


def removal_is_cached(
    run: RunConfig,
    removed_class: int,
    sampler: str,
    m: int,
    seed: int,
    solver: str,
    damping: float,
    reference: bool,
    memory: bool,
) -> bool:
    return has_result(_removal_key(run, removed_class, sampler, m, seed, solver, damping, reference, memory))


def reference_predictions(run: RunConfig, removed_class: int) -> np.ndarray:
    """Test predictions of the model retrained from scratch without the class (from a removal run with the
    reference, else retrained as a job)."""
    found = _results()["references"].get((run, int(removed_class)))
    if found is not None:
        return found.copy()
    return job_result(
        ("reference_pred", run, int(removed_class)),
        f"Retraining without class {int(removed_class)}",
        Task(compute.reference_predictions, (run, int(removed_class), _payload(run.data))),
    )
