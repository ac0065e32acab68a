"""Tests of influence_core.studies.faithfulness: the study's output, its agreement with the engine, determinism, the
exact
Gauss-Newton (Woodbury) subset solve, the peak-memory measurement, and the CLI's errors.

Everything runs on a small real problem (400 scikit-learn digits, an MLP with 6 hidden units, p = 460) so the module
stays within a few seconds."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from influence_core import InfluenceCalculator, dataset_from_arrays, influence_scores, train_model
from influence_core.cli.main import main
from influence_core.sampling.samplers import available_samplers
from influence_core.studies.faithfulness import (
    METRICS,
    GaussNewtonSubsetSolver,
    PeakMemory,
    StudyConfig,
    run_study,
    write_outputs,
)

DAMPING = 0.01


@pytest.fixture(scope="module")
def small():
    d = load_digits()
    ds = dataset_from_arrays(
        d.data[:400], d.target[:400], name="digits400", image_shape=(8, 8), test_fraction=0.25, seed=0
    )
    model = train_model(ds, "mlp", seed=0, hidden=(6,), epochs=10, polish_steps=30)
    return ds, model


@pytest.fixture(scope="module")
def small_run(small):
    ds, model = small
    config = StudyConfig(dataset="digits400", ms=(8, 24), n_seeds=2, n_test_points=6, k=5, hessian_reference=True)
    return run_study(config, dataset=ds, model=model)


def _finite(value) -> bool:
    return isinstance(value, (bool, str)) or (value is not None and math.isfinite(float(value)))


def test_small_run_is_well_formed(small_run, tmp_path):
    samplers = available_samplers()
    assert len(small_run.rows) == len(samplers) * 2 * 2
    assert {(r["sampler"], r["m"], r["seed"]) for r in small_run.rows} == {
        (s, m, seed) for s in samplers for m in (8, 24) for seed in (0, 1)
    }
    for row in small_run.rows:
        assert row["status"] == "ok", row
        assert all(_finite(v) for v in row.values()), row
        assert 0 <= row["rel_error"] and -1 <= row["spearman"] <= 1
        assert 0 <= row["topk_helpful"] <= 1 and 0 <= row["topk_harmful"] <= 1
        assert row["sampler_seconds"] >= 0 and row["solve_seconds"] > 0
        if PeakMemory.supported():
            assert row["peak_mb"] >= 0
    assert len(small_run.summary) == len(samplers) * 2
    for rec in small_run.summary:
        assert all(_finite(v) for v in rec.values()), rec
        assert rec["failed"] == 0 and rec["seeds"] == 2 and -1 <= rec["seed_spearman"] <= 1
    # each draw's indices are recorded and have the right size
    assert [len(s["indices"]) for s in small_run.samples] == [r["m"] for r in small_run.rows]

    paths = write_outputs(small_run, tmp_path, "small", plotlyjs="cdn")
    with open(paths["runs_csv"]) as fh:
        runs = list(csv.DictReader(fh))
    assert len(runs) == len(small_run.rows) and all(v != "" for r in runs for v in r.values())
    with open(paths["summary_csv"]) as fh:
        assert len(list(csv.DictReader(fh))) == len(small_run.summary)
    record = json.loads(paths["json"].read_text())
    assert record["config"]["ms"] == [8, 24] and record["config"]["samplers"] == samplers
    assert record["context"]["reference"]["solver"] == "exact"
    assert len(record["test_indices"]) == 6 and len(record["samples"]) == len(runs)
    table = paths["markdown"].read_text()
    assert "| logit | 24 |" in table and "Best sampler vs random" in table and "± " in table
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plotly" in paths["html"].read_text()[:5000].lower()


def test_whole_pool_equals_full_data_influence(small):
    ds, model = small
    config = StudyConfig(samplers=("random", "importance"), ms=(ds.n_train,), n_seeds=1, n_test_points=5)
    result = run_study(config, dataset=ds, model=model)
    for row in result.rows:
        assert row["rel_error"] < 1e-4 and row["spearman"] > 0.9999
        assert row["topk_helpful"] == 1.0 and row["topk_harmful"] == 1.0
    direct = influence_scores(
        model, ds, result.test_indices, None, solver="exact", damping=DAMPING, curvature="gauss_newton"
    )
    np.testing.assert_allclose(result.reference_scores, direct, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.scores[("random", ds.n_train, 0)], direct, rtol=1e-3, atol=1e-6)


def test_same_seed_same_numbers_and_seeds_differ(small, small_run):
    ds, model = small
    samplers = ("random", "feature", "importance")
    config = StudyConfig(dataset="digits400", samplers=samplers, ms=(8, 24), n_seeds=2, n_test_points=6, k=5)
    again = run_study(config, dataset=ds, model=model)
    keys = [*METRICS, "seed", "m", "sampler"]
    before = [(r, s) for r, s in zip(small_run.rows, small_run.samples) if r["sampler"] in samplers]
    assert [[r[k] for k in keys] for r in again.rows] == [[r[k] for k in keys] for r, _ in before]
    assert again.samples == [s for _, s in before]
    random_rows = [r for r in small_run.rows if r["sampler"] == "random" and r["m"] == 8]
    assert random_rows[0]["spearman"] != random_rows[1]["spearman"]


@pytest.mark.parametrize("m, budget", [(15, 1e6), (15, 0.0), (80, 1e6)])
def test_shared_gram_low_rank_solve_matches_engine_exact_gauss_newton(small, m, budget):
    """The study's low_rank path; r = 9m rows: m = 15 uses the r×r Woodbury system (with and without the precomputed
    Gram), m = 80 the p×p one."""
    ds, model = small
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
    G = calc.gradients(ds.X_test[:4], ds.y_test[:4])
    rng = np.random.default_rng(m)
    idx = np.sort(rng.choice(ds.n_train, m, replace=False))
    w = rng.uniform(0.5, 2.0, m)
    solver = GaussNewtonSubsetSolver(calc.objective, G, DAMPING, gram_budget_mb=budget)
    assert solver.precomputed == (budget > 0)
    got = solver.solve(idx, w)
    want = calc.fit(idx, w, solver="exact", damping=DAMPING, curvature="gauss_newton").ihvp(G).x
    torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-4 * float(want.abs().max()))


def test_nonconvergence_is_recorded_not_hidden(small):
    ds, model = small
    config = StudyConfig(samplers=("random",), ms=(30,), n_seeds=1, n_test_points=3, solver="cg", max_iter=1, tol=1e-12)
    result = run_study(config, dataset=ds, model=model)
    row, summary = result.rows[0], result.summary[0]
    assert row["status"].startswith("not converged") and row["converged"] is False and row["iterations"] == 1
    assert summary["not_converged"] == 1 and summary["failed"] == 0 and math.isfinite(summary["spearman_mean"])


def test_peak_memory_sees_a_real_allocation():
    if not PeakMemory.supported():
        pytest.skip("peak-memory reset needs Linux /proc/self/clear_refs")
    with PeakMemory() as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        block.sum()
    del block
    assert 150 <= mem.mb < 1000
    with PeakMemory() as small_block:
        np.ones(10).sum()
    assert small_block.mb < 50


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"samplers": ("nope",)}, "unknown sampler"),
        ({"ms": (0,)}, "m must be integers >= 1"),
        ({"damping": -1.0}, "damping must be"),
        ({"curvature": "fisher"}, "unknown curvature"),
        ({"curvature": "hessian", "solver": "low_rank"}, "needs curvature='gauss_newton'"),
        ({"curvature": "hessian", "solver": "woodbury"}, "needs curvature='gauss_newton'"),  # its former name
        ({"n_seeds": 0}, "n_seeds must be"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(**kwargs)


def test_the_former_name_woodbury_reads_as_low_rank():
    assert StudyConfig(solver="woodbury").solver == "low_rank"


def test_m_larger_than_training_set_is_rejected_before_training(small):
    ds, _ = small
    with pytest.raises(ValueError, match=f"exceed the {ds.n_train} training points"):
        run_study(StudyConfig(ms=(8, ds.n_train + 1)), dataset=ds)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--samplers", "random", "nope"], "unknown sampler(s) ['nope']"),
        (["--m", "32", "100000"], "exceed the 1437 training points"),
        (["--m", "0"], "m must be integers >= 1"),
        (["--test-points", "5000"], "n_test_points = 5000 exceeds"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path):
    assert main(["faithfulness", *argv, "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_cli_small_run_writes_every_output(small, tmp_path, capsys):
    ds, _ = small
    data = tmp_path / "small.npz"
    np.savez(data, X_train=ds.X_train, y_train=ds.y_train, X_test=ds.X_test, y_test=ds.y_test)
    out_dir = tmp_path / "out"
    argv = [
        "faithfulness",
        "--dataset",
        "npz",
        "--path",
        str(data),
        "--hidden",
        "4",
        "--epochs",
        "2",
        "--samplers",
        "random",
        "logit",
        "--m",
        "8",
        "16",
        "--seeds",
        "2",
        "--test-points",
        "3",
        "--k",
        "3",
        "--out",
        str(out_dir),
        "--name",
        "cli",
        "--plotlyjs",
        "cdn",
        "--quiet",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| random | 8 |" in out and "| logit | 16 |" in out
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["cli.html", "cli.json", "cli.md", "cli.png", "cli_runs.csv", "cli_summary.csv"]
    record = json.loads((out_dir / "cli.json").read_text())
    assert record["config"]["train_settings"] == {"epochs": 2, "hidden": [4]}
    assert record["context"]["n_train"] == ds.n_train
    assert len(record["runs"]) == 2 * 2 * 2 and all(r["status"] == "ok" for r in record["runs"])


@pytest.mark.slow
def test_blocked_scoring_on_an_executor_matches_in_memory_scores(small):
    """With an executor the training gradients are never stored: scores come block by block (here 50 training
    points per block) on the sequential executor and on a 2-worker local Dask cluster, and every metric matches the
    in-memory product to rounding."""
    from influence_core.influence.executors import get_executor

    ds, model = small
    config = StudyConfig(
        dataset="digits400", samplers=("random", "importance"), ms=(16,), n_seeds=2, n_test_points=4, k=5
    )
    base = run_study(config, dataset=ds, model=model)
    for options in ({}, {"workers": 2}):
        with get_executor(**options) as executor:
            blocked = run_study(config, dataset=ds, model=model, executor=executor, train_chunk_size=50)
        assert blocked.context["scoring"]["blocked"] and blocked.context["scoring"]["train_chunk_size"] == 50
        for a, b in zip(base.rows, blocked.rows):
            assert (a["sampler"], a["m"], a["seed"]) == (b["sampler"], b["m"], b["seed"])
            # The blocked and in-memory products sum float32 terms in different orders, so scores agree to about
            # 1e-6 relative and near-ties may swap neighbouring ranks. Each swap of adjacent ranks among n points
            # moves Spearman by 12/(n(n²-1)) (2e-7 here), and a swap at the k-th place moves a top-k overlap by
            # 1/k; a wrong block (a skipped or repeated chunk) moves both far more.
            assert b["spearman"] == pytest.approx(a["spearman"], abs=1e-4), options
            assert b["rel_error"] == pytest.approx(a["rel_error"], rel=1e-3, abs=1e-6), options
            for key in ("topk_helpful", "topk_harmful"):
                assert abs(b[key] - a[key]) <= 1.0 / config.k + 1e-9, (options, key)


def test_cli_rejects_workers_with_scheduler_and_bad_chunk(capsys):
    with pytest.raises(SystemExit):
        main(["faithfulness", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert "not allowed with" in capsys.readouterr().err
    assert main(["faithfulness", "--train-chunk-size", "0", "--workers", "1"]) == 2
    assert "--train-chunk-size" in capsys.readouterr().err


def test_outputs_of_a_tiny_study_plot_and_stay_in_their_folder(tmp_path):
    """A tiny run (one sampler, m = 8, one seed) has only zeros in the log-scaled panels: its plot died with "Data
    cannot be log-scaled because all values are <= 0". And --name is a name: '../x' would write two folders up."""
    from types import SimpleNamespace

    from influence_core.studies.faithfulness import plot_html, plot_png

    keys = ("spearman", "rel_error", "topk_helpful", "topk_harmful", "solve_seconds")
    record = {
        "sampler": "uniform",
        "m": 8,
        "seed_spearman": float("nan"),  # one seed: no seed agreement
        **{f"{k}_{s}": 0.0 for k in keys for s in ("mean", "std")},
    }
    result = SimpleNamespace(
        summary=[record],
        config={"dataset": "d", "arch": "a", "curvature": "gauss_newton", "damping": 0.01, "n_seeds": 1},
    )
    plot_png(result, tmp_path / "p.png")
    plot_html(result, tmp_path / "p.html", "cdn")
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "p.html").stat().st_size > 1000
    for name in ("../x", "a/b", "..", "", "~x"):
        with pytest.raises(ValueError, match="name"):
            write_outputs(result, tmp_path / "out", name)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.json").exists()
