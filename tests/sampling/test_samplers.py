"""Tests of influence_core.sampling.samplers: the registry, draw_sample's validation, and each built-in rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influence_core.sampling.samplers import (
    SAMPLERS,
    HessianSample,
    SamplerInputs,
    available_samplers,
    confidence,
    curvature_proxy,
    draw_sample,
    inclusion_probabilities,
    int_distance_strata,
    logit_strata,
    margin,
    proportional_allocation,
    register_sampler,
    ridge_leverages,
    softmax,
)

BUILTINS = [
    "random",
    "feature",
    "logit",
    "class_stratified",
    "logit_kmeans",
    "importance",
    "int_distance",
    "ridge_leverage",
]
SEEDED_RANDOM = [
    ("random", {}),
    ("logit", {}),
    ("class_stratified", {}),
    ("importance", {}),
    ("ridge_leverage", {}),
    ("feature", {"pick": "random"}),
    ("int_distance", {}),
]


def make_inputs(n: int = 600, n_classes: int = 4, d: int = 16, seed: int = 0) -> SamplerInputs:
    """Unequal classes, features clustered by class, logits with a wide range of confidences."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(n_classes, size=n, p=np.linspace(1, 2, n_classes) / np.linspace(1, 2, n_classes).sum())
    centres = rng.normal(size=(n_classes, d)) * 3
    features = centres[labels] + rng.normal(size=(n, d))
    scale = rng.uniform(0.0, 4.0, size=(n, 1))
    logits = scale * np.eye(n_classes)[labels] + rng.normal(size=(n, n_classes))
    return SamplerInputs(labels=labels, logits=logits, features=features)


@pytest.fixture(scope="module")
def inputs() -> SamplerInputs:
    return make_inputs()


@pytest.fixture(scope="module")
def pool(inputs) -> np.ndarray:
    return np.flatnonzero(inputs.labels != 0)  # a class-removal pool


# ---------------------------------------------------------------------------------------------------------------
# Properties every built-in sampler must have
# ---------------------------------------------------------------------------------------------------------------


def test_builtins_are_registered():
    assert available_samplers()[: len(BUILTINS)] == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_size_unique_sorted_and_in_pool(inputs, pool, name):
    s = draw_sample(name, inputs, m=40, seed=3, pool=pool)
    assert isinstance(s, HessianSample)
    assert len(s) == s.m == 40 and s.sampler == name and s.seed == 3
    assert s.indices.dtype == np.int64
    assert np.all(np.diff(s.indices) > 0)  # sorted and unique
    assert np.all(np.isin(s.indices, pool))
    if s.weights is not None:
        assert s.weights.shape == (40,) and np.all(s.weights > 0)


@pytest.mark.parametrize("name", BUILTINS)
def test_deterministic_per_seed(inputs, pool, name):
    a = draw_sample(name, inputs, m=30, seed=11, pool=pool)
    b = draw_sample(name, inputs, m=30, seed=11, pool=pool)
    np.testing.assert_array_equal(a.indices, b.indices)
    if a.weights is not None:
        np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize("name,options", SEEDED_RANDOM)
def test_different_across_seeds(inputs, pool, name, options):
    draws = {tuple(draw_sample(name, inputs, m=30, seed=s, pool=pool, **options).indices) for s in range(4)}
    assert len(draws) == 4


@pytest.mark.parametrize("name", BUILTINS)
def test_m_equal_pool_returns_whole_pool(inputs, pool, name):
    s = draw_sample(name, inputs, m=pool.size, seed=0, pool=pool)
    np.testing.assert_array_equal(s.indices, pool)
    assert s.weights is None or np.allclose(s.weights, s.weights[0])


@pytest.mark.parametrize("name", BUILTINS)
def test_m_equal_one(inputs, pool, name):
    s = draw_sample(name, inputs, m=1, seed=0, pool=pool)
    assert len(s) == 1 and s.indices[0] in pool


def test_pool_order_and_mask_do_not_matter(inputs, pool):
    shuffled = np.random.default_rng(0).permutation(pool)
    mask = inputs.labels != 0
    for name in ("random", "logit"):
        a = draw_sample(name, inputs, m=25, seed=5, pool=pool)
        np.testing.assert_array_equal(a.indices, draw_sample(name, inputs, m=25, seed=5, pool=shuffled).indices)
        np.testing.assert_array_equal(a.indices, draw_sample(name, inputs, m=25, seed=5, pool=mask).indices)


def test_default_pool_is_whole_training_set(inputs):
    s = draw_sample("random", inputs, m=inputs.n, seed=0)
    np.testing.assert_array_equal(s.indices, np.arange(inputs.n))


def test_options_recorded_with_defaults(inputs):
    s = draw_sample("logit", inputs, m=20, n_bins=3)
    assert s.options == {"score": "confidence", "n_bins": 3}
    assert draw_sample("importance", inputs, m=20).options == {"floor": 0.1}


# ---------------------------------------------------------------------------------------------------------------
# HessianSample
# ---------------------------------------------------------------------------------------------------------------


def test_hessian_sample_array_len_and_json_round_trip(inputs):
    s = draw_sample("importance", inputs, m=12, seed=2, floor=0.2)
    np.testing.assert_array_equal(np.asarray(s), s.indices)
    assert np.asarray(s, dtype=np.float64).dtype == np.float64
    assert len(s) == 12
    record = json.loads(json.dumps(s.to_dict()))
    assert record["sampler"] == "importance" and record["seed"] == 2 and record["options"] == {"floor": 0.2}
    back = HessianSample.from_dict(record)
    np.testing.assert_array_equal(back.indices, s.indices)
    np.testing.assert_allclose(back.weights, s.weights)
    assert s.to_dict()["weights"] is not None
    assert draw_sample("random", inputs, m=3).to_dict()["weights"] is None


def test_hessian_sample_is_read_only(inputs):
    s = draw_sample("random", inputs, m=5)
    with pytest.raises(ValueError):
        s.indices[0] = 0


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [0, -3])
def test_m_below_one(inputs, pool, m):
    with pytest.raises(ValueError, match=rf"pool holds {pool.size} .*1 <= m <= {pool.size}"):
        draw_sample("random", inputs, m=m, pool=pool)


def test_m_above_pool(inputs, pool):
    with pytest.raises(ValueError, match=rf"m = {pool.size + 1} .*pool holds {pool.size}.*smaller m"):
        draw_sample("logit", inputs, m=pool.size + 1, pool=pool)


@pytest.mark.parametrize("m", [2.0, "10", True, None])
def test_m_not_int(inputs, m):
    with pytest.raises(ValueError, match="must be an integer"):
        draw_sample("random", inputs, m=m)


def test_numpy_integer_m_is_accepted(inputs):
    assert len(draw_sample("random", inputs, m=np.int32(7))) == 7


def test_empty_pool(inputs):
    with pytest.raises(ValueError, match="pool is empty"):
        draw_sample("random", inputs, m=1, pool=np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="pool is empty"):
        draw_sample("random", inputs, m=1, pool=np.zeros(inputs.n, dtype=bool))


@pytest.mark.parametrize(
    "bad,msg",
    [
        (np.array([0, 5, 5]), "duplicated"),
        (np.array([0, 600]), r"\[0, 600\)"),
        (np.array([-1, 2]), r"\[0, 600\)"),
        (np.array([0.0, 1.0]), "integer"),
        (np.array([[0, 1]]), "1-D"),
    ],
)
def test_bad_pool(inputs, bad, msg):
    with pytest.raises(ValueError, match=msg):
        draw_sample("random", inputs, m=1, pool=bad)


def test_unknown_sampler_lists_known(inputs):
    with pytest.raises(ValueError, match=r"unknown sampler 'nope'.*random.*feature.*logit"):
        draw_sample("nope", inputs, m=3)


def test_unknown_option(inputs):
    with pytest.raises(ValueError, match=r"does not take option.*'bins'.*n_bins"):
        draw_sample("logit", inputs, m=3, bins=3)


@pytest.mark.parametrize(
    "name,options,msg",
    [
        ("logit", {"score": "entropy"}, "score must be"),
        ("logit", {"n_bins": 0}, "n_bins"),
        ("feature", {"pick": "far"}, "pick must be"),
        ("logit_kmeans", {"space": "probs"}, "space must be"),
        ("importance", {"floor": 0.0}, "floor"),
        ("importance", {"floor": 1.5}, "floor"),
        ("ridge_leverage", {"floor": 0.0}, "floor"),
        ("ridge_leverage", {"ridge": 0.0}, "ridge must be"),
        ("ridge_leverage", {"ridge": float("nan")}, "ridge must be"),
        ("ridge_leverage", {"sketch_dim": 0}, "sketch_dim"),
    ],
)
def test_bad_option_values(inputs, name, options, msg):
    with pytest.raises(ValueError, match=msg):
        draw_sample(name, inputs, m=10, **options)


def test_feature_sampler_needs_features(inputs):
    no_features = SamplerInputs(labels=inputs.labels, logits=inputs.logits)
    with pytest.raises(ValueError, match=r"needs penultimate-layer features.*'logit' sampler"):
        draw_sample("feature", no_features, m=10)
    assert len(draw_sample("logit_kmeans", no_features, m=10)) == 10  # logits suffice there


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"labels": np.array([0, 1, 2]), "logits": np.zeros((3, 2))}, r"\[0, 2\)"),
        ({"labels": np.array([0, 1]), "logits": np.zeros((3, 2))}, "2 rows but logits has 3"),
        ({"labels": np.array([0, 1]), "logits": np.array([[0.0, np.nan], [1, 2]])}, "NaN or inf"),
        ({"labels": np.array([0.0, 1.0]), "logits": np.zeros((2, 2))}, "integers"),
        ({"labels": np.array([0, 0]), "logits": np.zeros((2, 1))}, "at least 2 classes"),
        ({"labels": np.array([0, 1]), "logits": np.zeros(2)}, "2-D"),
        ({"labels": np.array([0, 1]), "logits": np.zeros((2, 2)), "features": np.zeros((3, 4))}, r"shape \(n, d\)"),
        ({"labels": np.array([0, 1]), "logits": np.zeros((2, 2)), "features": np.full((2, 4), np.inf)}, "NaN or inf"),
    ],
)
def test_sampler_inputs_validation(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SamplerInputs(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def scratch_names():
    names: list[str] = []
    yield names
    for name in names:
        SAMPLERS.pop(name, None)


def test_user_registered_sampler_works_through_draw_sample(inputs, pool, scratch_names):
    scratch_names.append("test_lowest_margin")

    @register_sampler("test_lowest_margin")
    def lowest_margin(inputs, pool, m, rng, *, reverse=False):
        order = np.argsort(margin(inputs.logits[pool]), kind="stable")
        chosen = pool[order[::-1] if reverse else order][:m]
        return chosen[::-1], np.arange(1.0, m + 1)  # unsorted on purpose, weights aligned with it

    assert "test_lowest_margin" in available_samplers()
    s = draw_sample("test_lowest_margin", inputs, m=5, pool=pool)
    expected = pool[np.argsort(margin(inputs.logits[pool]), kind="stable")][:5]
    np.testing.assert_array_equal(s.indices, np.sort(expected))
    assert s.options == {"reverse": False}
    # weights follow their indices through the sort
    w_by_index = dict(zip(expected[::-1].tolist(), np.arange(1.0, 6).tolist()))
    np.testing.assert_allclose(s.weights, [w_by_index[i] for i in s.indices])


def test_duplicate_registration_is_refused(scratch_names):
    with pytest.raises(ValueError, match="already registered"):
        register_sampler("random")(lambda inputs, pool, m, rng: (pool[:m], None))


def test_register_checks_signature(scratch_names):
    scratch_names.append("test_bad_signature")
    with pytest.raises(ValueError, match="must accept"):
        register_sampler("test_bad_signature")(lambda inputs, m: None)


@pytest.mark.parametrize(
    "result,msg",
    [
        (lambda pool, m: (np.repeat(pool[:1], m), None), "duplicated"),
        (lambda pool, m: (pool[: m - 1], None), f"expected {10} integer indices"),
        (lambda pool, m: (np.arange(m) + 10_000, None), "outside the pool"),
        (lambda pool, m: (pool[:m], -np.ones(m)), "invalid weights"),
        (lambda pool, m: pool[:m], "must return"),
    ],
)
def test_misbehaving_sampler_is_caught(inputs, pool, scratch_names, result, msg):
    scratch_names.append("test_broken")
    register_sampler("test_broken")(lambda inputs, pool, m, rng: result(pool, m))
    with pytest.raises(ValueError, match=msg):
        draw_sample("test_broken", inputs, m=10, pool=pool)


# ---------------------------------------------------------------------------------------------------------------
# Allocation and the logit / class-stratified rules
# ---------------------------------------------------------------------------------------------------------------


def test_proportional_allocation_hand_values():
    np.testing.assert_array_equal(proportional_allocation([5, 3, 2], 5), [3, 1, 1])  # tie 0.5/0.5 -> lower index
    np.testing.assert_array_equal(proportional_allocation([10, 10, 10], 3), [1, 1, 1])
    np.testing.assert_array_equal(proportional_allocation([1, 0, 99], 10), [0, 0, 10])
    np.testing.assert_array_equal(proportional_allocation([4, 4], 0), [0, 0])
    np.testing.assert_array_equal(proportional_allocation([7, 2], 9), [7, 2])


def test_proportional_allocation_random_tie_break_varies():
    results = {tuple(proportional_allocation([10] * 6, 3, np.random.default_rng(s))) for s in range(20)}
    assert len(results) > 1
    assert all(sum(r) == 3 and max(r) == 1 for r in results)


def test_proportional_allocation_properties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        sizes = rng.integers(0, 50, size=rng.integers(1, 12))
        if sizes.sum() == 0:
            continue
        m = int(rng.integers(0, sizes.sum() + 1))
        counts = proportional_allocation(sizes, m, rng if rng.random() < 0.5 else None)
        share = m * sizes / sizes.sum()
        assert counts.sum() == m
        assert np.all(counts >= np.floor(share)) and np.all(counts <= np.ceil(share))
        assert np.all(counts <= sizes)


@pytest.mark.parametrize(
    "sizes,m,msg",
    [
        ([3, 4], 8, r"\[0, 7\]"),
        ([3, -1], 1, ">= 0"),
        ([], 0, "non-empty"),
        ([1.5, 2], 1, "whole numbers"),
        ([3, 4], 2.0, "integer"),
    ],
)
def test_proportional_allocation_errors(sizes, m, msg):
    with pytest.raises(ValueError, match=msg):
        proportional_allocation(np.asarray(sizes), m)


@pytest.mark.parametrize("score", ["confidence", "margin"])
@pytest.mark.parametrize("m", [17, 64, 200])
def test_logit_sampler_matches_strata_proportions(inputs, pool, score, m):
    strata = logit_strata(inputs, pool, n_bins=4, score=score)
    s = draw_sample("logit", inputs, m=m, seed=1, pool=pool, score=score)
    ids, sizes = np.unique(strata, return_counts=True)
    chosen = strata[np.searchsorted(pool, s.indices)]
    counts = np.array([np.sum(chosen == i) for i in ids])
    assert np.all(np.abs(counts - m * sizes / pool.size) < 1.0)


def test_logit_strata_are_class_by_quantile_bin():
    logits = np.array([[5.0, 0], [4, 0], [3, 0], [2, 0], [0, 1], [0, 9], [0, 3], [0, 3]])
    inp = SamplerInputs(labels=np.zeros(8, dtype=int), logits=logits)
    strata = logit_strata(inp, np.arange(8), n_bins=2)
    # class 0: confidences ordered 5>4>3>2 -> rows 2,3 low bin, 0,1 high bin; class 1: 1 < 3 = 3 < 9 (ties by index)
    np.testing.assert_array_equal(strata, [1, 1, 0, 0, 2, 3, 2, 3])


def test_logit_strata_equal_frequency_with_saturated_confidence():
    logits = np.tile([[100.0, 0.0]], (20, 1))  # every confidence is exactly 1.0
    inp = SamplerInputs(labels=np.zeros(20, dtype=int), logits=logits)
    np.testing.assert_array_equal(np.bincount(logit_strata(inp, np.arange(20), n_bins=4)), [5, 5, 5, 5])


def test_class_stratified_matches_class_proportions(inputs, pool):
    m = 45
    s = draw_sample("class_stratified", inputs, m=m, seed=2, pool=pool)
    classes, sizes = np.unique(inputs.labels[pool], return_counts=True)
    counts = np.array([np.sum(inputs.labels[s.indices] == c) for c in classes])
    assert np.all(np.abs(counts - m * sizes / pool.size) < 1.0)


# ---------------------------------------------------------------------------------------------------------------
# k-means rules
# ---------------------------------------------------------------------------------------------------------------


def test_feature_sampler_picks_one_point_per_blob():
    rng = np.random.default_rng(0)
    sizes = [200, 100, 50, 30, 20, 10, 5, 5]
    blob = np.repeat(np.arange(8), sizes)
    features = np.eye(8)[blob] * 5 + rng.normal(scale=0.05, size=(blob.size, 8))
    inp = SamplerInputs(labels=blob % 2, logits=rng.normal(size=(blob.size, 2)), features=features)
    for seed in range(3):
        s = draw_sample("feature", inp, m=8, seed=seed, pick="nearest")
        assert sorted(blob[s.indices]) == list(range(8))
        # each representative is weighted by its blob's size (normalised to mean 1)
        np.testing.assert_allclose(s.weights, np.array(sizes)[blob[s.indices]] / np.mean(sizes))
        assert draw_sample("feature", inp, m=8, seed=seed, weighting="unweighted").weights is None
        # nearest-to-centroid pick: each chosen point is the blob member closest to the blob's normalised mean
        X = features / np.linalg.norm(features, axis=1, keepdims=True)
        for i in s.indices:
            members = np.flatnonzero(blob == blob[i])
            centre = X[members].mean(axis=0)
            assert i == members[np.argmin(np.sum((X[members] - centre) ** 2, axis=1))]


def test_feature_sampler_stratified_by_class(inputs, pool):
    m = 37
    s = draw_sample("feature", inputs, m=m, seed=0, pool=pool, stratify_by_class=True)
    classes, sizes = np.unique(inputs.labels[pool], return_counts=True)
    counts = np.array([np.sum(inputs.labels[s.indices] == c) for c in classes])
    assert counts.sum() == m and np.all(np.abs(counts - m * sizes / pool.size) < 1.0)


@pytest.mark.parametrize("pick", ["nearest", "random"])
def test_collapsed_clusters_are_filled(pick):
    rng = np.random.default_rng(1)
    features = np.repeat(rng.normal(size=(5, 6)), 30, axis=0)  # only 5 distinct points, m = 12 > 5
    inp = SamplerInputs(labels=np.repeat(np.arange(5), 30), logits=rng.normal(size=(150, 5)), features=features)
    a = draw_sample("feature", inp, m=12, seed=4, pick=pick)
    b = draw_sample("feature", inp, m=12, seed=4, pick=pick)
    assert len(a) == 12 and len(np.unique(a.indices)) == 12
    np.testing.assert_array_equal(a.indices, b.indices)
    assert len(np.unique(features[a.indices], axis=0)) == 5  # every distinct point is represented


def test_logit_kmeans_spaces(inputs, pool):
    for space in ("centred", "log_softmax"):
        s = draw_sample("logit_kmeans", inputs, m=20, seed=0, pool=pool, space=space, stratify_by_class=True)
        assert len(s) == 20 and np.all(np.isin(s.indices, pool))


def test_feature_sampler_large_m_on_a_large_pool():
    """m = 512 of 4000 points: a valid sample with one weight per cluster size (its speed is measured in the
    faithfulness study's sampler_seconds column, not asserted here)."""
    rng = np.random.default_rng(0)
    n, d = 4000, 64
    labels = rng.integers(0, 10, n)
    features = rng.normal(size=(n, d)) + 3 * np.eye(10, d)[labels]
    inp = SamplerInputs(labels=labels, logits=features[:, :10], features=features)
    s = draw_sample("feature", inp, m=512, seed=0)
    assert len(s) == 512 and len(np.unique(s.indices)) == 512
    assert s.weights is not None and np.all(s.weights > 0)


# ---------------------------------------------------------------------------------------------------------------
# Curvature importance sampling
# ---------------------------------------------------------------------------------------------------------------


def test_curvature_weights_positive_mean_one(inputs, pool):
    s = draw_sample("importance", inputs, m=50, seed=0, pool=pool)
    assert np.all(s.weights > 0) and np.isclose(s.weights.mean(), 1.0)
    # points with higher curvature have higher inclusion probability, so lower weight
    c = curvature_proxy(inputs.logits[s.indices])
    assert np.all(np.diff(s.weights[np.argsort(c)]) <= 1e-12)


def test_curvature_oversamples_high_curvature_and_weights_correct_it():
    rng = np.random.default_rng(0)
    n, C = 2000, 5
    labels = rng.integers(0, C, n)
    # most points saturated (low curvature), a minority uncertain (high curvature)
    scale = np.where(rng.random(n) < 0.8, 12.0, 0.3)[:, None]
    logits = scale * np.eye(C)[labels] + rng.normal(scale=0.5, size=(n, C))
    inp = SamplerInputs(labels=labels, logits=logits)
    f = curvature_proxy(logits)  # a per-point quantity driven by curvature (the Hessian's trace proxy)
    target = f.mean()
    err_weighted, err_plain, plain_means = [], [], []
    for seed in range(40):
        s = draw_sample("importance", inp, m=100, seed=seed)
        plain = f[s.indices].mean()
        weighted = np.sum(s.weights * f[s.indices]) / np.sum(s.weights)
        plain_means.append(plain)
        err_plain.append(abs(plain - target))
        err_weighted.append(abs(weighted - target))
    assert np.mean(plain_means) > 1.5 * target  # high-curvature points are oversampled
    assert np.mean(err_weighted) < 0.25 * np.mean(err_plain)


def test_inclusion_probabilities():
    q = np.array([0.5, 0.3, 0.1, 0.1])
    pi = inclusion_probabilities(q, 2)
    assert np.isclose(pi.sum(), 2.0) and np.all((pi > 0) & (pi <= 1))
    assert np.all(np.diff(pi[:3]) < 0)
    small = inclusion_probabilities(np.full(1000, 1e-3), 3)
    np.testing.assert_allclose(small, 3e-3, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Logit helpers
# ---------------------------------------------------------------------------------------------------------------


def test_softmax_helpers_stable_and_correct():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
    p = softmax(logits)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(confidence(logits), [1.0, 1 / 3, np.e / (np.e + 2)])
    np.testing.assert_allclose(margin(logits), [1000.0, 0.0, 1.0])
    np.testing.assert_allclose(curvature_proxy(logits), [0.0, 2 / 3, 1 - np.sum(p[2] ** 2)], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Weighted samples estimate the pool's mean curvature (the k-means samplers and int_distance)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_inputs(digits_mlp, digits):
    from influence_core.sampling.subsets import sampler_inputs

    return sampler_inputs(digits_mlp, digits)


def _weighted_means(inputs, name, m, seeds, **options):
    c = curvature_proxy(inputs.logits)
    out = []
    for seed in range(seeds):
        s = draw_sample(name, inputs, m=m, seed=seed, **options)
        w = s.weights_or_uniform()
        out.append(np.sum(w * c[s.indices]) / w.sum())
    return np.array(out) / c.mean()  # ratio to the pool mean


@pytest.mark.slow
@pytest.mark.parametrize("name", ["feature", "logit_kmeans"])
def test_cluster_size_weights_make_the_kmeans_samplers_estimate_the_pool_mean(digits_inputs, name):
    """Digits MLP, m = 128, 30 seeds: the weighted sample mean of the curvature proxy 1 − Σp² is within 15% of
    the pool mean; the unweighted rule (one point per cluster, equal weights) is ≥ 30% too high."""
    weighted = _weighted_means(digits_inputs, name, 128, 30)
    unweighted = _weighted_means(digits_inputs, name, 128, 30, weighting="unweighted")
    assert abs(weighted.mean() - 1) < 0.15, weighted.mean()
    assert unweighted.mean() > 1.3, unweighted.mean()


def test_int_distance_estimates_the_pool_mean(digits_inputs):
    """Same check for int_distance at m = 64 and 256 (stratified: unbiased given the strata), and its weights
    are N_s / m_s of the strata it reports."""
    for m in (64, 256):
        ratios = _weighted_means(digits_inputs, "int_distance", m, 30)
        assert abs(ratios.mean() - 1) < 0.12, (m, ratios.mean())
    s = draw_sample("int_distance", digits_inputs, m=256, seed=0)
    strata = int_distance_strata(digits_inputs, np.arange(digits_inputs.n), 256, np.random.default_rng(0))
    ids, sizes = np.unique(strata, return_counts=True)
    drawn = strata[s.indices]
    per = {i: (sizes[k], np.sum(drawn == i)) for k, i in enumerate(ids)}
    expected = np.array([per[i][0] / per[i][1] for i in drawn])
    np.testing.assert_allclose(s.weights, expected / expected.mean())
    assert all(k >= 1 for _, k in per.values())  # every stratum sampled


def test_int_distance_strata_and_edge_cases():
    rng = np.random.default_rng(0)
    sizes = [300, 100, 30, 3]
    blob = np.repeat(np.arange(4), sizes)
    features = np.eye(6)[blob] * 5 + rng.normal(scale=0.3, size=(blob.size, 6))
    inp = SamplerInputs(labels=blob % 2, logits=rng.normal(size=(blob.size, 2)), features=features)
    # 4 clusters x 3 distance bins = 12 strata; m = 24 allocated with at least one per stratum (the 3-point blob)
    s = draw_sample("int_distance", inp, m=24, seed=0, n_clusters=4, n_bins=3)
    assert len(s) == 24 and np.all(np.isin(np.arange(4), blob[s.indices]))
    counts = np.bincount(blob[s.indices], minlength=4)
    assert counts[0] > counts[1] > counts[2] >= 1
    np.testing.assert_allclose(
        np.bincount(blob[s.indices], weights=s.weights, minlength=4) / s.weights.sum(),
        np.array(sizes) / sum(sizes),
        atol=1e-12,
    )  # weights recover the blob shares
    # m < K: K is capped at m, one point per cluster weighted by cluster size
    tiny = draw_sample("int_distance", inp, m=3, seed=1, n_clusters=10)
    assert len(tiny) == 3 and tiny.weights is not None
    assert len(draw_sample("int_distance", inp, m=1, seed=0)) == 1
    # m = pool: the whole pool, unweighted
    whole = draw_sample("int_distance", inp, m=blob.size, seed=0)
    assert len(whole) == blob.size and whole.weights is None
    with pytest.raises(ValueError, match="n_clusters"):
        draw_sample("int_distance", inp, m=10, n_clusters=0)
    with pytest.raises(ValueError, match="n_bins"):
        draw_sample("int_distance", inp, m=10, n_bins=0)
    with pytest.raises(ValueError, match="needs penultimate-layer features"):
        draw_sample("int_distance", SamplerInputs(labels=inp.labels, logits=inp.logits), m=10)
    with pytest.raises(ValueError, match="weighting must be"):
        draw_sample("feature", inp, m=10, weighting="size")


def test_a_renamed_sampler_gets_its_new_name_in_the_error(inputs):
    with pytest.raises(
        ValueError,
        match=r"unknown sampler 'curvature' \(the sampler 'curvature' is now called "
        r"'importance'\)",
    ):
        draw_sample("curvature", inputs, m=10)


# ---------------------------------------------------------------------------------------------------------------
# Ridge-leverage sampling
# ---------------------------------------------------------------------------------------------------------------


def _dense_leverages(model, digits, n: int, ridge: float):
    """Exact τ_i = (1/n) tr(U_i (G + λI)⁻¹ U_iᵀ) from the dense full-parameter Gauss-Newton factor; and U
    (n, C−1, p)."""
    import torch

    from influence_core.curvature.objective import Objective

    obj = Objective(model, digits.X_train[:n], digits.y_train[:n], model.weight_decay)
    U = obj.gauss_newton_factors(None, unweighted=True).double()
    G = U.T @ U / n + ridge * torch.eye(U.shape[1], dtype=U.dtype)
    R = torch.linalg.solve_triangular(torch.linalg.cholesky(G), U.T, upper=False)
    return (R**2).sum(0).reshape(n, -1).sum(1).numpy() / n, U.reshape(n, -1, U.shape[1]).numpy()


@pytest.fixture(scope="module")
def logreg_leverages(digits, digits_logreg64):
    from influence_core.sampling.subsets import sampler_inputs

    n, ridge = 600, digits_logreg64.weight_decay + 0.01
    tau, U = _dense_leverages(digits_logreg64, digits, n, ridge)
    return sampler_inputs(digits_logreg64, (digits.X_train[:n], digits.y_train[:n])), tau, U, ridge


def test_ridge_leverages_are_exact_for_a_linear_model(logreg_leverages):
    """Logistic regression: the last layer is the whole model, so the estimate is the exact ridge leverage of the
    dense full-data Gauss-Newton matrix (and sums to its effective dimension)."""
    inputs, tau, _, ridge = logreg_leverages
    est = ridge_leverages(inputs, np.arange(inputs.n), ridge=ridge)
    np.testing.assert_allclose(est, tau, rtol=1e-7, atol=1e-12)
    assert 10 < est.sum() < 650
    # a sketch of the features (65 -> 24 dims) keeps the ranking
    from scipy.stats import spearmanr

    sketched = ridge_leverages(inputs, np.arange(inputs.n), ridge=ridge, sketch_dim=24, rng=np.random.default_rng(0))
    assert spearmanr(sketched, tau)[0] > 0.9


def test_ridge_leverages_bound_and_track_an_mlps_full_leverages(digits):
    """A deeper model: the last-layer leverage is a lower bound of the full-parameter one and ranks the points
    alike (Spearman 0.83 on this model)."""
    from scipy.stats import spearmanr

    from influence_core import train_model
    from influence_core.sampling.subsets import sampler_inputs

    model = train_model(digits, "mlp", seed=0, epochs=3, hidden=(8,), dtype="float64")
    n, ridge = 600, model.weight_decay + 0.01
    tau, _ = _dense_leverages(model, digits, n, ridge)
    est = ridge_leverages(sampler_inputs(model, (digits.X_train[:n], digits.y_train[:n])), np.arange(n), ridge=ridge)
    assert np.all(est <= tau * (1 + 1e-9))
    assert spearmanr(est, tau)[0] > 0.75


@pytest.mark.slow
def test_ridge_leverage_sample_estimates_the_full_gauss_newton(logreg_leverages):
    """Σ w_i G_i / Σ w_i over the drawn points, averaged over seeds, is close to the pool's mean G (the weights undo
    the leverage-proportional draw); the same points unweighted are far off (high-leverage points oversampled)."""
    inputs, _, U, ridge = logreg_leverages
    pool = np.arange(300)
    U = U[pool]
    tau = ridge_leverages(inputs, pool, ridge=ridge)
    flat = U.reshape(-1, U.shape[2])
    G = flat.T @ flat / len(U)
    weighted, plain, drawn_tau = np.zeros_like(G), np.zeros_like(G), []
    seeds = 40
    for seed in range(seeds):
        s = draw_sample("ridge_leverage", inputs, m=30, seed=seed, pool=pool, ridge=ridge)
        w = s.weights / s.weights.sum()
        Us = U[s.indices].reshape(-1, U.shape[2])  # (m(C−1), p)
        Uw = (np.sqrt(w)[:, None, None] * U[s.indices]).reshape(-1, U.shape[2])
        weighted += Uw.T @ Uw / seeds
        plain += Us.T @ Us / (len(w) * seeds)
        drawn_tau.append(tau[s.indices].mean())
    err = lambda A: np.linalg.norm(A - G) / np.linalg.norm(G)  # noqa: E731
    assert np.mean(drawn_tau) > 1.5 * tau.mean()  # high-leverage points are oversampled
    assert err(weighted) < 0.2 and err(plain) > 3 * err(weighted)


def test_ridge_leverage_needs_features_and_valid_m(inputs, pool):
    no_features = SamplerInputs(labels=inputs.labels, logits=inputs.logits)
    with pytest.raises(ValueError, match=r"needs penultimate-layer features.*'importance' sampler"):
        draw_sample("ridge_leverage", no_features, m=10)
    for m in (0, pool.size + 1):
        with pytest.raises(ValueError, match=r"1 <= m <= "):
            draw_sample("ridge_leverage", inputs, m=m, pool=pool)
    with pytest.raises(ValueError, match="must be an integer"):
        draw_sample("ridge_leverage", inputs, m=2.5, pool=pool)
    s = draw_sample("ridge_leverage", inputs, m=40, seed=0, pool=pool)
    assert s.options == {"ridge": 0.011, "floor": 0.1, "sketch_dim": 256} and np.isclose(s.weights.mean(), 1.0)
