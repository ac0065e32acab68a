"""Fitted inverses in the app's disk cache (influence_core.solvers.fitted_io through ui.artifacts): a second load
gives the same scores without refitting, a corrupt or foreign file is refused with a clear message and refitted,
nothing is ever unpickled, and the home page lists the kind."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
from apptest_helpers import ok

import influence_core as ic
from influence_core.solvers.fitted_io import FittedStateError, inverse_from_arrays, inverse_to_arrays, is_storable

M_LOW_RANK = 20  # r = 20·9 = 180 < p = 610 of the fast run's MLP: the low-rank Woodbury state


def _round_trip(arrays: dict, meta: dict) -> tuple[dict, dict]:
    """Through an .npz written by np.savez and read with allow_pickle=False, and the meta through JSON."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, json.loads(json.dumps(meta))


@pytest.mark.parametrize(
    "solver, sample", [("exact", None), ("exact", "importance"), ("kfac", "random"), ("arnoldi", "random")]
)
def test_a_fitted_state_round_trip_solves_bitwise_alike(digits, tiny_digits_mlp, solver, sample):
    model = tiny_digits_mlp
    s = None if sample is None else ic.sample_hessian_subset(model, digits, sample, 60, seed=0)
    calc = ic.InfluenceCalculator(model, digits.X_train, digits.y_train).fit(
        s, solver=solver, damping=0.01, curvature="gauss_newton"
    )
    arrays, meta = _round_trip(*inverse_to_arrays(calc.inverse))
    assert meta["state"] == {"exact": "low_rank" if s is not None else "lu"}.get(
        solver, solver.replace("ekfac", "kfac")
    )
    other = ic.InfluenceCalculator(model, digits.X_train, digits.y_train)
    other.use_fitted(inverse_from_arrays(other.objective, arrays, meta))
    X, y = digits.X_test[:2], digits.y_test[:2]
    assert np.array_equal(other.scores(X, y), calc.scores(X, y))


def test_iterative_solvers_store_nothing_and_foreign_or_broken_state_is_refused(digits, tiny_digits_mlp):
    model = tiny_digits_mlp
    cg = ic.InfluenceCalculator(model, digits.X_train, digits.y_train).fit(
        np.arange(50), solver="cg", damping=0.01, curvature="gauss_newton"
    )
    assert not is_storable(cg.inverse)
    with pytest.raises(ValueError, match="no fitted state"):
        inverse_to_arrays(cg.inverse)
    calc = ic.InfluenceCalculator(model, digits.X_train, digits.y_train).fit(
        np.arange(50), solver="exact", damping=0.01, curvature="gauss_newton"
    )
    arrays, meta = _round_trip(*inverse_to_arrays(calc.inverse))
    retrained = ic.train_model(digits, "mlp", seed=1, epochs=1, hidden=(16,), polish_steps=2)
    foreign = ic.InfluenceCalculator(retrained, digits.X_train, digits.y_train)
    with pytest.raises(FittedStateError, match="other model parameters"):
        inverse_from_arrays(foreign.objective, arrays, meta)
    with pytest.raises(FittedStateError, match="lacks the array 'K_inv'"):
        inverse_from_arrays(calc.objective, {k: v for k, v in arrays.items() if not k.startswith("K_inv")}, meta)
    bad = {k: (np.full_like(v, np.nan) if k.startswith("K_inv") else v) for k, v in arrays.items()}
    with pytest.raises(FittedStateError, match="not finite"):
        inverse_from_arrays(calc.objective, bad, meta)


# ---------------------------------------------------------------------------------------------------- the app


def _fresh(state) -> None:
    """As after a server restart: nothing in memory (the disk cache stays)."""
    state.forget_in_memory()


def _no_fitting(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("refitted although the fitted inverse is on disk")

    import influence_core.influence.across_samples as across
    import influence_core.influence.calculator as calculator

    monkeypatch.setattr(calculator, "fit_inverse", refuse)
    monkeypatch.setattr(across, "fit_inverse", refuse)
    monkeypatch.setattr(across, "sample_grams", refuse)


def test_a_second_load_gives_the_same_scores_without_refitting(trained_fast_run, monkeypatch):
    from ui import artifacts, state

    run = trained_fast_run
    _fresh(state)
    ref_spec = state.reference_spec(run)
    specs = (("random", M_LOW_RANK, 0, "exact"), ("importance", M_LOW_RANK, 1, "exact"), ref_spec)
    first = state.influence_rows(run, specs, 0.01, 5)
    spread = state.seed_spread(run, ("random", "importance"), M_LOW_RANK, (0, 1, 2), "exact", 0.01, 5, 8)
    kinds = {e.meta["meta"]["state"] for e in artifacts.disk_store().entries() if e.kind == artifacts.INVERSE_KIND}
    assert {"low_rank", "lu"} <= kinds  # the samples' Woodbury pieces, the full-data LU inverse (+ other tests')

    _fresh(state)
    _no_fitting(monkeypatch)
    again = state.influence_rows(run, specs, 0.01, 5)
    for a, b in zip(first, again):
        assert np.array_equal(a["scores"], b["scores"])
    assert state.seed_spread(run, ("random", "importance"), M_LOW_RANK, (0, 1, 2), "exact", 0.01, 5, 8) == spread


def test_iterative_solves_are_not_stored(trained_fast_run):
    from ui import artifacts, state

    run = trained_fast_run
    before = {e.path for e in artifacts.disk_store().entries()}
    state.influence_row(run, "random", M_LOW_RANK, 3, "cg", 0.01, 2)
    assert {e.path for e in artifacts.disk_store().entries()} == before


def _inverse_path(run, state, artifacts, spec):
    calc, _ = state.get_calculator(run, *spec, 0.01)
    sample = state.get_sample(run, *spec[:3])
    config = artifacts.inverse_config(run, spec, 0.01, state.CURVATURE, {}, calc.objective, sample)
    return artifacts.disk_store().path(artifacts.INVERSE_KIND, config, artifacts._version(artifacts.INVERSE_KIND))


def test_a_corrupt_or_pickled_inverse_file_is_refused_removed_and_refitted(trained_fast_run, monkeypatch):
    from ui import artifacts, state

    run = trained_fast_run
    spec = ("logit", M_LOW_RANK, 4, "exact")
    _fresh(state)
    expected = state.influence_row(run, *spec, 0.01, 7)["scores"]
    path = _inverse_path(run, state, artifacts, spec)
    assert path.exists()

    path.write_bytes(b"not an npz at all")
    _fresh(state)
    seen = len(state.cache_problems())
    row = state.influence_row(run, *spec, 0.01, 7)
    new = state.cache_problems()[seen:]
    assert any(str(path) in p and "cannot be read" in p and "computed again" in p for p in new), new
    assert np.allclose(row["scores"], expected, rtol=1e-6, atol=1e-9)
    assert artifacts.disk_store().read_file(path)[1]["kind"] == artifacts.INVERSE_KIND  # a good file again

    # an object array (a pickle inside the .npz) is refused without ever unpickling it
    good, record = artifacts.disk_store().read_file(path)
    meta_blob = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **good, evil=np.array([{"payload": 1}], dtype=object), __meta__=meta_blob)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("a cache file was unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a cache file was unpickled"))
    _fresh(state)
    seen = len(state.cache_problems())
    row = state.influence_row(run, *spec, 0.01, 7)
    assert any(str(path) in p and "computed again" in p for p in state.cache_problems()[seen:])
    assert np.allclose(row["scores"], expected, rtol=1e-6, atol=1e-9)


def test_an_inverse_of_another_model_is_refused_with_a_clear_message(trained_fast_run):
    from ui import artifacts, state

    run = trained_fast_run
    spec = ("random", M_LOW_RANK, 5, "exact")
    _fresh(state)
    state.influence_row(run, *spec, 0.01, 1)
    path = _inverse_path(run, state, artifacts, spec)
    arrays, record = artifacts.disk_store().read_file(path)
    record["meta"]["theta"] = "0" * 64  # as if fitted for other parameters (the key and config still match)
    blob = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, __meta__=blob)
    _fresh(state)
    seen = len(state.cache_problems())
    state.influence_row(run, *spec, 0.01, 1)
    assert any("other model parameters" in p and "computed again" in p for p in state.cache_problems()[seen:])


def test_home_lists_fitted_inverses_and_clears_them(app_page, trained_fast_run):
    from ui import artifacts, state

    run = trained_fast_run
    state.influence_row(run, "random", M_LOW_RANK, 6, "exact", 0.01, 0)
    at = ok(app_page("app.py", run=run).run())
    table = at.dataframe[0].value
    rows = table[table["kind"] == artifacts.INVERSE_KIND]
    assert len(rows) and any("inverse: exact on random m=20 seed 6" in w for w in rows["what"].astype(str))
    at.button(key="cache_clear").click()
    ok(at.run())
    assert not [e for e in artifacts.disk_store().entries() if e.kind == artifacts.INVERSE_KIND]


def test_prepare_fits_what_the_influence_page_opens_with(app_page, trained_fast_run, monkeypatch):
    """``python -m ui.prepare`` (make app) fits the Influence page's default inverses; after a restart the page's
    first view fits nothing."""
    from ui import state
    from ui.prepare import prepare_influence

    done = prepare_influence([trained_fast_run], log=lambda message: None)
    assert len(done) == 3  # the full-data reference and samples A and B (exact solver: a small model)
    _fresh(state)
    _no_fitting(monkeypatch)
    at = ok(app_page("pages/2_Influence.py").run())
    assert not at.error and any("Top 8 helpful" in md.value for md in at.markdown)
