"""The dattri comparison's main-process side (benchmarks/field_compare.py, influence_core/bench/field.py): dattri's
conventions converted to ours against an independent computation of dattri's formulas, the array exchange, the
table; and, where the side environment exists, dattri itself on logistic regression against our exact influence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, hessian, vmap
from torch.nn import functional as F

import influence_core.bench as bench
from influence_core import InfluenceCalculator
from influence_core.bench.field import agreement, read_result, table_rows, to_project_convention, write_problem

sys.path.insert(0, str(Path(bench.__file__).parent))
from side_models import load_problem  # noqa: E402

DATTRI_PYTHON = os.environ.get("DATTRI_PYTHON", "/tmp/dattri-venv/bin/python")
DELTA = 0.01


def _dattri_formulas(model, X, y, Xq, yq, lam):
    """dattri's raw outputs, (n_train, n_test), computed here from their definitions: the influence-function
    attributors' g_jᵀ (H_mean + λI)⁻¹ g_t (H of the mean cross-entropy, no weight decay, no 1/n) and Grad-Dot's
    g_jᵀ g_t."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)

    def flat_loss(theta, x, t):
        shaped, i = {}, 0
        for k in names:
            shaped[k] = theta[i : i + params[k].numel()].view_as(params[k])
            i += params[k].numel()
        return F.cross_entropy(functional_call(model, shaped, (x,)), t)

    theta = torch.cat([params[k].reshape(-1) for k in names])
    per_sample = vmap(grad(lambda th, x, t: flat_loss(th, x[None], t[None])), in_dims=(None, 0, 0))
    G, Gq = per_sample(theta, X, y), per_sample(theta, Xq, yq)
    H = hessian(flat_loss)(theta, X, y)
    ihvp = torch.linalg.solve(H + lam * torch.eye(len(theta), dtype=H.dtype), Gq.T)
    return (G @ ihvp).numpy(), (G @ Gq.T).numpy()


def test_dattri_conventions_become_ours(digits, digits_logreg64):
    model = digits_logreg64
    X, y = torch.as_tensor(digits.X_train, dtype=torch.float64), torch.as_tensor(digits.y_train)
    Xq, yq = X.new_tensor(digits.X_test[:12]), torch.as_tensor(digits.y_test[:12])
    n = len(X)
    raw_if, raw_dot = _dattri_formulas(model, X, y, Xq, yq, lam=model.weight_decay + DELTA)
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
    ours = calc.fit(None, solver="exact", curvature="hessian", damping=DELTA).scores(
        digits.X_test[:12], digits.y_test[:12]
    )
    for kind in ("explicit", "cg", "ekfac"):
        converted = to_project_convention(raw_if, kind, n)
        assert converted.shape == (12, n)
        np.testing.assert_allclose(converted, ours, rtol=1e-6, atol=1e-9 * np.abs(ours).max())
    dot = calc.scores_from_ihvp(calc.gradients(digits.X_test[:12], digits.y_test[:12]))  # (1/n) g_tᵀ g_j
    for kind in ("tracin", "grad_dot", "trak"):
        np.testing.assert_allclose(
            to_project_convention(raw_dot, kind, n), n * dot, rtol=1e-6, atol=1e-9 * n * np.abs(dot).max()
        )
    # a wrong conversion (no transpose, a flipped sign, the 1/n left out) is caught
    assert agreement(ours, -to_project_convention(raw_if, "explicit", n))["pearson_exact"] < -0.99
    with pytest.raises(ValueError, match=r"\(n_train, n_test\)"):
        to_project_convention(raw_if.T, "explicit", n)


def test_conversion_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown dattri method kind 'influence'"):
        to_project_convention(np.zeros((3, 2)), "influence", 3)
    bad = np.zeros((3, 2))
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="1 NaN/inf"):
        to_project_convention(bad, "trak", 3)


def test_problem_round_trip(tmp_path, digits, digits_mlp):
    other = {k: v + 1 for k, v in digits_mlp.state_dict().items()}
    settings = {
        "arch": "mlp",
        "dtype": "float32",
        "threads": 1,
        "seed": 0,
        "image_shape": None,
        "methods": [
            {"name": "TRAK, 2", "kind": "trak", "checkpoints": ["final", "seed1"]},
            {"name": "IF explicit", "kind": "explicit", "damping": 0.011},
        ],
    }
    write_problem(
        tmp_path,
        weights=digits_mlp.state_dict(),
        X_train=digits.X_train,
        y_train=digits.y_train,
        X_query=digits.X_test[:5],
        y_query=digits.y_test[:5],
        settings=settings,
        checkpoints={"seed1": other},
    )
    loaded, side, (X, y, Xq, yq) = load_problem(tmp_path)
    assert loaded["methods"] == settings["methods"]
    with torch.no_grad():
        torch.testing.assert_close(side(Xq), digits_mlp(torch.as_tensor(digits.X_test[:5])))
    with np.load(tmp_path / "checkpoints.npz", allow_pickle=False) as f:
        np.testing.assert_array_equal(f["seed1__head.bias"], other["head.bias"].numpy())
    # the side's answer is read without pickle
    np.savez(tmp_path / "dattri.npz", **{"TRAK, 2": np.ones((len(X), 5))})
    (tmp_path / "dattri.json").write_text(json.dumps({"forward_backward_seconds": 0.01, "rows": {}}))
    arrays, report = read_result(tmp_path)
    assert arrays["TRAK, 2"].shape == (len(X), 5) and report["forward_backward_seconds"] == 0.01
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    os.replace(tmp_path / "obj.npy", tmp_path / "dattri.npz")
    with pytest.raises(ValueError):
        read_result(tmp_path)
    with pytest.raises(ValueError, match=r"checkpoints \['seed2'\] that are not given"):
        write_problem(
            tmp_path,
            weights=digits_mlp.state_dict(),
            X_train=X,
            y_train=y,
            X_query=Xq,
            y_query=yq,
            settings={**settings, "methods": [{"name": "t", "kind": "trak", "checkpoints": ["seed2"]}]},
        )
    with pytest.raises(ValueError, match="unknown dattri method kinds"):
        write_problem(
            tmp_path,
            weights={},
            X_train=X,
            y_train=y,
            X_query=Xq,
            y_query=yq,
            settings={**settings, "methods": [{"name": "t", "kind": "shapley"}]},
        )


def test_table_rows():
    records = [
        {"method": "a", "side": "main", "lds": 0.5, "seconds": 2.0},
        {"method": "b", "side": "dattri", "lds": 0.7, "seconds": 3.0, "train_seconds": 10.0},
        {"method": "c", "side": "dattri", "lds": None, "seconds": None},
    ]
    rows = table_rows(records, {"main": 0.5, "dattri": 0.25})
    assert [r["method"] for r in rows] == ["b", "a", "c"]
    assert rows[0]["cost_ratio"] == pytest.approx(12.0) and rows[0]["train_ratio"] == pytest.approx(32.0)
    assert rows[1]["cost_ratio"] == pytest.approx(4.0) and rows[1]["train_ratio"] is None
    assert rows[2]["cost_ratio"] is None


def test_agreement():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 50))
    assert agreement(A, 3 * A) == pytest.approx({"spearman_exact": 1.0, "pearson_exact": 1.0})
    assert agreement(A, -A)["spearman_exact"] == pytest.approx(-1.0)
    assert abs(agreement(A, rng.normal(size=(4, 50)))["pearson_exact"]) < 0.5


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(DATTRI_PYTHON).exists(),
    reason=f"no dattri side environment at {DATTRI_PYTHON} (set DATTRI_PYTHON; install commands in "
    "docs/FIELD_COMPARISON.md)",
)
@pytest.mark.slow
def test_dattri_side_on_logistic_regression(tmp_path, digits, digits_logreg64):
    """dattri's explicit influence function, converted, is our exact Hessian influence (same damping); its Grad-Dot
    is n × our gradient dot; TRAK agrees in sign."""
    model = digits_logreg64
    n = digits.n_train
    lam = model.weight_decay + DELTA
    methods = [
        {"name": "explicit", "kind": "explicit", "damping": lam},
        {"name": "dot", "kind": "grad_dot", "weights": [1.0], "checkpoints": ["final"], "batch_size": 512},
        {"name": "trak", "kind": "trak", "proj_dim": 256, "batch_size": 512, "checkpoints": ["final"]},
    ]
    write_problem(
        tmp_path,
        weights=model.state_dict(),
        X_train=digits.X_train,
        y_train=digits.y_train,
        X_query=digits.X_test[:10],
        y_query=digits.y_test[:10],
        settings={"arch": "mlp", "dtype": "float64", "threads": 1, "seed": 0, "image_shape": None, "methods": methods},
    )
    side = Path(bench.__file__).parent / "dattri_side.py"
    subprocess.run([DATTRI_PYTHON, str(side), str(tmp_path)], check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    raw, report = read_result(tmp_path)
    assert all(r["error"] is None for r in report["rows"].values()), report["rows"]
    calc = InfluenceCalculator(model, digits.X_train, digits.y_train)
    ours = calc.fit(None, solver="exact", curvature="hessian", damping=DELTA).scores(
        digits.X_test[:10], digits.y_test[:10]
    )
    np.testing.assert_allclose(
        to_project_convention(raw["explicit"], "explicit", n), ours, rtol=1e-5, atol=1e-7 * np.abs(ours).max()
    )
    dot = calc.scores_from_ihvp(calc.gradients(digits.X_test[:10], digits.y_test[:10]))
    np.testing.assert_allclose(
        to_project_convention(raw["dot"], "grad_dot", n), n * dot, rtol=1e-5, atol=1e-7 * n * np.abs(dot).max()
    )
    assert agreement(ours, to_project_convention(raw["trak"], "trak", n))["pearson_exact"] > 0.3
    assert report["forward_backward_seconds"] > 0


def test_read_ground_truth(tmp_path):
    from influence_core.bench.field import read_ground_truth
    from influence_core.evaluation.lds import draw_subsets

    masks = draw_subsets(13, 4, 0.5, seed=0)
    logits = np.random.default_rng(0).normal(size=(2, 4, 3, 5)).astype(np.float32)
    recipe = json.dumps({"dataset": {"n_train": 13}})
    arrays = {
        "masks_packed": np.packbits(masks, axis=1),
        "logits": logits,
        "test_indices": np.array([0, 4, 7]),
        "y_test": np.array([1, 0, 3]),
        "recipe": np.array(recipe),
    }
    np.savez(tmp_path / "gt.npz", **arrays)
    gt = read_ground_truth(tmp_path / "gt.npz")
    np.testing.assert_array_equal(gt["masks"], masks)
    np.testing.assert_array_equal(gt["logits"], logits)
    np.savez(tmp_path / "bad.npz", **{**arrays, "logits": logits[:, :3]})
    with pytest.raises(ValueError, match="4 subset masks but logits for 3 subsets"):
        read_ground_truth(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", scores=np.zeros(3))
    with pytest.raises(ValueError, match="not an LDS ground-truth file"):
        read_ground_truth(tmp_path / "other.npz")


def test_field_compare_trains_the_ground_truths_recipe():
    """With --ground-truth the studied model is the file's (its training settings, so the retrains match); a
    mismatched --config is refused at the entry point."""
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("field_compare", root / "benchmarks" / "field_compare.py")
    field_compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(field_compare)

    def parse(*argv: str):
        parser = field_compare.argparse.ArgumentParser()
        field_compare.add_arguments(parser)
        return parser.parse_args(["--dattri-python", sys.executable, *argv])

    cnn = str(root / "ground_truth" / "mnist5k_cnn.npz")
    settings = field_compare._recipe_settings(parse("--ground-truth", cnn), "mnist5k", "cnn")
    assert settings["lr_schedule"] == "cosine" and settings["epochs"] == 30
    assert field_compare._recipe_settings(parse(), "mnist5k", "cnn") == {}
    with pytest.raises(ValueError, match="is for mnist5k:cnn .* not --config mnist5k:mlp"):
        field_compare._recipe_settings(parse("--ground-truth", cnn), "mnist5k", "mlp")
    mlp = str(root / "ground_truth" / "mnist5k_mlp.npz")
    assert field_compare._recipe_settings(parse("--ground-truth", mlp), "mnist5k", "mlp") == {}
