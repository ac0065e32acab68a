"""Warm up what the app's first UMAP map really runs, so a student's first map does not pay numba's compilation.

The Samplers page maps ``np.vstack([train, test])`` features or logits (float32, n points) with
``project_2d(X, "umap", seed=0)``: ``n_neighbors=15``, spectral initialisation, and, inside umap-learn, two
different nearest-neighbour paths: an exact distance matrix for n < 4096 (digits: 1,797 points) and pynndescent's
approximate search for n >= 4096 (MNIST-5k: 5,000 points). Each path compiles its own numba code the first time it
runs in a process. :func:`warm_up_maps` runs both paths on small random arrays of the same dtype and width class.

``make app`` runs it once (``python -m ui.warmup``: numba's on-disk cache keeps what it can), and the server runs the
exact path again when it starts (:func:`start_in_background`, called by ``python -m ui.serve`` at launch and by
``app.py``), because most of the compiled code lives only in the process that compiled it (numba's on-disk cache
does not hold it all; docs/APP.md gives the measured first-map times). That process is the map worker
(:mod:`ui.map_worker`), where every UMAP of the server runs; with ``INFLUENCE_EXPLORER_MAP_PROCESS=0`` it is a
low-priority thread of the server instead.
Set ``INFLUENCE_EXPLORER_WARM_UP=0`` to skip it, ``=all`` to warm both paths.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from influence_core import project_2d

from . import map_worker
from .map_worker import UMAP_OPTIONS

PATHS = map_worker.WARM_UP_SIZES  # umap-learn's exact-distance path (n < 4096) and pynndescent path (n >= 4096)


def warm_up_maps(paths: tuple[str, ...] = ("exact", "pynndescent"), width: int = 16, nice: int = 0) -> dict[str, float]:
    """Run the app's UMAP call on a (300, width) array (exact path) and/or a (4200, width) float32 array
    (pynndescent path); returns the seconds per path. ``nice`` > 0 lowers this thread's CPU priority (Linux: a
    thread is a task of its own), so the OS prefers the students' requests when both cores are busy."""
    if nice and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not permitted here: warm up at normal priority
            pass
    rng = np.random.default_rng(0)
    seconds = {}
    for name in paths:
        n = PATHS[name]
        X = rng.normal(size=(n, width)).astype(np.float32)
        start = time.perf_counter()
        project_2d(X, method="umap", seed=0, **UMAP_OPTIONS)
        seconds[name] = time.perf_counter() - start
    return seconds


_started = threading.Event()
FIRST_PAGE_DRAWN = threading.Event()
"""Set by ``app.py`` once a page has been drawn (``ui.serve`` imports what later pages need after it)."""


def start_in_background() -> bool:
    """Start :func:`warm_up_maps` for the exact path (the default digits map; n < 4096) once per process in a
    daemon thread, unless INFLUENCE_EXPLORER_WARM_UP=0. The pynndescent path (MNIST-5k) is left to ``make app``:
    warming it in the server costs minutes of CPU next to the students' first requests; INFLUENCE_EXPLORER_WARM_UP=all
    warms both paths (for a MNIST-5k workshop)."""
    setting = os.environ.get("INFLUENCE_EXPLORER_WARM_UP", "1")
    if setting == "0" or _started.is_set():
        return False
    _started.set()
    paths = tuple(PATHS) if setting == "all" else ("exact",)
    if map_worker.enabled():  # in the map worker process, where every UMAP of this server runs
        return map_worker.warm_up_in_background(paths)
    threading.Thread(target=warm_up_maps, args=(paths,), kwargs={"nice": 10}, name="umap-warm-up", daemon=True).start()
    return True


if __name__ == "__main__":
    print({k: round(v, 1) for k, v in warm_up_maps().items()}, "seconds")
