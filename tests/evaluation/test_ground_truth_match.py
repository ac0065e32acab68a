"""Whether a model is a shipped ground truth's model: its retrain recipe (from the trained model or from the training
settings alone), its retrain-cache key, the registered ground truths of a recipe, and the recipe read from a file."""

from __future__ import annotations

import numpy as np
import pytest

import influence_core as ic
from influence_core.evaluation.ground_truth import GROUND_TRUTHS, ground_truth_dir

SMALL = {"epochs": 2, "hidden": (8,), "polish_steps": 10}


@pytest.fixture(scope="module")
def digits():
    return ic.load_dataset("digits", seed=0)


def test_recipe_from_settings_is_the_trained_models_and_the_key_follows_every_input(digits):
    model = ic.train_model(digits, "mlp", seed=3, **SMALL)
    recipe = ic.training_recipe("mlp", 3, **SMALL)
    assert ic.model_recipe(model) == recipe
    key = ic.retrain_key(digits, recipe)
    assert key == ic.retrain_key(digits, ic.model_recipe(model), ic.RetrainPlan())
    assert ic.retrain_key(digits, ic.training_recipe("mlp", 4, **SMALL)) != key  # another seed
    assert ic.retrain_key(digits, ic.training_recipe("mlp", 3, **{**SMALL, "hidden": (9,)})) != key
    assert ic.retrain_key(ic.load_dataset("digits", seed=1), recipe) != key  # another split
    assert ic.retrain_key(digits, recipe, ic.RetrainPlan(alpha=0.25)) != key


def test_registered_ground_truths_of_a_recipe():
    mlp = ic.spec_recipe("digits_mlp")
    assert ic.ground_truths_of_recipe("digits", 0, mlp) == ["digits_mlp"]
    assert ic.ground_truths_of_recipe("mnist5k", 0, mlp) == ["mnist5k_mlp"]  # the same recipe on MNIST-5k
    assert ic.ground_truths_of_recipe("digits", 1, mlp) == []  # another split seed
    assert ic.ground_truths_of_recipe("digits", 0, ic.training_recipe("mlp", 0, **SMALL)) == []
    spec = GROUND_TRUTHS["mnist5k_cnn"]
    assert ic.ground_truths_of_recipe("mnist5k", 0, ic.training_recipe("cnn", 0, **spec.train_settings)) == [
        "mnist5k_cnn"
    ]


def test_shipped_recipe_reads_the_files_key_and_refuses_what_is_not_a_ground_truth(digits, tmp_path):
    recipe = ic.shipped_recipe("digits_mlp")
    assert recipe["cache_key"] == ic.retrain_key(digits, ic.spec_recipe("digits_mlp"))
    assert recipe == ic.load_ground_truth("digits_mlp").recipe
    np.savez(tmp_path / "other.npz", recipe=np.array('{"format": "something else"}'))
    np.savez(tmp_path / "bare.npz", x=np.zeros(3))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    for name in ("other.npz", "bare.npz", "broken.npz", "missing.npz"):
        assert ic.shipped_recipe(tmp_path / name) is None
    assert (ground_truth_dir() / "digits_mlp.npz").is_file()
