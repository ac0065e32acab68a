"""The blocked scoring grid: chunk invariance, tiny chunks, on-disk output, interruption and resume, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from influence_core import load_dataset, train_model
from influence_core.influence.calculator import InfluenceCalculator, influence_scores
from influence_core.influence.scoring import manifest_path, score_grid

N_TEST = 10


@pytest.fixture(scope="module")
def problem():
    """A small real MLP (float32) on digits, fitted with the exact solver on a 300-point Gauss-Newton sample."""
    ds = load_dataset("digits")
    model = train_model(ds, "mlp", seed=0, epochs=3, hidden=(16,), polish_steps=20)
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train, chunk_size=128)
    calc.fit(np.arange(300), solver="exact", damping=0.01, curvature="gauss_newton")
    return ds, model, calc


def unchunked(calc, X, y):
    """Reference: all test iHVPs in one solve, all training points in one forward-mode pass."""
    obj = calc.objective
    S = calc.ihvp(calc.gradients(X, y)).x
    return obj.grad_dot(S, obj.X, obj.y).T.double().numpy() / obj.n


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def test_train_chunking_is_bitwise_identical(problem):
    ds, _, calc = problem
    X, y = ds.X_test[:N_TEST], ds.y_test[:N_TEST]
    ref = unchunked(calc, X, y)
    for train_chunk in (1437, 100, 33):
        got = calc.scores(X, y, test_chunk_size=N_TEST, train_chunk_size=train_chunk)
        np.testing.assert_array_equal(got, ref)
    assert calc.last_scoring.blocks == 44  # ceil(1437 / 33)


def test_test_chunking_matches_to_float32_rounding(problem):
    """Batching k test points changes which BLAS kernel computes their gradients and the product with the
    precomputed inverse, so float32 results may differ by a few ulps times the condition number of H + δI (the
    score of one pair never mixes two test points; float64 agrees to 1e-12 below)."""
    ds, _, calc = problem
    X, y = ds.X_test[:N_TEST], ds.y_test[:N_TEST]
    ref = unchunked(calc, X, y)
    for test_chunk in (3, 1):
        assert rel_err(calc.scores(X, y, test_chunk_size=test_chunk, train_chunk_size=500), ref) < 1e-5


def test_chunking_in_float64_agrees_to_1e12(digits_logreg64, digits):
    calc = InfluenceCalculator(digits_logreg64, digits.X_train, digits.y_train)
    calc.fit(None, solver="exact", damping=1e-3, curvature="hessian")
    X, y = digits.X_test[:7], digits.y_test[:7]
    ref = unchunked(calc, X, y)
    assert rel_err(calc.scores(X, y, test_chunk_size=2, train_chunk_size=50), ref) < 1e-12


def test_tight_memory_budget_completes_and_matches(problem):
    """One test point and 32 training points per block: 2 x 45 blocks, the same scores."""
    ds, _, calc = problem
    X, y = ds.X_test[:2], ds.y_test[:2]
    seen = []
    got = calc.scores(X, y, test_chunk_size=1, train_chunk_size=32, progress=lambda f, m: seen.append(f))
    # float32 model: other block shapes reorder the sums (observed up to 1.3e-6); float64 agrees to 1e-12 (above)
    assert rel_err(got, unchunked(calc, X, y)) < 1e-5
    assert calc.last_scoring.blocks == 2 * 45 and len(seen) == 90 and seen[-1] == 1.0


def test_train_indices_and_precomputed_ihvps(problem):
    ds, _, calc = problem
    X, y = ds.X_test[:4], ds.y_test[:4]
    full = calc.scores(X, y, test_chunk_size=4)
    cols = np.array([5, 0, 1000, 17])
    np.testing.assert_array_equal(calc.scores(X, y, train_indices=cols, test_chunk_size=4), full[:, cols])
    S = calc.ihvp(calc.gradients(X, y)).x
    np.testing.assert_array_equal(calc.scores_from_ihvp(S, train_chunk_size=50), full)


def test_influence_scores_function_accepts_chunks(problem):
    ds, model, calc = problem
    a = influence_scores(
        model,
        ds,
        [0, 3],
        np.arange(300),
        solver="exact",
        damping=0.01,
        curvature="gauss_newton",
        chunk_size=128,
        test_chunk_size=1,
    )
    b = calc.scores(ds.X_test[[0, 3]], ds.y_test[[0, 3]], test_chunk_size=1)
    np.testing.assert_array_equal(a, b)


class Interrupt(Exception):
    pass


def interrupt_after(k):
    calls = []

    def progress(fraction, message):
        calls.append(message)
        if len(calls) == k:
            raise Interrupt(f"interrupted after {k} blocks")

    return progress


def test_interrupted_disk_run_resumes_to_the_same_matrix(problem, tmp_path):
    ds, _, calc = problem
    X, y = ds.X_test[:N_TEST], ds.y_test[:N_TEST]
    options = dict(test_chunk_size=4, train_chunk_size=300)  # 3 x 5 = 15 blocks
    whole = calc.scores(X, y, **options)
    path = tmp_path / "scores.npy"
    with pytest.raises(Interrupt):
        calc.scores(X, y, out=path, progress=interrupt_after(6), **options)
    lines = manifest_path(path).read_text().splitlines()
    assert len(lines) == 1 + 6 and "complete" not in lines[-1]
    messages = []
    got = calc.scores(X, y, out=path, progress=lambda f, m: messages.append(m), **options)
    assert isinstance(got, np.memmap) and got.shape == (N_TEST, 1437)
    np.testing.assert_array_equal(got, whole)
    np.testing.assert_array_equal(np.load(path), whole)
    assert (calc.last_scoring.computed, calc.last_scoring.skipped) == (9, 6)
    assert messages[0].startswith("resuming: 6/15")
    assert json.loads(manifest_path(path).read_text().splitlines()[-1]) == {"complete": True}
    # a finished file is returned without recomputing anything
    again = calc.scores(X, y, out=path, **options)
    np.testing.assert_array_equal(again, whole)
    assert calc.last_scoring.computed == 0


def test_resume_survives_a_truncated_manifest_line(problem, tmp_path):
    ds, _, calc = problem
    X, y = ds.X_test[:3], ds.y_test[:3]
    path = tmp_path / "s.npy"
    with pytest.raises(Interrupt):
        calc.scores(X, y, out=path, train_chunk_size=500, progress=interrupt_after(2))
    with open(manifest_path(path), "a") as fh:
        fh.write('{"block": [0, ')  # killed mid-write
    got = calc.scores(X, y, out=path, train_chunk_size=500)
    np.testing.assert_array_equal(got, calc.scores(X, y, train_chunk_size=500))


def test_resume_refuses_a_different_problem(problem, tmp_path):
    ds, _, calc = problem
    path = tmp_path / "s.npy"
    calc.scores(ds.X_test[:3], ds.y_test[:3], out=path)
    with pytest.raises(ValueError, match="different problem"):
        calc.scores(ds.X_test[3:6], ds.y_test[3:6], out=path)
    with pytest.raises(ValueError, match="different problem"):
        calc.scores(ds.X_test[:3], ds.y_test[:3], out=path, train_chunk_size=64)
    fresh = calc.scores(ds.X_test[3:6], ds.y_test[3:6], out=path, resume=False)
    np.testing.assert_array_equal(fresh, calc.scores(ds.X_test[3:6], ds.y_test[3:6]))


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_non_positive_or_non_integer_chunk_size_is_refused(problem, bad):
    ds, _, calc = problem
    with pytest.raises(ValueError, match="test_chunk_size must be a positive integer"):
        calc.scores(ds.X_test[:2], ds.y_test[:2], test_chunk_size=bad)
    with pytest.raises(ValueError, match="train_chunk_size must be a positive integer"):
        calc.scores(ds.X_test[:2], ds.y_test[:2], train_chunk_size=bad)


def test_bad_test_data_and_paths_are_refused(problem, tmp_path):
    ds, _, calc = problem
    X, y = ds.X_test[:3], ds.y_test[:3]
    with pytest.raises(ValueError, match="X_test must have shape"):
        calc.scores(X[:, :10], y)
    with pytest.raises(ValueError, match="same length"):
        calc.scores(X, y[:2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        calc.scores(X, np.array([0, 1, 10]))
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calc.scores(bad, y)
    with pytest.raises(ValueError, match="must end in .npy"):
        calc.scores(X, y, out=tmp_path / "scores.bin")
    with pytest.raises(ValueError, match="does not exist"):
        calc.scores(X, y, out=tmp_path / "missing" / "scores.npy")
    with pytest.raises(ValueError, match="either test points"):
        score_grid(calc, X, y, ihvps=torch.zeros(3, calc.objective.n_params))


def test_scale_benchmark_summary_fits_exponents():
    """The bench's summary on synthetic rows (no timing asserted): exponents are log-log slopes, targets judged."""
    import argparse

    from influence_core.bench.scale import summarise

    rows = [
        {"mode": "seq", "n_train": n, "n_test": k, "seconds": 1e-6 * n * k, "peak_mib": 400 + n / 1000}
        for n in (4000, 16000, 64000)
        for k in (16, 64)
    ]
    rows += [{"mode": "dask", "n_train": 64000, "n_test": 64, "seconds": 1.1 * 1e-6 * 64000 * 64, "peak_mib": 1}]
    args = argparse.Namespace(sizes=[5000, 20000, 80000], n_test=[16, 64], workers=2)
    summary = {r["quantity"]: r for r in summarise(rows, [{"n_train": 4000, "ratio": 2.0}], args)}
    assert summary["time exponent in n_train x n_test (all seq runs)"]["value"] == pytest.approx(1.0)
    assert summary["time exponent in n_test (n_train=4000)"]["met"] is True
    growth = summary["peak memory growth 4000 -> 64000 (scores in memory, n_test=16)"]
    assert growth["met"] is True and growth["value"].startswith("+14.9%")
    dask = summary["Dask (2 workers) time / sequential - 1 (n_train=64000, n_test=64)"]
    assert dask["value"] == "+10.0%" and dask["met"] is True


def test_scale_benchmark_rejects_bad_settings():
    from influence_core.cli.main import main

    assert main(["bench", "scale", "--test-chunk-size", "0"]) == 2
    assert main(["bench", "scale", "--sizes", "10"]) == 2


# ------------------------------------------------------------------------------------------ hostile outputs
def test_the_score_file_appears_only_when_complete(problem, tmp_path):
    """The matrix is written into <out>.partial and renamed onto out after its last block: an interrupted run never
    leaves a half file under the name asked for, and the resume finishes it."""
    ds, _, calc = problem
    X, y = ds.X_test[:6], ds.y_test[:6]
    path = tmp_path / "scores.npy"
    with pytest.raises(Interrupt):
        calc.scores(X, y, out=path, test_chunk_size=2, train_chunk_size=500, progress=interrupt_after(2))
    assert not path.exists() and (tmp_path / "scores.npy.partial").exists()
    got = calc.scores(X, y, out=path, test_chunk_size=2, train_chunk_size=500)
    assert not (tmp_path / "scores.npy.partial").exists()
    np.testing.assert_array_equal(np.load(path), calc.scores(X, y, test_chunk_size=2, train_chunk_size=500))
    assert calc.last_scoring.computed == 9 and np.asarray(got).shape == (6, 1437)


def test_an_output_symlink_is_never_written_through(problem, tmp_path):
    ds, _, calc = problem
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "s.npy").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        calc.scores(ds.X_test[:2], ds.y_test[:2], out=tmp_path / "s.npy")
    (tmp_path / "t.npy.manifest").symlink_to(victim)  # nor a link where the manifest goes
    with pytest.raises(ValueError, match="symbolic link"):
        calc.scores(ds.X_test[:2], ds.y_test[:2], out=tmp_path / "t.npy", resume=False)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("content", [b"hello\n", None])
def test_resume_refuses_a_file_that_is_not_a_score_file(problem, tmp_path, content):
    ds, _, calc = problem
    path = tmp_path / "other.npy"
    if content is None:
        np.save(path, np.arange(5.0))
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not a score file written by this package"):
        calc.scores(ds.X_test[:2], ds.y_test[:2], out=path)  # resume=True is the default
    assert path.read_bytes() == before
    calc.scores(ds.X_test[:2], ds.y_test[:2], out=path, resume=False)  # asked for: replaced
    assert np.load(path).shape == (2, 1437)


def test_a_full_disk_leaves_no_half_file(problem, tmp_path, monkeypatch):
    import errno

    import influence_core.influence.scoring as scoring

    ds, _, calc = problem

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scoring.os, "pwrite", full)
    with pytest.raises(OSError, match="No space"):
        calc.scores(ds.X_test[:2], ds.y_test[:2], out=tmp_path / "s.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no header-only .npy, no manifest, no partial


@pytest.mark.parametrize(
    "executor, error, message",
    [
        ("bogus", ValueError, "executor='bogus'.*has no port"),
        (object(), TypeError, "executor must be"),
        (3, TypeError, "executor must be"),
    ],
)
def test_a_bad_executor_is_one_clear_error(problem, tmp_path, executor, error, message):
    """Was UnboundLocalError: cannot access local variable 'ex' (from the cleanup of a run that never started)."""
    ds, _, calc = problem
    with pytest.raises(error, match=message):
        calc.scores(ds.X_test[:2], ds.y_test[:2], executor=executor)
    with pytest.raises(error, match=message):  # also with a disk sink to clean up
        calc.scores(ds.X_test[:2], ds.y_test[:2], executor=executor, out=tmp_path / "s.npy")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ hostile test data
def test_integer_test_inputs_are_scored_as_floats(problem):
    ds, _, calc = problem
    X = np.round(ds.X_test[:3] * 4)
    np.testing.assert_array_equal(calc.scores(X.astype(np.int64), ds.y_test[:3]), calc.scores(X, ds.y_test[:3]))
    with pytest.raises(ValueError, match="X_test holds integers above 16777216"):
        calc.scores(np.full_like(X, 2**25, dtype=np.int64), ds.y_test[:3])


@pytest.mark.parametrize(
    "X, y, message",
    [
        (lambda X: X.astype(str), None, "X_test must be numeric"),
        (lambda X: [[1.0, 2.0], [3.0]], [0, 1], "X_test could not be read as an array"),
        (lambda X: X + 1j, None, "X_test is complex"),
        (None, lambda y: y.astype(str), "y_test must be numeric"),
    ],
)
def test_test_data_of_the_wrong_kind_is_refused_in_one_line(problem, X, y, message):
    ds, _, calc = problem
    X0, y0 = ds.X_test[:2], ds.y_test[:2]
    with pytest.raises(ValueError, match=message):
        calc.scores(X(X0) if X else X0, y(y0) if callable(y) else (y if y is not None else y0))
