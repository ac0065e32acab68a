"""Tests of influence_core.evaluation.ground_truth (shipped LDS ground truth) and ``lds score --ground-truth`` /
``lds ground-truth``: a real tiny build (300 digits, logistic regression, K = 4 subsets, R = 2 seeds, 12 test points),
its round trip, refusals (pickles, wrong shapes, a foreign recipe), agreement with ``lds()`` on the same retrains,
and the committed files of ``ground_truth/``."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

import influence_core as ic
from influence_core.cli.main import main
from influence_core.evaluation.ground_truth import (
    GROUND_TRUTHS,
    GroundTruth,
    GroundTruthSpec,
    build_ground_truth,
    compare_ground_truths,
    ground_truth_dir,
    lds_against,
    load_ground_truth,
    save_ground_truth,
)
from influence_core.evaluation.lds import RetrainPlan, lds, retrain_outputs

TINY_PLAN = RetrainPlan(n_subsets=4, alpha=0.5, n_seeds=2, subsets_seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(spec, ground truth, its .npz path, retrain cache dir): a real build on 300 digits."""
    root = tmp_path_factory.mktemp("gt")
    d = load_digits()
    data = root / "digits300.npz"
    np.savez(data, X_train=d.data[:240], y_train=d.target[:240], X_test=d.data[240:300], y_test=d.target[240:300])
    spec = GroundTruthSpec(
        "tiny",
        "npz",
        "logreg",
        {"dtype": "float64", "weight_decay": 1e-2},
        dataset_options={"path": str(data)},
        n_test_points=12,
        plan=TINY_PLAN,
    )
    cache = root / "cache"
    gt = build_ground_truth(spec, cache_dir=cache)
    path = save_ground_truth(gt, root / "tiny.npz")
    return spec, gt, path, cache


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(dst, **arrays)
    return dst


def test_round_trip_and_recipe(tiny):
    _, gt, path, _ = tiny
    back = load_ground_truth(path)
    for name in ("masks", "logits", "full_logits", "test_indices", "y_test"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gt, name))
    assert back.recipe == gt.recipe == json.loads(path.with_suffix(".json").read_text())
    assert back.logits.dtype == np.float32 and back.logits.shape == (2, 4, 12, 10)
    assert back.masks.shape == (4, 240) and back.masks.sum(axis=1).tolist() == [120] * 4
    assert not back.partial and back.recipe["k_done"] == 4
    assert back.recipe["model"]["retrain_recipe"]["dtype"] == "float64"
    assert back.recipe["noise_ceiling"]["loss"]["ceiling"] > 0.99  # convex: the seeds agree


def test_lds_against_equals_lds_on_the_same_retrains(tiny):
    spec, gt, path, cache = tiny
    from influence_core.data.datasets import load_dataset
    from influence_core.models.training import train_model
    from influence_core.studies.lds import full_data_scores

    ds = load_dataset("npz", path=spec.dataset_options["path"])
    model = train_model(ds, "logreg", seed=0, **spec.train_settings)
    retrained = retrain_outputs(model, ds, TINY_PLAN, cache_dir=cache, max_retrains=0)
    assert retrained.info["retrained"] == 0 and retrained.info["missing"] == 0
    _, S = full_data_scores(model, ds, gt.test_indices, "exact", damping=0.01)
    rng = np.random.default_rng(0)
    for scores in (S, rng.normal(size=S.shape)):
        for output in ("loss", "margin"):
            a = lds(scores, retrained, gt.test_indices, output)
            b = lds_against(scores, path, output)
            assert b.lds == pytest.approx(a.lds, abs=1e-6)
            np.testing.assert_allclose(b.per_test, a.per_test, atol=1e-6)
            assert b.ceiling == pytest.approx(a.ceiling, abs=1e-6)
    assert lds_against(S, gt).lds > 0.5 > lds_against(-S, gt).lds  # a wrong sign is caught


def test_partial_build_keeps_the_finished_prefix(tiny, tmp_path):
    spec, gt, _, _ = tiny
    part = build_ground_truth(spec, cache_dir=tmp_path / "cache", max_retrains=5)  # subsets 0, 1 and half of 2
    assert part.k_done == 2 and part.partial and part.recipe["partial"]
    np.testing.assert_array_equal(part.logits, gt.logits[:, :2])
    back = load_ground_truth(save_ground_truth(part, tmp_path / "part.npz"))
    assert back.partial and back.k_done == 2
    c = compare_ground_truths(gt, back)
    assert c["ok"] and c["subsets_compared"] == 2 and c["max_abs_logit_diff"] == 0.0
    with pytest.raises(ValueError, match="only 0 of 4 subsets"):
        build_ground_truth(spec, cache_dir=tmp_path / "empty", max_retrains=0)


def test_loading_refuses_pickles_wrong_shapes_and_foreign_recipes(tiny, tmp_path, monkeypatch):
    _, _, path, _ = tiny
    with np.load(path, allow_pickle=False) as f:
        logits, recipe = f["logits"], json.loads(str(f["recipe"]))
    pickled = _rewrite(path, tmp_path / "pickled.npz", recipe=np.array([{"recipe": recipe}], dtype=object))
    with pytest.raises(ValueError, match="holds pickled objects"):
        load_ground_truth(pickled)
    with pytest.raises(ValueError, match=r"logits must be float32 \(R, K_done, T, C\) = \(2, 4, 12, 10\)"):
        load_ground_truth(_rewrite(path, tmp_path / "short.npz", logits=logits[:, :, :11]))
    with pytest.raises(ValueError, match="float32"):
        load_ground_truth(_rewrite(path, tmp_path / "f64.npz", logits=logits.astype(np.float64)))
    with pytest.raises(ValueError, match="NaN"):
        bad = logits.copy()
        bad[0, 0, 0, 0] = np.nan
        load_ground_truth(_rewrite(path, tmp_path / "nan.npz", logits=bad))
    other = dict(recipe, plan=dict(recipe["plan"], subsets_seed=1))
    with pytest.raises(ValueError, match="not the ones drawn by the recipe"):
        load_ground_truth(_rewrite(path, tmp_path / "seed.npz", recipe=np.array(json.dumps(other))))
    with pytest.raises(ValueError, match="not declare format"):
        load_ground_truth(_rewrite(path, tmp_path / "fmt.npz", recipe=np.array(json.dumps({"format": "x"}))))
    with pytest.raises(ValueError, match="lacks the arrays"):
        np.savez(tmp_path / "other.npz", scores=np.zeros((2, 2)))
        load_ground_truth(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz|pickle"):
        load_ground_truth(tmp_path / "junk.npz")
    # a valid file under a registered name whose recipe is not that name's
    monkeypatch.setenv("INFLUENCE_GROUND_TRUTH_DIR", str(tmp_path))
    (tmp_path / "digits_mlp.npz").write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="different recipe than the registered 'digits_mlp'"):
        load_ground_truth("digits_mlp")
    assert zipfile.is_zipfile(path)


def test_lds_against_refuses_a_wrong_shape(tiny):
    _, gt, _, _ = tiny
    with pytest.raises(ValueError, match=r"\(n_test, n_train\) = \(12, 240\)"):
        lds_against(np.zeros((12, 239)), gt)
    with pytest.raises(ValueError, match="output must be one of"):
        lds_against(np.zeros((12, 240)), gt, "accuracy")


def test_cli_scores_a_matrix_and_refuses_a_wrong_shape(tiny, tmp_path, capsys):
    _, gt, path, _ = tiny
    rng = np.random.default_rng(1)
    S = rng.normal(size=(12, 240))
    np.save(tmp_path / "s.npy", S)
    out = tmp_path / "r.json"
    assert (
        main(["lds", "score", "--ground-truth", str(path), "--scores", str(tmp_path / "s.npy"), "--json", str(out)])
        == 0
    )
    record = json.loads(out.read_text())
    assert record["result"]["lds"] == pytest.approx(lds_against(S, gt).lds, abs=1e-12)
    assert "LDS" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", S[:, :-1])
    assert main(["lds", "score", "--ground-truth", str(path), "--scores", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(n_test, n_train) = (12, 240)" in err[0] and "(12, 239)" in err[0]
    assert (
        main(["lds", "score", "--ground-truth", str(tmp_path / "nope.npz"), "--scores", str(tmp_path / "s.npy")]) == 2
    )
    assert "no file" in capsys.readouterr().err


def test_registered_recipes_match_the_studies_and_the_app():
    from ui.config import ModelConfig

    assert GROUND_TRUTHS["mnist5k_cnn"].train_settings == ModelConfig(arch="cnn").train_kwargs()
    for name, spec in GROUND_TRUTHS.items():
        assert (spec.plan.n_subsets, spec.plan.alpha, spec.plan.n_seeds) == (100, 0.5, 2), name
        assert (spec.n_test_points, spec.test_seed, spec.seed) == (100, 0, 0), name


# --------------------------------------------------------------------------------------------------------------------
# The committed files
# --------------------------------------------------------------------------------------------------------------------

COMMITTED = sorted(p.stem for p in ground_truth_dir().glob("*.npz"))


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_files_load_and_match_their_study(name):
    gt = load_ground_truth(name)
    assert isinstance(gt, GroundTruth) and gt.name == name and gt.k_done >= 2
    doc = {
        "digits_mlp": "docs/lds/digits_mlp.json",
        "mnist5k_mlp": "docs/lds/mnist5k_mlp.json",
        "digits_logreg": "docs/lds/digits_logreg_score.json",
    }.get(name)
    if doc:  # the same retrains as the committed study: same cache key and test points
        record = json.loads((Path(__file__).resolve().parents[2] / doc).read_text())
        retrain = record.get("context", {}).get("retrain") or record["retrain"]
        assert gt.recipe["cache_key"] == retrain["cache_key"]
        assert gt.test_indices.tolist() == record["test_indices"]


@pytest.mark.skipif("digits_logreg" not in COMMITTED, reason="ground_truth/digits_logreg.npz not built")
def test_shipped_digits_logreg_reproduces_the_committed_exact_influence_lds():
    """docs/LDS.md: exact full-data influence (damping 0.01) on digits logistic regression, LDS 0.815."""
    from influence_core.data.datasets import load_dataset
    from influence_core.models.training import train_model
    from influence_core.studies.lds import full_data_scores

    gt = load_ground_truth("digits_logreg")
    ds = load_dataset("digits")
    model = train_model(ds, "logreg", seed=0, dtype="float64")
    _, S = full_data_scores(model, ds, gt.test_indices, "exact", damping=0.01)
    result = lds_against(S, gt)
    assert result.lds == pytest.approx(0.815, abs=0.01) if not gt.partial else result.lds > 0.6
    assert lds_against(S[:, np.random.default_rng(0).permutation(S.shape[1])], gt).lds < 0.2


@pytest.mark.slow
@pytest.mark.skipif("digits_mlp" not in COMMITTED, reason="ground_truth/digits_mlp.npz not built")
def test_shipped_digits_mlp_reproduces_the_committed_exact_influence_lds():
    """docs/LDS.md: exact full-data Gauss-Newton influence (damping 0.01) on the digits MLP, LDS 0.755; gradient dot
    0.463."""
    from influence_core.data.datasets import load_dataset
    from influence_core.models.training import train_model
    from influence_core.studies.lds import full_data_scores, gradient_dot_scores

    gt = load_ground_truth("digits_mlp")
    ds = load_dataset("digits")
    model = train_model(ds, "mlp", seed=0)
    _, S = full_data_scores(model, ds, gt.test_indices, "exact", damping=0.01)
    assert lds_against(S, gt).lds == pytest.approx(0.755, abs=0.01)
    assert lds_against(gradient_dot_scores(model, ds, gt.test_indices), gt).lds == pytest.approx(0.463, abs=0.01)


def test_cli_builds_and_checks_a_registered_ground_truth(tiny, tmp_path, monkeypatch, capsys):
    spec, gt, _, cache = tiny
    import influence_core.evaluation.ground_truth as module

    monkeypatch.setitem(module.GROUND_TRUTHS, "tiny", spec)
    monkeypatch.setenv("INFLUENCE_GROUND_TRUTH_DIR", str(tmp_path))
    assert main(["lds", "ground-truth", "tiny", "--cache", str(cache), "--max-retrains", "0", "--quiet"]) == 0
    assert "4 of 4 subsets" in capsys.readouterr().out
    built = load_ground_truth("tiny")
    np.testing.assert_array_equal(built.logits, gt.logits)
    assert main(["lds", "ground-truth", "tiny", "--cache", str(cache), "--check", "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out
    # a committed file whose outputs are not these retrains' (subsets in reverse order) fails the check
    shuffled = built.logits[:, ::-1].copy()
    _rewrite(tmp_path / "tiny.npz", tmp_path / "tiny.npz", logits=np.ascontiguousarray(shuffled))
    assert main(["lds", "ground-truth", "tiny", "--cache", str(cache), "--check", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert "DIFFERENT" in out and len(err.strip().splitlines()) == 1


def test_retrain_recipe_keeps_the_cnn_recipe_and_leaves_default_keys_out():
    """The CNN's cosine schedule and bounded polish must reach the retrains (else each retrain would run the MLP's
    recipe); settings left at their defaults stay out of the recipe, so the studies' cache keys are unchanged."""
    from dataclasses import asdict

    from torch import nn

    from influence_core.evaluation.lds import _training_recipe
    from influence_core.models.training import TrainingConfig

    cnn = nn.Linear(1, 1)
    cnn.training_config = {**asdict(TrainingConfig(arch="cnn", **GROUND_TRUTHS["mnist5k_cnn"].train_settings))}
    recipe = _training_recipe(cnn)
    assert recipe["lr_schedule"] == "cosine" and recipe["max_polish_steps"] == 60 and recipe["batch_size"] == 128
    mlp = nn.Linear(1, 1)
    mlp.training_config = {**asdict(TrainingConfig(arch="mlp")), "hidden": [64]}
    assert not {"lr_schedule", "max_polish_steps", "grad_tol", "width"} & set(_training_recipe(mlp))


# Whether a model is a shipped ground truth's model: its recipe (from the model or from its settings), its key, the
# registered ground truths of a recipe, and the recipe read from a file.
SMALL = {"epochs": 2, "hidden": (8,), "polish_steps": 10}


@pytest.fixture(scope="module")
def digits_split0():
    return ic.load_dataset("digits", seed=0)


def test_recipe_from_settings_is_the_trained_models_and_the_key_follows_every_input(digits_split0):
    model = ic.train_model(digits_split0, "mlp", seed=3, **SMALL)
    recipe = ic.training_recipe("mlp", 3, **SMALL)
    assert ic.model_recipe(model) == recipe
    key = ic.retrain_key(digits_split0, recipe)
    assert key == ic.retrain_key(digits_split0, ic.model_recipe(model), ic.RetrainPlan())
    assert ic.retrain_key(digits_split0, ic.training_recipe("mlp", 4, **SMALL)) != key  # another seed
    assert ic.retrain_key(digits_split0, ic.training_recipe("mlp", 3, **{**SMALL, "hidden": (9,)})) != key
    assert ic.retrain_key(ic.load_dataset("digits", seed=1), recipe) != key  # another split
    assert ic.retrain_key(digits_split0, recipe, ic.RetrainPlan(alpha=0.25)) != key


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


def test_shipped_recipe_reads_the_files_key_and_refuses_what_is_not_a_ground_truth(digits_split0, tmp_path):
    recipe = ic.shipped_recipe("digits_mlp")
    assert recipe["cache_key"] == ic.retrain_key(digits_split0, ic.spec_recipe("digits_mlp"))
    assert recipe == ic.load_ground_truth("digits_mlp").recipe
    np.savez(tmp_path / "other.npz", recipe=np.array('{"format": "something else"}'))
    np.savez(tmp_path / "bare.npz", x=np.zeros(3))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    for name in ("other.npz", "bare.npz", "broken.npz", "missing.npz"):
        assert ic.shipped_recipe(tmp_path / name) is None
    assert (ground_truth_dir() / "digits_mlp.npz").is_file()
