"""benchmarks/frontier.py: the Pareto marks and per-budget table on hand-made points, and one tiny end-to-end run on
the shipped digits logistic-regression ground truth whose LDS equals an independent computation through the public
API (same model recipe, same solver) scored against the same file."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frontier():
    spec = importlib.util.spec_from_file_location("frontier", ROOT / "benchmarks" / "frontier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pareto_marks_exactly_the_undominated_points(frontier):
    points = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.6), (3.0, 0.6), (0.5, float("nan")), (4.0, 0.9)]
    assert frontier.pareto(points) == [True, False, True, False, False, True]


def test_budget_table_names_the_most_faithful_configuration_within_each_budget(frontier):
    summary = [
        {"method": "gradient dot", "sampler": "—", "m": 10, "solver": "identity", "lds_mean": 0.3, "cost_ratio": 2.0},
        {"method": "sampled", "sampler": "random", "m": 32, "solver": "exact", "lds_mean": 0.5, "cost_ratio": 20.0},
        {"method": "full-data", "sampler": "all", "m": 10, "solver": "cg", "lds_mean": 0.7, "cost_ratio": 500.0},
    ]
    for s in summary:
        s |= {"lds_std": 0.0, "peak_mb": 1.0}
    best = {b["budget"]: b["best"] for b in frontier.budget_table(summary)}
    assert best[3] == "gradient dot" and best[10] == "gradient dot"
    assert best[30] == best[300] == "random m=32 exact"
    assert best[1000] == best[math.inf] == "full-data cg"


@pytest.mark.slow
def test_tiny_frontier_run_matches_an_independent_lds(frontier, tmp_path):
    from influence_core import InfluenceCalculator, load_dataset, train_model
    from influence_core.evaluation.ground_truth import lds_against, load_ground_truth

    args = [
        "--ground-truth",
        "digits_logreg",
        "--samplers",
        "random",
        "--solvers",
        "exact",
        "--full-solvers",
        "exact",
        "--m",
        "64",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert frontier.main(args) == 0
    result = json.loads((tmp_path / "digits_logreg.json").read_text())
    assert not (tmp_path / "digits_logreg.partial.json").exists()  # the checkpoint goes once the result is written
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".csv", ".md", ".png"}
    rows = {(r["method"], r["solver"]): r for r in result["runs"]}
    assert set(rows) == {("gradient dot", "identity"), ("full-data", "exact"), ("sampled", "exact")}
    assert all(r["status"] == "ok" and r["cost_ratio"] > 0 for r in result["runs"])

    gt = load_ground_truth("digits_logreg")
    r = gt.recipe
    ds = load_dataset(r["dataset"]["name"], seed=r["dataset"]["seed"], **r["dataset"]["options"])
    model = train_model(ds, r["model"]["arch"], seed=r["model"]["seed"], **r["model"]["train_settings"])
    calc = InfluenceCalculator(model, ds.X_train, ds.y_train)
    calc.fit(None, solver="exact", damping=0.01, curvature="gauss_newton")
    S = calc.scores(ds.X_test[gt.test_indices], ds.y_test[gt.test_indices])
    assert rows[("full-data", "exact")]["lds"] == pytest.approx(lds_against(S, gt).lds, abs=1e-6)
    assert np.isfinite(rows[("sampled", "exact")]["lds"])
    assert any(s["pareto"] for s in result["summary"])


def test_add_rows_merges_a_reference_row_and_recomputes_the_frontier(frontier, tmp_path):
    row = {"sampler": "random", "m": 32, "solver": "exact", "lds": 0.5, "cost_ratio": 20.0, "seconds": 1.0}
    row |= {"method": "sampled", "seed": 0, "wall_seconds": 1.0, "peak_mb": 10.0, "status": "ok"}
    summary = frontier.marked_summary([row])
    result = {"ground_truth": "toy", "runs": [row], "summary": summary, "budgets": frontier.budget_table(summary)}
    ref = dict(row, method="full-data", sampler="all", m=100, solver="cg_factor", lds=0.8, cost_ratio=900.0)
    path = tmp_path / "toy_full_data.json"
    path.write_text(json.dumps({"ground_truth": "toy", "command": "python ref.py", "row": ref}))
    merged = frontier.add_rows(result, [path])
    again = frontier.add_rows(merged, [path])  # adding the same file twice replaces its row
    assert len(merged["runs"]) == len(again["runs"]) == 2 and again["added_rows"] == merged["added_rows"]
    best = {b["budget"]: b["best"] for b in merged["budgets"]}
    assert best[30] == "random m=32 exact" and best[1000] == "full-data cg_factor"
    assert [s["pareto"] for s in merged["summary"]] == [True, True]
    path.write_text(json.dumps({"ground_truth": "other", "row": ref}))
    with pytest.raises(ValueError, match="not a reference row"):
        frontier.add_rows(result, [path])
    path.write_text(json.dumps({"ground_truth": "toy", "k_done": 60, "row": ref}))
    with pytest.raises(ValueError, match="against 60 subsets of 'toy', the frontier's against 100"):
        frontier.add_rows(result | {"ground_truth_recipe": {"k_done": 100}}, [path])
    assert len(frontier.add_rows(result | {"ground_truth_recipe": {"k_done": 60}}, [path])["runs"]) == 2
