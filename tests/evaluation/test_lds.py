"""Tests of influence_core.evaluation.lds (the linear datamodeling score, its noise ceiling and the resumable retrain
cache),
influence_core.studies.lds and the ``lds`` command, on small real problems (digits subsets; logistic regression retrains
take a fraction of a second each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from influence_core import dataset_from_arrays, influence_scores, train_model
from influence_core.cli.main import main
from influence_core.config import InfluenceConfig
from influence_core.evaluation.lds import (
    RetrainPlan,
    draw_subsets,
    lds,
    linear_datamodeling_score,
    noise_ceiling,
    output_values,
    retrain_outputs,
)
from influence_core.studies.faithfulness import StudyConfig
from influence_core.studies.lds import run_lds_study, verdict


@pytest.fixture(scope="module")
def small():
    """300 digits, logistic regression in float64 trained to the optimum (convex: the influence function is exact to
    first order, so its LDS must be high)."""
    d = load_digits()
    ds = dataset_from_arrays(
        d.data[:300], d.target[:300], name="digits300", image_shape=(8, 8), test_fraction=0.2, seed=0
    )
    model = train_model(ds, "logreg", seed=0, weight_decay=1e-2, dtype="float64")
    return ds, model


PLAN = RetrainPlan(n_subsets=12, alpha=0.5, n_seeds=1, subsets_seed=0)
TEST = np.arange(0, 60, 3)


@pytest.fixture(scope="module")
def retrained(small, tmp_path_factory):
    ds, model = small
    return retrain_outputs(model, ds, PLAN, cache_dir=tmp_path_factory.mktemp("lds-cache"))


def test_lds_is_one_for_perfect_predictions_and_near_zero_for_shuffled():
    rng = np.random.default_rng(0)
    masks = draw_subsets(80, 300, 0.5, seed=1)
    scores = rng.normal(size=(40, 80))
    exact = (~masks).astype(float) @ scores.T  # (K, T): the linear prediction
    assert linear_datamodeling_score(scores, masks, exact)["lds"] == pytest.approx(1.0)
    # a monotone transform of the actual outputs changes nothing (rank correlation)
    assert linear_datamodeling_score(scores, masks, np.exp(exact / 10))["lds"] == pytest.approx(1.0)
    shuffled = np.stack([rng.permutation(col) for col in exact.T], axis=1)
    value = linear_datamodeling_score(scores, masks, shuffled)["lds"]
    assert abs(value) < 0.05
    assert linear_datamodeling_score(-scores, masks, exact)["lds"] == pytest.approx(-1.0)  # sign convention matters


def test_subsets_are_seeded_and_of_size_alpha_n():
    a, b = draw_subsets(101, 5, 0.3, seed=2), draw_subsets(101, 7, 0.3, seed=2)
    assert a.shape == (5, 101) and np.all(a.sum(1) == 30)
    assert np.array_equal(a, b[:5])  # subset k does not depend on K (the cache reuses it when K grows)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a, draw_subsets(101, 5, 0.3, seed=3))


def test_outputs_loss_and_margin():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    y = np.array([0, 2])
    loss = output_values(logits, y, "loss")
    expected = -np.log(np.exp(logits[[0, 1], y]) / np.exp(logits).sum(1))
    np.testing.assert_allclose(loss, expected)
    np.testing.assert_allclose(output_values(logits, y, "margin"), [-2.0, 2.0])  # −(z_y − max other)


def test_noise_ceiling_identical_seeds_independent_seeds_and_known_reliability():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(1, 3000, 10))
    assert noise_ceiling(np.repeat(signal, 2, axis=0))["ceiling"] == pytest.approx(1.0)
    assert abs(noise_ceiling(rng.normal(size=(2, 3000, 10)))["seed_agreement"]) < 0.03
    # outputs = signal + unit noise: per-seed reliability ≈ 0.5 → √(2·0.5/1.5) = 0.816 for the 2-seed mean
    noisy = signal + rng.normal(size=(2, 3000, 10))
    ceil = noise_ceiling(noisy)
    assert ceil["seed_agreement"] == pytest.approx(0.48, abs=0.03)  # Spearman of a bivariate normal with ρ = 0.5
    assert ceil["ceiling"] == pytest.approx(np.sqrt(2 * 0.48 / 1.48), abs=0.03)
    assert np.isnan(noise_ceiling(signal)["ceiling"])  # one seed: no ceiling


def test_exact_influence_on_logistic_regression_beats_a_threshold_random_scores_fail(small, retrained):
    ds, model = small
    exact = influence_scores(model, ds, TEST, config=InfluenceConfig.preset("exact"))  # true Hessian, δ = 0 (convex)
    good = lds(exact, retrained, TEST)
    bad = lds(np.random.default_rng(0).normal(size=exact.shape), retrained, TEST)
    assert good.lds > 0.6, good.lds
    assert bad.lds < 0.3, bad.lds
    assert good.ceiling != good.ceiling  # NaN: R = 1 has no ceiling
    assert retrained.info["max_grad_norm"] < 1e-6  # every retrain reached its optimum


def test_cache_resumes_after_an_interruption(small, retrained, tmp_path):
    ds, model = small

    class Stop(Exception):
        pass

    calls = []

    def interrupt(fraction, message):
        calls.append(message)
        if len(calls) == 4:  # the first call announces; then 3 retrains are done and saved
            raise Stop

    with pytest.raises(Stop):
        retrain_outputs(model, ds, PLAN, cache_dir=tmp_path, progress=interrupt)
    (key_dir,) = tmp_path.iterdir()
    assert len(list(key_dir.glob("k*_r*.npz"))) == 3
    resumed = retrain_outputs(model, ds, PLAN, cache_dir=tmp_path)
    assert resumed.info["cached"] == 3 and resumed.info["retrained"] == PLAN.n_subsets - 3
    np.testing.assert_allclose(resumed.logits, retrained.logits, rtol=1e-6, atol=1e-8)
    again = retrain_outputs(model, ds, PLAN, cache_dir=tmp_path)
    assert again.info["retrained"] == 0
    # a different configuration (another alpha) gets another key, never the cached retrains
    other = retrain_outputs(model, ds, RetrainPlan(n_subsets=2, alpha=0.6, n_seeds=1), cache_dir=tmp_path)
    assert other.info["retrained"] == 2 and len(list(tmp_path.iterdir())) == 2


def test_bad_input_gives_clear_errors(retrained):
    masks = draw_subsets(30, 4, 0.5)
    good = np.zeros((3, 30))
    with pytest.raises(ValueError, match="K >= 2"):
        linear_datamodeling_score(good, masks[:1], np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"n_subsets \(K\) must be an integer in \[2, 100000\]"):
        RetrainPlan(n_subsets=1)
    for alpha in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"alpha .* must be in \(0, 1\)"):
            RetrainPlan(alpha=alpha)
    with pytest.raises(ValueError, match=r"scores must be a \(n_test, n_train\)"):
        linear_datamodeling_score(np.zeros((3, 29)), masks, np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"outputs must be \(K, T\)"):
        linear_datamodeling_score(good, masks, np.zeros((4, 2)))
    nan = good.copy()
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="found 1 NaN/inf"):
        linear_datamodeling_score(nan, masks, np.random.default_rng(0).normal(size=(4, 3)))
    with pytest.raises(ValueError, match="one row per test point"):
        lds(np.zeros((2, retrained.masks.shape[1])), retrained, TEST)


def test_verdict_reads_the_goal_off_the_summary():
    def rec(s, m, mean, std):
        return {"sampler": s, "m": m, "lds_mean": mean, "lds_std": std}

    summary = [
        rec("random", 32, 0.20, 0.05),
        rec("random", 64, 0.25, 0.05),
        rec("random", 128, 0.295, 0.05),
        rec("good", 32, 0.22, 0.02),
        rec("good", 64, 0.296, 0.005),
        rec("good", 128, 0.30, 0.004),
    ]
    v = verdict(summary, full_lds=0.30)
    assert v["m_reached"] == {"random": 128, "good": 64} and v["best"] == "good"
    assert v["m_condition"] and v["std_condition"] and v["goal_met"]
    v = verdict(summary[:3] + [rec("good", 128, 0.30, 0.004)], full_lds=0.30)
    assert v["best"] == "good" and not v["m_condition"] and not v["goal_met"]  # same m as random: no saving
    assert verdict(summary[:3], full_lds=0.5)["best"] is None


def test_study_and_cli(small, tmp_path, capsys):
    ds, _ = small
    d = load_digits()
    mlp_data = dataset_from_arrays(d.data[:300], d.target[:300], name="digits300", test_fraction=0.2, seed=0)
    mlp = train_model(mlp_data, "mlp", seed=0, hidden=(4,), epochs=2, polish_steps=5)
    config = StudyConfig(
        dataset="digits300",
        arch="mlp",
        samplers=("random", "logit"),
        ms=(8, 16),
        n_seeds=2,
        n_test_points=5,
        train_settings={"hidden": (4,), "epochs": 2, "polish_steps": 5},
    )
    result = run_lds_study(
        config, RetrainPlan(n_subsets=3, n_seeds=2), dataset=mlp_data, model=mlp, cache_dir=tmp_path / "cache"
    )
    assert [b["method"] for b in result.baselines] == ["full-data influence", "gradient dot"]
    assert len(result.rows) == 2 * 2 * 2 and all(np.isfinite(r["lds"]) for r in result.rows)
    assert {(r["sampler"], r["m"]) for r in result.summary} == {(s, m) for s in ("random", "logit") for m in (8, 16)}
    assert 0 <= result.baselines[0]["ceiling"] <= 1

    data = tmp_path / "small.npz"
    np.savez(data, X_train=ds.X_train, y_train=ds.y_train, X_test=ds.X_test, y_test=ds.y_test)
    out_json = tmp_path / "score.json"
    argv = [
        "lds",
        "score",
        "--dataset",
        "npz",
        "--path",
        str(data),
        "--arch",
        "logreg",
        "--subsets",
        "3",
        "--retrain-seeds",
        "2",
        "--test-points",
        "4",
        "--cache",
        str(tmp_path / "cache"),
        "--json",
        str(out_json),
        "--sampler",
        "random",
        "--m",
        "20",
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| full-data influence (exact) |" in out and "| gradient dot |" in out and "| random m=20 seed=0 |" in out
    record = json.loads(out_json.read_text())
    assert len(record["records"]) == 3 and record["retrain"]["retrained"] == 6
    assert main(argv[:-1] + ["--subsets", "1", "--quiet"]) == 2
    assert "--subsets (K) must be an integer in [2, 100000]" in capsys.readouterr().err


# ------------------------------------------------------------------------------ input that cannot give a correlation
RNG = np.random.default_rng(3)
M6 = draw_subsets(10, 6, 0.5, seed=2)
S3, Y6 = RNG.normal(size=(3, 10)), RNG.normal(size=(6, 3))


@pytest.mark.parametrize(
    "scores, masks, outputs, message",
    [
        (S3, np.repeat(M6[:1], 6, axis=0), Y6, "all masks are identical"),  # was LDS 0.087 from rounding noise
        (S3, np.ones_like(M6), Y6, "keeps all training points"),  # was nan
        (np.ones_like(S3), M6, Y6, r"test row\(s\) \[0, 1, 2\].*same output for every subset"),  # was nan
        (np.vstack([S3[:2], np.zeros(10)]), M6, Y6, r"test row\(s\) \[2\]"),  # one zero row: was nan for it
        (S3, M6, np.ones_like(Y6), "retrained outputs of test row"),  # was nan
        (S3 + 1j, M6, Y6, "complex"),  # imaginary part was dropped
        (S3, M6, Y6 + 1j, "complex"),
    ],
)
def test_lds_refuses_input_without_a_meaningful_correlation(scores, masks, outputs, message):
    with pytest.raises(ValueError, match=message):
        linear_datamodeling_score(scores, masks, outputs)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([0, 1, -1], r"labels must be in \[0, 4\)"),  # was read as the last class
        ([0, 1, 7], r"labels must be in \[0, 4\)"),  # was an IndexError
        ([0, 1, 1.5], "labels must be integer indices"),  # was truncated to 1
        ([0, 1], "one class per test point"),
    ],
)
def test_output_values_refuses_labels_that_are_not_classes(labels, message):
    with pytest.raises(ValueError, match=message):
        output_values(RNG.normal(size=(3, 4)), np.array(labels))


@pytest.mark.parametrize("indices", [[0.7, 1.9], [True, False], ["a", "b"]])
def test_lds_refuses_test_indices_that_are_not_whole_numbers(retrained, indices):
    with pytest.raises(ValueError, match="test_indices must be integer indices"):
        lds(np.zeros((2, retrained.masks.shape[1])), retrained, indices)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: draw_subsets(100, 10**12, 0.5), r"n_subsets \(K\) must be an integer in \[2, 100000\]"),
        (lambda: draw_subsets(100, 4, 0.5, seed=2.5), "seed"),
        (lambda: draw_subsets(100, 4, 0.5, seed=-1), "seed"),
        (lambda: RetrainPlan(n_seeds=10**6), r"n_seeds \(R\) must be an integer in \[1, 1000\]"),
        (lambda: RetrainPlan(subsets_seed=2**40), "subsets_seed"),
    ],
)
def test_retrain_budgets_are_bounded_where_they_enter(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("threads", [-1, 2.5, 10**6])
def test_retrain_threads_are_checked(small, threads):
    ds, model = small
    with pytest.raises(ValueError, match="threads must be an integer in"):
        retrain_outputs(model, ds, PLAN, cache_dir=False, threads=threads)


def test_a_cache_dir_that_is_a_file_is_refused_before_any_retrain(small, tmp_path, monkeypatch):
    ds, model = small
    (tmp_path / "afile").write_text("x")
    import influence_core.evaluation.lds as lds_module

    monkeypatch.setattr(lds_module, "_retrain", lambda *a, **k: pytest.fail("retrained before the path check"))
    with pytest.raises(ValueError, match="cache_dir .* is a file, not a directory"):
        retrain_outputs(model, ds, PLAN, cache_dir=tmp_path / "afile")
