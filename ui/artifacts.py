"""The app's disk cache: trained models, their views (sampler inputs, test logits and features), 2-D maps and fitted
inverses (the factorised (H_S + δI)⁻¹ of a Hessian sample and solver), kept in
:class:`influence_core.array_store.ArrayStore` files so nothing is computed twice, not even across a restart.

Keys are the full :class:`ui.config.RunConfig` (data, model and training settings; an upload by its SHA-256) plus
the map's space and method, and a code version per kind: a hash of the source of the engine modules that produce
it (:func:`influence_core.array_store.code_version`), so changed code never reuses an old file. Files are ``.npz``
with a JSON record, written atomically; a corrupt or foreign file is reported, removed and recomputed.

No Streamlit here: ``ui.state`` wraps these functions in its in-memory caches, and ``python -m ui.prepare`` (run by
``make app``) fills the cache with the default setup. The directory is ``$INFLUENCE_EXPLORER_CACHE_DIR`` or
``.app-cache/`` in the project root; ``INFLUENCE_EXPLORER_CACHE_DIR=off`` disables the disk cache.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import influence_core as ic
from influence_core import (
    ArrayStore,
    StoredEntry,
    StoreFileError,
    code_version,
    model_from_arrays,
    model_to_arrays,
    project_2d,
)

from . import cache_budget, map_worker
from .config import DataConfig, RunConfig
from .map_worker import UMAP_OPTIONS

__all__ = [
    "disk_store",
    "cache_dir",
    "load_or_train",
    "load_or_view",
    "load_or_project",
    "load_or_fit_inverses",
    "inverse_config",
    "describe_entry",
    "MODEL_KIND",
    "VIEW_KIND",
    "MAP_KIND",
    "INVERSE_KIND",
]

MODEL_KIND, VIEW_KIND, MAP_KIND, DATA_KIND, INVERSE_KIND = "model", "view", "map", "data", "inverse"
VIEW_ARRAYS = ("train_labels", "train_logits", "train_features", "test_logits", "test_features")
ProblemReport = Callable[[str], None]

_MODEL_MODULES = (
    "influence_core.models.training",
    "influence_core.models.zoo",
    "influence_core.models.storage",
    "influence_core.data.datasets",
)
_INVERSE_MODULES = (
    "influence_core.sampling.samplers",
    "influence_core.curvature.objective",
    "influence_core.curvature.gram",
    "influence_core.solvers.registry",
    "influence_core.solvers.exact",
    "influence_core.solvers.low_rank",
    "influence_core.solvers.kfac",
    "influence_core.solvers.arnoldi",
    "influence_core.solvers.fitted_io",
    "influence_core.influence.across_samples",
)


@cache
def _version(kind: str) -> str:
    modules = {
        DATA_KIND: ("influence_core.data.datasets", "influence_core.data.sources"),
        MODEL_KIND: _MODEL_MODULES,
        VIEW_KIND: _MODEL_MODULES + ("influence_core.sampling.samplers",),
        MAP_KIND: _MODEL_MODULES + ("influence_core.sampling.samplers", "influence_core.sampling.projection"),
        INVERSE_KIND: _MODEL_MODULES + _INVERSE_MODULES,
    }
    return code_version(*modules[kind])


DATASET_ARRAYS = ("X_train", "y_train", "X_test", "y_test", "mean", "scale")


def builtin_dataset(cfg: DataConfig, on_problem: ProblemReport | None = None) -> ic.Dataset:
    """A built-in dataset exactly as the app loads it, from the disk cache when it holds it: loading digits through
    scikit-learn costs the app's cold start the import of scikit-learn (seconds, by ``python -X importtime``),
    reading the stored arrays milliseconds. The arrays and the record are those of ``influence_core.load_dataset``
    bit for bit."""
    return dataset(cfg, None, on_problem)


def dataset(cfg: DataConfig, payload: bytes | None = None, on_problem: ProblemReport | None = None) -> ic.Dataset:
    """The dataset of ``cfg``: built-in (``influence_core.load_dataset``) or an upload (``cfg.name == "npz"``,
    ``influence_core.load_npz`` of ``payload``: validated, ``allow_pickle=False``), kept in the disk cache under
    the full ``cfg`` (an upload by its SHA-256), so a worker process finds an upload by its key alone. Raises
    :class:`influence_core.DatasetError` when an upload is neither stored nor given."""

    def compute() -> tuple[dict, dict]:
        if cfg.name == "npz":
            if payload is None:
                raise ic.DatasetError("the uploaded .npz is no longer on the server; upload it again on the home page")
            ds = ic.load_npz(payload, seed=cfg.seed, name=(cfg.npz_filename or "upload").rsplit(".", 1)[0])
        elif cfg.name == "mnist1d":
            ds = ic.load_dataset("mnist1d", seed=cfg.seed, num_samples=cfg.num_samples)
        else:
            ds = ic.load_dataset(cfg.name, seed=cfg.seed)
        return (
            {name: getattr(ds, name) for name in DATASET_ARRAYS},
            {
                "label": f"dataset {cfg.label()}",
                "name": ds.name,
                "class_names": list(ds.class_names),
                "image_shape": None if ds.image_shape is None else list(ds.image_shape),
                "info": ds.info,
            },
        )

    arrays, meta, _ = _cached(DATA_KIND, {"data": asdict(cfg)}, compute, on_problem)
    shape = meta["image_shape"]
    return ic.Dataset(
        name=meta["name"],
        class_names=tuple(meta["class_names"]),
        image_shape=None if shape is None else (int(shape[0]), int(shape[1])),
        info=meta["info"],
        **{name: arrays[name] for name in DATASET_ARRAYS},
    )


def cache_dir() -> Path | None:
    """The cache directory, or None when ``INFLUENCE_EXPLORER_CACHE_DIR=off``."""
    setting = os.environ.get("INFLUENCE_EXPLORER_CACHE_DIR", "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else Path(__file__).resolve().parent.parent / ".app-cache"


_stores: dict[Path, ArrayStore] = {}


def disk_store() -> ArrayStore | None:
    """The process's store for :func:`cache_dir` (one object per directory, so its per-entry locks are shared)."""
    root = cache_dir()
    if root is None:
        return None
    return _stores.setdefault(root, ArrayStore(root))


def _cached(
    kind: str, config: dict, compute: Callable[[], tuple[dict, dict]], on_problem: ProblemReport | None
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    store = disk_store()
    if store is None:
        arrays, meta = compute()
        return arrays, meta, False
    arrays, meta, loaded = store.get_or_compute(kind, config, _version(kind), compute, on_problem)
    _used(store, store.path(kind, config, _version(kind)), written=not loaded)
    return arrays, meta, loaded


def _used(store: ArrayStore, path: Path, written: bool) -> None:
    """``path`` was read or written: most recently used, leased by the running job; after a write, the cache is
    brought back within its size budget (:mod:`ui.cache_budget`)."""
    cache_budget.note_use(path)
    if written:
        cache_budget.enforce(store.root, keep=path)


def load_or_train(
    run: RunConfig, dataset: ic.Dataset, progress: ic.Progress | None = None, on_problem: ProblemReport | None = None
):
    """The trained model of ``run``: from the disk cache when it holds it (``training_report["loaded_from_disk"]``
    is then True and ``"seconds"`` is the original training time), else trained (with ``progress``) and saved."""

    def compute() -> tuple[dict, dict]:
        cfg = run.model
        model = ic.train_model(dataset, arch=cfg.arch, seed=cfg.seed, progress=progress, **cfg.train_kwargs())
        arrays, record = model_to_arrays(model)
        return arrays, {**record, "label": f"{cfg.arch} on {run.data.label()}"}

    arrays, meta, loaded = _cached(MODEL_KIND, run.cache_key(), compute, on_problem)
    model = model_from_arrays(arrays, meta)  # also when just trained: the same object either way
    model.training_report["loaded_from_disk"] = loaded
    return model


def load_or_view(
    run: RunConfig, model, dataset: ic.Dataset, on_problem: ProblemReport | None = None
) -> dict[str, np.ndarray]:
    """The arrays the pages show about a model (``VIEW_ARRAYS``): training labels, logits and penultimate
    features, and the test logits and features (features empty (n, 0) when the model has none)."""

    def compute() -> tuple[dict, dict]:
        inputs = ic.sampler_inputs(model, dataset)
        features = inputs.features if inputs.features is not None else np.zeros((len(inputs.labels), 0))
        return (
            {
                "train_labels": inputs.labels,
                "train_logits": inputs.logits,
                "train_features": features,
                "test_logits": ic.predict_logits(model, dataset.X_test),
                "test_features": ic.penultimate_features(model, dataset.X_test),
            },
            {"label": f"view of {run.model.arch} on {run.data.label()}"},
        )

    arrays, _, _ = _cached(VIEW_KIND, run.cache_key(), compute, on_problem)
    return arrays


def load_or_project(
    run: RunConfig, X: np.ndarray, space: str, method: str, on_problem: ProblemReport | None = None
) -> np.ndarray:
    """The (n, 2) map of ``X`` (the run's features or logits, train rows then test rows) by ``method``."""

    def compute() -> tuple[dict, dict]:
        start = time.perf_counter()
        if method == "umap" and map_worker.enabled():  # in the map worker process (ui.map_worker)
            xy = map_worker.project(X, method, seed=0, **UMAP_OPTIONS)
        else:
            xy = project_2d(X, method=method, seed=0, **(UMAP_OPTIONS if method == "umap" else {}))
        return {"xy": xy}, {
            "label": f"{method.upper()} of {space}, {run.model.arch} on {run.data.label()}",
            "seconds": time.perf_counter() - start,
        }

    arrays, _, _ = _cached(MAP_KIND, _map_config(run, space, method), compute, on_problem)
    return arrays["xy"]


def inverse_config(
    run: RunConfig, spec: tuple, damping: float, curvature: str, options: dict, objective: Any, sample: Any
) -> dict:
    """The key of one fitted inverse: the run, the spec (sampler or None = full data, m, seed, solver), damping,
    curvature and solver options, plus digests of the model's parameters θ and of the sample's indices and weights
    (so another model or another draw never finds it)."""
    from influence_core import digest as fingerprint  # the solvers are imported only when influence is asked

    sampler, m, seed, solver = spec
    indices = None if sample is None else np.asarray(sample.indices, dtype=np.int64)
    weights = None if sample is None or sample.weights is None else np.asarray(sample.weights, dtype=np.float64)
    return {
        "run": run.cache_key(),
        "sampler": sampler,
        "m": int(m),
        "seed": int(seed),
        "solver": solver,
        "damping": float(damping),
        "curvature": curvature,
        "options": dict(options),
        "theta": fingerprint(objective.theta),
        "sample": fingerprint(indices, weights),
    }


def _inverse_label(config: dict, run: RunConfig) -> str:
    what = "full data" if config["sampler"] is None else f"{config['sampler']} m={config['m']} seed {config['seed']}"
    return f"inverse: {config['solver']} on {what}, δ={config['damping']:g}, {run.model.arch} on {run.data.label()}"


def load_or_fit_inverses(
    run: RunConfig,
    objective: Any,
    configs: list[dict],
    fit_missing: Callable[[list[int]], list[Any]],
    on_problem: ProblemReport | None = None,
) -> tuple[list[Any], list[bool]]:
    """Fitted inverses for ``configs`` (see :func:`inverse_config`) on ``objective``: each from the disk cache when
    it holds it (no refit), else fitted by ``fit_missing(positions)`` (all missing ones in one call, so they can
    share work, e.g. ``fit_across_samples``) and saved. Iterative solvers (cg, lissa) have no fitted state: they
    are fitted (instantly) and never stored. A corrupt or foreign file is reported, removed and refitted.
    Returns (inverses, loaded flags)."""
    from influence_core import FittedStateError, inverse_from_arrays, inverse_to_arrays, is_storable

    store, version = disk_store(), _version(INVERSE_KIND)
    out: list[Any] = [None] * len(configs)
    loaded = [False] * len(configs)
    if store is not None:
        for i, config in enumerate(configs):
            path = store.path(INVERSE_KIND, config, version)
            try:
                found = store.load(INVERSE_KIND, config, version)
                if found is not None:
                    out[i], loaded[i] = inverse_from_arrays(objective, *found), True
                    _used(store, path, written=False)
            except (StoreFileError, FittedStateError) as exc:
                text = str(exc) if isinstance(exc, StoreFileError) else f"{path}: {exc}"
                if on_problem is not None:
                    on_problem(f"{text}; it was removed and the result is computed again")
                path.unlink(missing_ok=True)
    missing = [i for i, inv in enumerate(out) if inv is None]
    if missing:
        for i, fit in zip(missing, fit_missing(missing)):
            out[i] = fit
            if store is not None and is_storable(fit):
                arrays, meta = inverse_to_arrays(fit)
                path = store.save(
                    INVERSE_KIND, configs[i], version, arrays, {**meta, "label": _inverse_label(configs[i], run)}
                )
                _used(store, path, written=True)
    return out, loaded


def inverse_is_stored(config: dict) -> bool:
    return is_stored(INVERSE_KIND, config)


def is_stored(kind: str, config: dict) -> bool:
    store = disk_store()
    return store is not None and store.path(kind, config, _version(kind)).exists()


def map_is_stored(run: RunConfig, space: str, method: str) -> bool:
    return is_stored(MAP_KIND, _map_config(run, space, method))


def _map_config(run: RunConfig, space: str, method: str) -> dict:
    return {
        "run": run.cache_key(),
        "space": space,
        "method": method,
        "options": UMAP_OPTIONS if method == "umap" else {},
    }


def describe_entry(entry: StoredEntry) -> dict[str, Any]:
    """One row of the cache table on the home page."""
    meta = entry.meta or {}
    created = meta.get("created")
    return {
        "kind": entry.kind,
        "what": entry.label if entry.problem is None else f"unreadable: {entry.problem}",
        "size (kB)": round(entry.bytes / 1024, 1),
        "saved": time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "",
        "file": entry.path.name,
    }
