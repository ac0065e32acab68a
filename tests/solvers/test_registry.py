"""K-FAC, EK-FAC and Arnoldi through the solver registry and every entry point: influence_scores,
InfluenceCalculator, class removal, the faithfulness/LDS studies, the CLI; factor files and bad input."""

import numpy as np
import pytest
import torch

from influence_core import InfluenceCalculator, influence_scores, train_model
from influence_core.cli.main import main
from influence_core.removal.class_removal import ClassRemoval
from influence_core.sampling.samplers import HessianSample
from influence_core.solvers.arnoldi import fit_arnoldi
from influence_core.solvers.factor_io import FactorFileError
from influence_core.solvers.kfac import KFACError, fit_kfac
from influence_core.solvers.registry import SOLVER_REGISTRY, FactorFit, available_solvers, fit_inverse
from influence_core.studies.faithfulness import StudyConfig, run_study


@pytest.fixture(scope="module")
def mlp64(digits):
    return train_model(digits, "mlp", seed=0, epochs=5, hidden=(16,), dtype="float64")


@pytest.fixture(scope="module")
def calc(digits, mlp64):
    return InfluenceCalculator(mlp64, digits.X_train, digits.y_train)


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    return HessianSample(np.sort(rng.choice(1437, 200, replace=False)), rng.uniform(0.2, 3.0, 200), "test", 200, 0)


def _direct(calc, digits, inverse, t=(0, 1, 2)):
    G = calc.gradients(digits.X_test[list(t)], digits.y_test[list(t)])
    return calc.scores_from_ihvp(inverse.solve(G).x)


def test_registered_with_their_options():
    names = available_solvers()
    assert {"kfac", "ekfac", "arnoldi"} <= set(names)
    assert {"fisher", "damping_rule", "factor_file", "other", "seed"} <= set(SOLVER_REGISTRY["ekfac"].options)
    assert {"rank", "complement", "factor_file"} <= set(SOLVER_REGISTRY["arnoldi"].options)


@pytest.mark.parametrize("method", ["kfac", "ekfac"])
def test_calculator_and_influence_scores_equal_a_direct_fit(method, digits, mlp64, calc, sample):
    obj = calc.objective
    direct = fit_kfac(obj, sample, method=method, fisher="empirical", damping=0.01)
    expected = _direct(calc, digits, direct)
    calc.fit(sample, solver=method, curvature="gauss_newton", damping=0.01, fisher="empirical")
    assert isinstance(calc.inverse, FactorFit) and calc.fit_info["inverse"] == method
    got = calc.scores(digits.X_test[:3], digits.y_test[:3])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)
    got2 = influence_scores(
        mlp64,
        digits,
        [0, 1, 2],
        hessian_indices=sample.indices,
        hessian_weights=sample.weights,
        solver=method,
        damping=0.01,
        curvature="gauss_newton",
        fisher="empirical",
    )
    np.testing.assert_allclose(got2, expected, rtol=1e-9, atol=1e-14)
    # the sample weights reach the fit: unweighted factors give other scores
    unweighted = _direct(calc, digits, fit_kfac(obj, sample.indices, method=method, fisher="empirical", damping=0.01))
    assert np.abs(unweighted - expected).max() > 1e-3 * np.abs(expected).max()


def test_arnoldi_through_the_calculator_equals_a_direct_fit(digits, calc, sample):
    direct = fit_arnoldi(calc.objective, sample, rank=30, curvature="gauss_newton", damping=0.01, seed=1)
    calc.fit(sample, solver="arnoldi", curvature="gauss_newton", damping=0.01, rank=30, seed=1)
    np.testing.assert_allclose(
        calc.scores(digits.X_test[:3], digits.y_test[:3]), _direct(calc, digits, direct), rtol=1e-7, atol=1e-12
    )
    assert calc.fit_info["rank"] == 30


def test_heuristic_damping_rule(calc):
    inv = fit_inverse(
        calc.objective,
        None,
        solver="ekfac",
        curvature="gauss_newton",
        damping=0.5,
        damping_rule="heuristic",
        fisher="empirical",
    )
    layer = inv.info["layer_damping"]
    expected = {b.module: 0.1 * float(f["lam"].mean()) for b, f in zip(inv.inverse.blocks, inv.inverse.factors)}
    assert layer == pytest.approx(expected) and inv.damping == pytest.approx(np.mean(list(expected.values())))
    assert all(v != 0.5 for v in layer.values())


def test_factor_file_saved_reloaded_and_refused_for_another_configuration(tmp_path, digits, calc, sample):
    path = tmp_path / "f" / "ekfac.npz"
    path.parent.mkdir()  # the folder of a factor file must exist: none is created
    first = fit_inverse(
        calc.objective,
        sample.indices,
        sample.weights,
        solver="ekfac",
        curvature="gauss_newton",
        damping=0.01,
        fisher="empirical",
        factor_file=str(path),
    )
    assert path.is_file() and first.info["loaded"] is False
    again = fit_inverse(
        calc.objective,
        sample.indices,
        sample.weights,
        solver="ekfac",
        curvature="gauss_newton",
        damping=0.01,
        fisher="empirical",
        factor_file=str(path),
    )
    assert again.info["loaded"] is True
    np.testing.assert_array_equal(_direct(calc, digits, again), _direct(calc, digits, first))
    with pytest.raises(FactorFileError, match="another configuration.*fisher"):
        fit_inverse(
            calc.objective,
            sample.indices,
            sample.weights,
            solver="ekfac",
            curvature="gauss_newton",
            damping=0.01,
            fisher="gauss_newton",
            factor_file=str(path),
        )
    with pytest.raises(FactorFileError, match="another configuration.*method"):
        fit_inverse(
            calc.objective,
            sample.indices,
            sample.weights,
            solver="kfac",
            curvature="gauss_newton",
            damping=0.01,
            fisher="empirical",
            factor_file=str(path),
        )
    # a directory keeps one file per configuration; Arnoldi too
    d = tmp_path / "cache"
    a = fit_inverse(
        calc.objective,
        sample.indices,
        solver="arnoldi",
        curvature="gauss_newton",
        damping=0.01,
        rank=10,
        factor_file=str(d),
    )
    b = fit_inverse(
        calc.objective,
        sample.indices,
        solver="arnoldi",
        curvature="gauss_newton",
        damping=0.01,
        rank=10,
        factor_file=str(d),
    )
    assert b.info["loaded"] and a.info["factor_file"] == b.info["factor_file"]
    np.testing.assert_array_equal(_direct(calc, digits, a), _direct(calc, digits, b))
    path.write_bytes(b"not a zip")
    with pytest.raises(FactorFileError, match="corrupt or truncated"):
        fit_inverse(
            calc.objective,
            sample.indices,
            sample.weights,
            solver="ekfac",
            curvature="gauss_newton",
            damping=0.01,
            fisher="empirical",
            factor_file=str(path),
        )


def test_bad_input(calc):
    obj = calc.objective
    with pytest.raises(KFACError, match="Gauss-Newton.*curvature='gauss_newton'"):
        fit_inverse(obj, None, solver="ekfac", curvature="hessian", damping=0.01)
    with pytest.raises(KFACError, match="Gauss-Newton"):
        fit_inverse(obj, None, solver="kfac", damping=0.01, curvature="hessian")
    with pytest.raises(KFACError, match="unknown fisher"):
        fit_inverse(obj, None, solver="ekfac", curvature="gauss_newton", fisher="exact")
    with pytest.raises(KFACError, match="damping_rule"):
        fit_inverse(obj, None, solver="ekfac", curvature="gauss_newton", damping_rule="auto")
    with pytest.raises(ValueError, match="takes no options.*rank"):
        fit_inverse(obj, None, solver="ekfac", curvature="gauss_newton", rank=3)
    with pytest.raises(ValueError, match="rank must be >= 1"):
        fit_inverse(obj, None, solver="arnoldi", curvature="gauss_newton", rank=0)
    with pytest.raises(ValueError, match="exceeds the number of parameters"):
        fit_inverse(obj, None, solver="arnoldi", curvature="gauss_newton", rank=obj.n_params + 1)
    with pytest.raises(ValueError, match="factor_file must be a path"):
        fit_inverse(obj, None, solver="arnoldi", curvature="gauss_newton", rank=2, factor_file=3)


def test_class_removal_runs_and_arnoldi_covering_the_range_equals_exact(digits, digits_logreg64):
    task = ClassRemoval(digits_logreg64, digits)
    exact = task.run(3, "random", 32, seed=0, solver="exact", curvature="gauss_newton", damping=0.01)
    # rank 32·9 = the whole Gauss-Newton range of 32 points: with the complement, Arnoldi is exact
    arn = task.run(
        3, "random", 32, seed=0, solver="arnoldi", curvature="gauss_newton", damping=0.01, rank=32 * 9, complement=True
    )
    torch.testing.assert_close(arn.delta, exact.delta, rtol=1e-6, atol=1e-9)
    ek = task.run(3, "random", 32, seed=0, solver="ekfac", curvature="gauss_newton", damping=0.01)
    assert ek.solver == "ekfac" and np.isfinite(ek.to_dict()["delta_norm"])
    cos = float(ek.delta @ exact.delta / (ek.delta.norm() * exact.delta.norm()))
    assert 0.5 < cos < 1 - 1e-6  # an approximation of the same Newton step, not the exact one


def test_faithfulness_study_with_ekfac_subsets_and_reference(digits, mlp64):
    config = StudyConfig(
        samplers=("random",),
        ms=(64, digits.n_train),
        n_seeds=1,
        n_test_points=5,
        solver="ekfac",
        reference_solver="ekfac",
        solver_options={"fisher": "empirical"},
    )
    result = run_study(config, dataset=digits, model=mlp64)
    assert result.context["reference"]["solver"] == "ekfac"
    rows = {r["m"]: r for r in result.rows}
    assert rows[digits.n_train]["spearman"] == pytest.approx(1.0)  # m = n: the reference itself
    assert rows[64]["spearman"] < 0.999
    with pytest.raises(ValueError, match="takes no options"):
        StudyConfig(solver="ekfac", solver_options={"rank": 3})
    with pytest.raises(ValueError, match="registered subset solver"):
        StudyConfig(solver="auto", solver_options={"fisher": "true"})


def test_cli_influence_with_ekfac_equals_a_direct_fit(tmp_path, digits, capsys):
    out = tmp_path / "s.npy"
    factors = tmp_path / "factors"
    args = [
        "influence",
        "--arch",
        "logreg",
        "--test-index",
        "0",
        "1",
        "--solver",
        "ekfac",
        "--solver-option",
        "fisher=empirical",
        "--solver-option",
        f"factor_file={factors}",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    scores = np.load(out)
    model = train_model(digits, "logreg", seed=0)
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
    direct = fit_kfac(calc.objective, None, method="ekfac", fisher="empirical", damping=0.01)
    np.testing.assert_allclose(scores, _direct(calc, digits, direct, (0, 1)), rtol=1e-5, atol=1e-9)
    assert len(list(factors.glob("ekfac-*.npz"))) == 1
    capsys.readouterr()
    assert main(["influence", "--solver", "ekfac", "--solver-option", "rank=3"]) == 2
    assert "takes no options ['rank']" in capsys.readouterr().err
    assert main(["influence", "--solver", "kfac", "--curvature", "hessian", "--arch", "logreg"]) == 2
    assert "curvature='gauss_newton'" in capsys.readouterr().err
    assert main(["influence", "--solver", "arnoldi", "--solver-option", "rank"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_lds_score_and_study_with_ekfac(tmp_path, capsys):
    import json

    from sklearn.datasets import load_digits

    from influence_core.data.datasets import load_dataset
    from influence_core.evaluation.lds import RetrainPlan, lds, retrain_outputs
    from influence_core.studies.lds import run_lds_study

    d = load_digits()
    data = tmp_path / "small.npz"
    rng = np.random.default_rng(0)
    order = rng.permutation(400)
    X, y = d.data[order], d.target[order]
    np.savez(data, X_train=X[:300], y_train=y[:300], X_test=X[300:], y_test=y[300:])
    out_json = tmp_path / "score.json"
    cache = tmp_path / "cache"
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
        str(cache),
        "--json",
        str(out_json),
        "--solvers",
        "auto",
        "ekfac",
        "--solver-option",
        "fisher=empirical",
        "--quiet",
    ]
    assert main(argv[:-3] + ["--solver-option", "rank=3", "--quiet"]) == 2
    assert "no solver in --solvers" in capsys.readouterr().err
    assert main(argv) == 0
    assert "| full-data influence (ekfac) |" in capsys.readouterr().out
    record = json.loads(out_json.read_text())
    got = {r["method"]: r["lds"] for r in record["records"]}
    # the same LDS from a direct EK-FAC fit on the same model, test points and (cached) retrains
    ds = load_dataset("npz", path=str(data))
    model = train_model(ds, "logreg", seed=0, dtype="float64")
    idx = np.asarray(record["test_indices"])
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
    inv = fit_kfac(calc.objective, None, method="ekfac", fisher="empirical", damping=0.01)
    S = calc.scores_from_ihvp(inv.solve(calc.gradients(ds.X_test[idx], ds.y_test[idx])).x)
    retrained = retrain_outputs(model, ds, RetrainPlan(n_subsets=3, n_seeds=2), cache_dir=cache)
    assert retrained.info["retrained"] == 0
    assert got["full-data influence (ekfac)"] == pytest.approx(lds(S, retrained, idx, "loss").lds, abs=1e-9)
    assert got["full-data influence (ekfac)"] != pytest.approx(got["full-data influence (exact)"], abs=1e-6)
    config = StudyConfig(
        dataset="npz",
        arch="logreg",
        samplers=("random",),
        ms=(40,),
        n_seeds=2,
        n_test_points=4,
        solver="ekfac",
        reference_solver="ekfac",
        solver_options={"fisher": "empirical"},
        dataset_options={"path": str(data)},
        train_settings={"dtype": "float64"},
    )
    result = run_lds_study(
        config, RetrainPlan(n_subsets=3, n_seeds=2), dataset=ds, model=model, cache_dir=cache, also_full=("exact",)
    )
    methods = [b["method"] for b in result.baselines]
    assert methods == ["full-data influence", "gradient dot", "full-data influence (exact)"]
    assert result.context["faithfulness_context"]["reference"]["solver"] == "ekfac"
    assert result.baselines[0]["lds"] == pytest.approx(got["full-data influence (ekfac)"], abs=1e-9)
    assert result.baselines[2]["lds"] == pytest.approx(got["full-data influence (exact)"], abs=1e-9)
