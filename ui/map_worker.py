"""UMAP maps in a worker process of their own, so their numba compilation and optimisation never hold the server's GIL.

Streamlit serves every session on a thread of one process. A UMAP map computed in a thread of that process (and the
compilation of umap-learn's numba code the first time it runs) holds the GIL for tens of seconds, so every other
session's page rerun and the server's websocket thread wait for it (seen by hand with py-spy during a cold start;
not a committed benchmark). Here one worker
process per server (``concurrent.futures.ProcessPoolExecutor``, ``spawn``, lowered CPU priority) does every UMAP
call; it compiles once (:func:`warm_up_in_background`, started with the server) and keeps the compiled code for the
server's lifetime. Only the arrays to map and the (n, 2) result cross the process boundary (our own numpy arrays,
through multiprocessing's pipe); PCA, a few milliseconds, stays in the calling thread.

``INFLUENCE_EXPLORER_MAP_PROCESS=0`` computes UMAP in the calling thread instead (the tests do, to stand in for it).
No Streamlit here.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from influence_core import project_2d

__all__ = ["enabled", "run_in_worker", "project", "warm_up_in_background", "WARM_UP_SIZES", "UMAP_OPTIONS"]

UMAP_OPTIONS = {"n_epochs": 200, "init": "pca"}  # fewer epochs from a PCA start: a quicker map, see project_2d
NICE = 10
WARM_UP_SIZES = {"exact": 300, "pynndescent": 4200}
"""umap-learn's two nearest-neighbour paths (exact distances below 4,096 points, pynndescent above) compile
separately: a (300, 16) and a (4200, 16) float32 array exercise them (``ui.warmup`` describes them)."""

_lock = threading.Lock()
_pool: concurrent.futures.ProcessPoolExecutor | None = None


def enabled() -> bool:
    return os.environ.get("INFLUENCE_EXPLORER_MAP_PROCESS", "1") != "0"


def _lower_priority() -> None:  # in the worker: the server and the browsers come first when both cores are busy
    try:
        os.nice(NICE)
    except (AttributeError, OSError):  # not permitted or not available: normal priority
        pass


def _worker() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )
        return _pool


def run_in_worker(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in the map worker process (``fn`` importable by name); blocks this thread only.
    A worker that died (killed, out of memory) is replaced on the next call and the call is retried once."""
    global _pool
    try:
        return _worker().submit(fn, *args, **kwargs).result()
    except concurrent.futures.process.BrokenProcessPool:
        with _lock:
            _pool = None
        return _worker().submit(fn, *args, **kwargs).result()


def project(X: np.ndarray, method: str = "umap", seed: int = 0, **options: Any) -> np.ndarray:
    """:func:`influence_core.sampling.projection.project_2d` in the worker process (callers route PCA, a few
    milliseconds, and the worker-off case to ``project_2d`` themselves: see ``ui.artifacts.load_or_project``)."""
    return run_in_worker(project_2d, np.ascontiguousarray(X), method, seed, **options)


def warm_up_in_background(paths: tuple[str, ...], options: dict[str, Any] = UMAP_OPTIONS) -> bool:
    """Start the worker and let it compile the given UMAP paths (``WARM_UP_SIZES``) with the app's options,
    without waiting. Returns False when the worker is off (:func:`enabled`)."""
    if not enabled():
        return False
    rng = np.random.default_rng(0)
    pool = _worker()
    for name in paths:
        pool.submit(project_2d, rng.normal(size=(WARM_UP_SIZES[name], 16)).astype(np.float32), "umap", 0, **options)
    return True
