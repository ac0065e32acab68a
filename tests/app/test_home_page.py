"""The Home page and the models kept in memory: which model is dropped first (the quickest to retrain), the list of
kept models, whether the trained model is stationary, the MNIST-1D hint with its suggested settings, and the
sidebar's name for the page."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from apptest_helpers import ok

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def fake_model(seconds):
    return SimpleNamespace(training_report={"seconds": seconds})


def test_evict_one_drops_the_cheapest_model_not_the_oldest():
    from collections import OrderedDict

    from ui.state import evict_one

    models = OrderedDict(
        [
            ("cnn mnist5k", fake_model(367.0)),
            ("mlp digits", fake_model(2.0)),
            ("logreg digits", fake_model(0.5)),
            ("new", fake_model(0.1)),
        ]
    )
    assert evict_one(models, keep="new") == "logreg digits"  # not the 367 s CNN (oldest), not the new one
    assert evict_one(models, keep="new") == "mlp digits"
    assert list(models) == ["cnn mnist5k", "new"]
    models["a"], models["b"] = fake_model(5.0), fake_model(5.0)
    assert evict_one(models, keep="new") == "a"  # equal cost: the least recently used goes first


def test_home_lists_the_kept_models(app_page, fast_run):
    at = ok(app_page("app.py").run())
    captions = [c.value for c in at.caption if c.value.startswith("Models kept in memory")]
    assert captions and "quickest to retrain is dropped first" in captions[0]
    assert "mlp on digits" in captions[0] and "s to train" in captions[0]


def test_home_says_whether_the_model_is_stationary(app_page, trained_fast_run):
    from ui.state import get_model

    report = get_model(trained_fast_run).training_report
    at = ok(app_page("app.py").run())
    captions = " ".join(c.value for c in at.caption)
    expected = "Stationary:" if report["grad_tol_reached"] else "Gradient norm of the full training objective"
    assert expected in captions and f"{report['grad_norm']:.1e}" in captions


def test_mnist1d_low_accuracy_shows_the_hint_and_the_suggested_settings(app_page):
    from ui.config import MNIST1D_SUGGESTED, DataConfig, ModelConfig, RunConfig

    weak = RunConfig(data=DataConfig(name="mnist1d", num_samples=200), model=ModelConfig(epochs=2, polish_steps=5))
    at = ok(app_page("app.py", run=weak).run())
    at.button[0].click()  # train the weak model
    ok(at.run())
    assert any("MNIST-1D is built to be hard" in w.value for w in at.warning)
    assert at.button(key="mnist1d_suggested").label == "Train the suggested MNIST-1D model"
    assert MNIST1D_SUGGESTED.data.num_samples >= 5000 and MNIST1D_SUGGESTED.model.hidden >= 64


def test_sidebar_names_the_home_page():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "app.py").read_text()
    assert 'st.Page("pages/0_Home.py", title="Home"' in source and "st.navigation(" in source
