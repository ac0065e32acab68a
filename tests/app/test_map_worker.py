"""ui.map_worker: UMAP maps in a worker process of their own (never holding the server's GIL)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from influence_core.sampling.projection import project_2d


@pytest.mark.slow
def test_the_worker_process_computes_what_the_calling_thread_would_and_survives_being_killed():
    from ui import map_worker

    X = np.random.default_rng(0).normal(size=(50, 6))
    pid = map_worker.run_in_worker(os.getpid)
    assert pid != os.getpid()  # another process
    assert np.array_equal(map_worker.run_in_worker(project_2d, X, "pca"), project_2d(X, "pca"))
    assert map_worker.run_in_worker(os.nice, 0) >= map_worker.NICE  # at lowered priority
    os.kill(pid, signal.SIGKILL)  # killed (out of memory, by hand): the next call gets a new worker
    assert map_worker.run_in_worker(os.getpid) not in (pid, os.getpid())


def test_umap_maps_go_to_the_worker_when_it_is_on_and_pca_stays_here(monkeypatch, tmp_path):
    from ui import artifacts, map_worker
    from ui.config import RunConfig

    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE_DIR", str(tmp_path))
    sent = []
    monkeypatch.setattr(
        map_worker, "run_in_worker", lambda fn, *a, **k: sent.append((fn, a[1:], k)) or project_2d(a[0], "pca")
    )
    X = np.random.default_rng(1).normal(size=(40, 5))
    monkeypatch.setenv("INFLUENCE_EXPLORER_MAP_PROCESS", "1")
    artifacts.load_or_project(RunConfig(), X, "features", "umap")
    artifacts.load_or_project(RunConfig(), X, "features", "pca")
    assert sent == [(project_2d, ("umap", 0), artifacts.UMAP_OPTIONS)]
    monkeypatch.setenv("INFLUENCE_EXPLORER_MAP_PROCESS", "0")
    assert not map_worker.enabled() and not map_worker.warm_up_in_background(("exact",))
