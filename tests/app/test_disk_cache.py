"""The app's disk cache (ui.artifacts over influence_core.array_store): a second server process loads what the first
trained and does not retrain; a corrupt or foreign file is reported on the home page and recomputed; the home page
lists and clears the cache; MNIST-1D does not offer the CNN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apptest_helpers import ok

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from ui import artifacts
from ui.config import ModelConfig, RunConfig
run = RunConfig(model=ModelConfig(hidden=8, epochs=2, polish_steps=5))
calls = []
start = time.perf_counter()
dataset = artifacts.builtin_dataset(run.data)
model = artifacts.load_or_train(run, dataset, progress=lambda f, m: calls.append(m))
view = artifacts.load_or_view(run, model, dataset)
import numpy as np
xy = artifacts.load_or_project(run, np.vstack([view["train_logits"], view["test_logits"]]), "logits", "pca")
print(json.dumps({"progress_calls": len(calls), "loaded": bool(model.training_report.get("loaded_from_disk")),
                  "accuracy": model.training_report["test_accuracy"], "xy0": xy[0].tolist(),
                  "files": len(artifacts.disk_store().entries())}))
"""


def _child(cache: Path) -> dict:
    env = {**os.environ, "INFLUENCE_EXPLORER_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_and_does_not_retrain(tmp_path):
    first = _child(tmp_path)
    assert first["progress_calls"] > 0 and not first["loaded"] and first["files"] == 4  # data, model, view, map
    second = _child(tmp_path)
    assert second["progress_calls"] == 0 and second["loaded"]  # no training step ran
    assert second["accuracy"] == first["accuracy"] and second["xy0"] == first["xy0"]
    assert second["files"] == 4


def test_a_stored_dataset_is_the_loaded_one_bit_for_bit_and_a_corrupt_one_is_reloaded(tmp_path, monkeypatch):
    import numpy as np

    import influence_core as ic
    from ui import artifacts
    from ui.config import DataConfig

    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE_DIR", str(tmp_path))
    cfg = DataConfig(name="mnist1d", num_samples=300, seed=3)
    expected = ic.load_dataset("mnist1d", seed=3, num_samples=300)
    first = artifacts.builtin_dataset(cfg)
    calls = []
    monkeypatch.setattr(ic, "load_dataset", lambda *a, **k: calls.append(a) or expected)
    second = artifacts.builtin_dataset(cfg)  # from the file: load_dataset is not called
    assert calls == []
    for got in (first, second):
        for name in artifacts.DATASET_ARRAYS:
            a, b = getattr(got, name), getattr(expected, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert got.describe() == expected.describe() and got.class_names == expected.class_names
        assert got.image_shape == expected.image_shape
    (entry,) = [e for e in artifacts.disk_store().entries() if e.kind == artifacts.DATA_KIND]
    entry.path.write_bytes(b"not an npz")
    problems = []
    third = artifacts.builtin_dataset(cfg, on_problem=problems.append)
    assert len(calls) == 1 and problems and "computed again" in problems[0]
    assert np.array_equal(third.X_train, expected.X_train)


def _home(app_page, run):
    return ok(app_page("app.py", run=run).run())


def test_home_lists_reports_and_clears_the_disk_cache(app_page):
    from ui import artifacts
    from ui.config import ModelConfig, RunConfig
    from ui.state import clear_disk_cache, get_model

    run = RunConfig(model=ModelConfig(hidden=7, epochs=2, polish_steps=5))
    get_model(run)
    at = _home(app_page, run)
    table = at.dataframe[0].value
    assert "mlp on digits" in " ".join(table["what"].astype(str))
    assert "model" in set(table["kind"])

    # corrupt the model file, forget the in-memory copy: the next load reports it, removes it and retrains
    store = artifacts.disk_store()
    path = store.path(artifacts.MODEL_KIND, run.cache_key(), artifacts._version(artifacts.MODEL_KIND))
    path.write_bytes(b"garbage")
    from ui.state import forget_in_memory

    forget_in_memory()  # here and in the worker processes (the tests' jobs run in this one)
    at = _home(app_page, run)
    assert any("cannot be read" in w.value and "computed again" in w.value for w in at.warning)
    assert at.metric  # the model was retrained and is shown
    assert store.load(artifacts.MODEL_KIND, run.cache_key(), artifacts._version(artifacts.MODEL_KIND)) is not None

    at.button(key="cache_clear").click()
    ok(at.run())
    assert any(s.value.startswith("Removed") and not s.value.startswith("Removed 0") for s in at.success)
    clear_disk_cache()
    assert store.entries() == []


def test_home_loads_a_model_from_disk_without_pressing_train(app_page, tmp_path, monkeypatch):
    """A model another process trained (e.g. `make app`'s ui.prepare) is shown at once, not 'Press Train'."""
    from ui import artifacts
    from ui.config import ModelConfig, RunConfig

    run = RunConfig(model=ModelConfig(hidden=6, epochs=2, polish_steps=5))
    artifacts.load_or_train(run, artifacts.builtin_dataset(run.data))  # as another process would
    at = _home(app_page, run)
    assert not any("Press **Train**" in i.value for i in at.info)
    assert {m.label for m in at.metric} >= {"Test accuracy"}


def test_mnist1d_does_not_offer_the_cnn(app_page):
    from ui.config import DataConfig, ModelConfig, RunConfig, arch_choices

    assert "cnn" not in arch_choices("mnist1d") and "cnn" in arch_choices("digits")
    assert "cnn" in arch_choices("npz")  # an upload may hold images; the engine checks image_shape
    run = RunConfig(
        data=DataConfig(name="mnist1d", num_samples=400), model=ModelConfig(hidden=8, epochs=1, polish_steps=2)
    )
    at = app_page("app.py", run=run)
    at.run()
    assert not any("CNN" in o for o in at.selectbox(key="form_arch").options)
    at = _home(app_page, RunConfig(model=ModelConfig(hidden=8, epochs=3, polish_steps=10)))
    assert any("CNN" in o for o in at.selectbox(key="form_arch").options)
    at.selectbox(key="form_arch").set_value("cnn")
    at.selectbox(key="form_dataset").set_value("mnist1d")  # switching keeps no CNN choice that would be refused
    ok(at.run())
    assert not any("CNN" in o for o in at.selectbox(key="form_arch").options)


def _gated_umap(monkeypatch):
    """Replace UMAP by a stand-in that waits for the returned gate (the maths of project_2d is tested in
    tests/sampling/test_projection.py; these tests test the pages' flow); returns (gate, the options of each UMAP
    call)."""
    import threading

    from influence_core.sampling.projection import project_2d
    from ui import artifacts

    gate, calls = threading.Event(), []

    def gated(X, method="pca", seed=0, **options):
        if method == "umap":
            calls.append(options)
            assert gate.wait(60)
            return project_2d(X, "pca")[:, ::-1].copy()  # distinguishable from PCA: columns swapped
        return project_2d(X, method, seed)

    monkeypatch.setattr(artifacts, "project_2d", gated)
    return gate, calls


def _wait_for_map(run, space: str, method: str = "umap", seconds: float = 10.0) -> None:
    """Until the background map is ready (the next page run then shows it)."""
    import threading

    from ui.state import projection_ready

    for _ in range(int(seconds / 0.1)):
        if projection_ready(run, space, method):
            return
        threading.Event().wait(0.1)


def test_samplers_shows_pca_while_umap_computes_in_the_background_then_umap(app_page, monkeypatch):
    """The first UMAP of a configuration runs in a background thread; the page shows PCA and a note meanwhile, and
    the UMAP map (kept on disk) once it is ready. UMAP itself is replaced by a gated stand-in (the maths of
    project_2d is tested in tests/sampling/test_projection.py): this tests the page's flow."""
    import numpy as np

    from ui import artifacts

    gate, calls = _gated_umap(monkeypatch)
    at = app_page("pages/1_Samplers.py")
    at.run()
    at.radio(key="smp_method").set_value("umap")
    ok(at.run())
    assert any("Computing the UMAP map" in i.value for i in at.info)
    assert calls == [artifacts.UMAP_OPTIONS]
    gate.set()
    run = at.session_state["run_config"]
    _wait_for_map(run, "features")
    ok(at.run())
    assert not any("Computing the UMAP map" in i.value for i in at.info)
    assert artifacts.map_is_stored(run, "features", "umap")  # on disk: instant after a restart
    assert len(calls) == 1
    xy = artifacts.load_or_project(run, np.zeros((1, 1)), "features", "umap")  # loaded, not recomputed
    assert xy.shape[1] == 2 and len(calls) == 1


def test_explorer_shows_pca_while_its_first_umap_runs_in_the_background(app_page, monkeypatch):
    """The Explorer page uses the same background map as the Samplers page (it used to block on the first UMAP)."""
    gate, _ = _gated_umap(monkeypatch)
    at = app_page("pages/6_Explorer.py")
    at.run()
    at.radio(key="exp_space").set_value("logits")
    at.radio(key="exp_method").set_value("umap")
    ok(at.run())  # returns while the UMAP is gated: the page did not block on it
    assert any("Computing the UMAP map" in i.value for i in at.info)
    gate.set()
    _wait_for_map(at.session_state["run_config"], "logits")
    ok(at.run())
    assert not any("Computing the UMAP map" in i.value for i in at.info)
