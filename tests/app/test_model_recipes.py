"""Recipes: the training recipe each architecture gets (the CNN's bounded workshop recipe, the others polished to
the tolerance), a changed recipe never serves a model cached under the old one, and the Makefile's `make app` stamp
is satisfied by `make test`."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_make_app_is_satisfied_by_make_test():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    rule = re.search(r"^\$\(VENV\)/\.test: (.*)$", makefile, re.M).group(1)
    assert "$(VENV)/.app" in rule  # .test builds on .app, so `make app` after `make test` does nothing new


def test_the_cnn_trains_with_its_bounded_workshop_recipe_and_the_others_polish_to_the_tolerance():
    from ui.config import CNN_RECIPE, POLISH_STEPS, ModelConfig

    cnn = ModelConfig(arch="cnn").train_kwargs()
    assert cnn["lr_schedule"] == "cosine" and cnn["batch_size"] == 128
    assert cnn["polish_steps"] == cnn["max_polish_steps"] == CNN_RECIPE["polish_steps"]  # no float64 extension
    mlp = ModelConfig().train_kwargs()
    assert mlp["polish_steps"] == POLISH_STEPS and "max_polish_steps" not in mlp and "lr_schedule" not in mlp
    assert ModelConfig(polish_steps=7).train_kwargs()["polish_steps"] == 7
    assert ModelConfig(arch="cnn", polish_steps=3).train_kwargs()["polish_steps"] == 3


def test_a_changed_recipe_never_reuses_a_cached_model(monkeypatch):
    """The disk cache keys a model by the settings it was trained with, recipe included: a CNN cached under the
    old recipe is not served after ``CNN_RECIPE`` changes (the key held only the ModelConfig fields before)."""
    from ui import config
    from ui.config import ModelConfig, RunConfig

    run = RunConfig(model=ModelConfig(arch="cnn"))
    before = run.cache_key()
    assert before["train_kwargs"]["polish_steps"] == config.CNN_RECIPE["polish_steps"]
    monkeypatch.setattr(config, "CNN_RECIPE", {**config.CNN_RECIPE, "polish_steps": 1, "max_polish_steps": 1})
    assert run.cache_key() != before and run.to_dict() == RunConfig(model=ModelConfig(arch="cnn")).to_dict()
    assert RunConfig().cache_key()["train_kwargs"] == ModelConfig().train_kwargs()  # the MLP: unchanged
