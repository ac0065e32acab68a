"""Fixtures for the app tests: AppTest runs on a small, fast training configuration (real digits data, real
training, few epochs), and the browser test launches Debian's chromium through pytest-playwright."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("INFLUENCE_EXPLORER_WARM_UP", "0")  # no background UMAP warm-up in the tests
# UMAP in the calling thread (the tests stand in for it); tests/app/test_map_worker.py tests the worker process
os.environ.setdefault("INFLUENCE_EXPLORER_MAP_PROCESS", "0")
# Jobs in threads of the test process (fast, and the tests' in-process doubles are seen); tests/app/test_workers.py
# starts a Dask cluster of worker processes itself
os.environ.setdefault("INFLUENCE_EXPLORER_WORKERS", "0")
# A fresh disk cache per test session (never the project's .app-cache/): tests see untrained models as untrained.
os.environ.setdefault("INFLUENCE_EXPLORER_CACHE_DIR", tempfile.mkdtemp(prefix="influence-explorer-test-cache-"))

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_gate import CHROMIUM_ARGS, chromium_or_skip  # noqa: E402  (tests/app is on sys.path)


@pytest.fixture(scope="session")
def fast_run():
    """A small MLP (8 hidden units, 3 Adam epochs + 10 L-BFGS steps) on digits: trains in ~1 s, 610 parameters."""
    from ui.config import ModelConfig, RunConfig

    return RunConfig(model=ModelConfig(hidden=8, epochs=3, polish_steps=10))


@pytest.fixture(scope="session")
def trained_fast_run(fast_run):
    """Train the fast configuration once (into the app's shared model cache, as another session would)."""
    from ui.state import get_model

    get_model(fast_run)
    return fast_run


@pytest.fixture(scope="module")
def wine_run():
    """The real wine data (178 points, 13 features of very different scales) uploaded as a .npz."""
    import io

    import numpy as np
    from sklearn.datasets import load_wine

    from ui.config import DataConfig, ModelConfig, RunConfig

    w = load_wine()
    buf = io.BytesIO()
    np.savez(buf, X_train=w.data, y_train=w.target)
    payload = buf.getvalue()
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    run = RunConfig(
        data=DataConfig(name="npz", npz_digest=digest, npz_filename="wine.npz"),
        model=ModelConfig(hidden=8, epochs=20, polish_steps=20),
    )
    return run, {digest: payload}


@pytest.fixture
def app_page(trained_fast_run):
    fast_run = trained_fast_run
    """``app_page("pages/1_Samplers.py")`` -> an AppTest of that script with the fast configuration in session state."""
    from streamlit.testing.v1 import AppTest

    def make(path: str, run=None, timeout: float = 120):
        at = AppTest.from_file(str(ROOT / path), default_timeout=timeout)
        at.session_state["run_config"] = run or fast_run
        return at

    return make


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright: launch the system chromium (never a downloaded browser)."""
    path = chromium_or_skip()
    return {**browser_type_launch_args, "executable_path": path, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(autouse=True)
def _restore_main_module():
    """AppTest runs page scripts as ``__main__`` and leaves them in ``sys.modules``; a later test that starts a
    "spawn" worker process would then re-run the page in the child. Put the real ``__main__`` back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def failing_sampler():
    """A registered sampler that raises ``kind`` (default MemoryError): the engine failing in a way the pages did not
    catch before (they caught only ValueError / RuntimeError). Yields a setter for the exception type."""
    from influence_core.sampling.samplers import SAMPLERS, register_sampler

    state = {"kind": MemoryError}

    @register_sampler("exploding")
    def exploding(inputs, pool, m, rng):
        raise state["kind"]("simulated failure inside the engine")

    try:
        yield state
    finally:
        SAMPLERS.pop("exploding", None)
