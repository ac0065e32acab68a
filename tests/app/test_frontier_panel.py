"""The Faithfulness page's frontier panel (issue 24 part 5): for the app model that is a shipped ground truth's model
(the digits MLP with 64 hidden units and 40 epochs = ``ground_truth/digits_mlp``) it draws the committed frontier of
``docs/frontier/digits_mlp.json`` with its Pareto frontier and per-budget table, and places the current model's live
point at the LDS an independent computation through the public API gives; any other model is refused with one
sentence that says how to build its ground truth, and the worker refuses to score it too (retrain keys differ)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from apptest_helpers import errors, ok

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[2]
FRONTIER = ROOT / "docs" / "frontier" / "digits_mlp.json"


@pytest.fixture(scope="module")
def digits_mlp_run():
    """The app's configuration of the digits_mlp ground truth's model (recipe of the LDS study)."""
    from ui.config import ModelConfig, RunConfig

    return RunConfig(model=ModelConfig(arch="mlp", hidden=64, epochs=40))


def array(value) -> list:
    """A plotly array from a chart spec: a list, or plotly 6's typed array ``{"dtype": "f8", "bdata": base64}``."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value)


def charts(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def frontier_chart(at):
    found = [c for c in charts(at) if "LDS against cost" in (c["layout"].get("title", {}).get("text") or "")]
    return found[0] if found else None


def test_matching_digits_mlp_config_is_the_shipped_ground_truths_model(digits_mlp_run, fast_run):
    import influence_core as ic
    from ui.frontier import match_run, shipped_runs

    data = ic.load_dataset("digits", seed=0)
    assert match_run(digits_mlp_run, lambda: data).name == "digits_mlp"
    assert match_run(fast_run, lambda: data).name is None
    assert ("digits_mlp", digits_mlp_run) in shipped_runs()  # the page's "switch to" offer


def test_frontier_panel_draws_the_committed_frontier_of_the_matching_digits_mlp(app_page, digits_mlp_run):
    at = app_page("pages/4_Faithfulness.py", run=digits_mlp_run)
    ok(at.run())
    assert not errors(at)
    fig = frontier_chart(at)
    assert fig is not None, "no frontier chart for the digits_mlp model"
    committed = json.loads(FRONTIER.read_text())
    finite = [s for s in committed["summary"] if s["lds_mean"] is not None]
    drawn = [
        (x, y)
        for t in fig["data"]
        if t.get("mode", "").startswith("markers")
        for x, y in zip(array(t["x"]), array(t["y"]))
    ]
    assert len([p for p in drawn if p[0] is not None]) == len(finite)  # every committed configuration, once
    front = next(t for t in fig["data"] if t.get("name", "").startswith("Pareto frontier"))
    expected = sorted((s["cost_ratio"], s["lds_mean"]) for s in finite if s["pareto"])
    assert [p for pair in zip(array(front["x"]), array(front["y"])) for p in pair] == pytest.approx(
        [p for pair in expected for p in pair]
    )
    names = {t.get("name") for t in fig["data"]}
    assert {"importance sample", "random sample", "CG", "exact solve", "K-FAC"} <= names  # readable names
    # which method for which budget: the committed budgets' best, by readable name
    table = next(d.value for d in at.dataframe if "most faithful method within it" in d.value.columns)
    for row, b in zip(table.to_dict("records"), committed["budgets"]):
        if b["best"] is None:
            assert row["most faithful method within it"] == "nothing fits this budget"
        else:
            assert float(row["LDS (± std over sampler seeds)"].split()[0]) == pytest.approx(b["lds_mean"], abs=5e-4)
            sampler, _, rest = b["best"].partition(" m=")
            if b["best"].startswith(("full-data", "gradient")):
                continue
            m, solver = rest.split()
            assert row["most faithful method within it"].startswith(f"{sampler} sample, m = {m}, ")
    assert any("docs/frontier/digits_mlp.json" in c.value for c in at.caption)
    assert at.button(key="faith_front_run") is not None


def test_live_point_has_the_lds_of_an_independent_public_api_computation(app_page, digits_mlp_run):
    import influence_core as ic
    from influence_core.evaluation.ground_truth import lds_against, load_ground_truth, model_recipe, training_recipe

    at = app_page("pages/4_Faithfulness.py", run=digits_mlp_run, timeout=300)
    ok(at.run())
    at.selectbox(key="faith_front_sampler").set_value("importance")
    at.number_input(key="faith_front_m").set_value(64)
    at.number_input(key="faith_front_seed").set_value(1)
    at.selectbox(key="faith_front_solver").set_value("exact")
    at.button(key="faith_front_run").click()
    ok(at.run())
    assert not errors(at), errors(at)
    record = at.session_state["faith_front_live"]["record"]
    star = next(t for t in frontier_chart(at)["data"] if t.get("name", "").startswith("this model now"))
    assert array(star["y"])[0] == pytest.approx(record["lds"])
    assert array(star["x"])[0] == pytest.approx(record["cost_ratio"])
    assert math.isfinite(record["cost_ratio"]) and record["cost_ratio"] > 0
    # independently: the ground truth's model trained by its recipe, the same sample and solver, scored by LDS
    data = ic.load_dataset("digits", seed=0)
    model = ic.train_model(data, "mlp", seed=0, **digits_mlp_run.model.train_kwargs())
    assert model_recipe(model) == training_recipe("mlp", 0, **digits_mlp_run.model.train_kwargs())
    gt = load_ground_truth("digits_mlp")
    sample = ic.sample_hessian_subset(model, data, "importance", 64, seed=1)
    calc = ic.InfluenceCalculator(model, data.X_train, data.y_train)
    calc.fit(sample, solver="exact", damping=0.01, curvature="gauss_newton")
    expected = lds_against(calc.scores(data.X_test[gt.test_indices], data.y_test[gt.test_indices]), gt).lds
    assert record["lds"] == pytest.approx(expected, abs=1e-4)
    assert f"LDS **{expected:.3f}**" in " ".join(m.value for m in at.markdown)


def test_frontier_panel_refuses_a_model_without_shipped_ground_truth(app_page, fast_run):
    at = app_page("pages/4_Faithfulness.py")
    ok(at.run())
    assert not errors(at)
    notes = [i.value for i in at.info if "ground truth" in i.value]
    assert len(notes) == 1 and notes[0].startswith(
        "No shipped ground truth is of this model (MLP with 8 hidden units on digits"
    )
    assert "python -m influence_core lds score --dataset digits --arch mlp --hidden 8 --epochs 3" not in notes[0]
    assert "GroundTruthSpec" in notes[0]  # 10 polish steps: the command line cannot say so; registering can
    assert frontier_chart(at) is None
    assert not [b for b in at.button if b.key == "faith_front_run"]
    assert any(b.key == "faith_front_switch_digits_mlp" for b in at.button)


def test_worker_refuses_to_score_another_model_against_the_ground_truth(trained_fast_run):
    from ui import compute

    with pytest.raises(ValueError, match="retrain key .* are of another model"):
        compute.frontier_point(None, trained_fast_run, "digits_mlp", "random", 32, 0, "exact", 0.01, "gauss_newton", ())


def test_refusals_say_how_to_build_the_ground_truth(digits_mlp_run, monkeypatch, tmp_path):
    import shutil

    import torch

    import influence_core as ic
    from ui.config import ModelConfig, RunConfig
    from ui.frontier import match_run

    data = ic.load_dataset("digits", seed=0)
    # the recipe of a registered ground truth whose file is not there: the command that builds it
    monkeypatch.setenv("INFLUENCE_GROUND_TRUTH_DIR", str(tmp_path))
    missing = match_run(digits_mlp_run, lambda: data)
    assert missing.name is None
    assert "`python -m influence_core lds ground-truth digits_mlp --cache runs/lds-cache`" in missing.message
    # the file is there but made under another key (here: another torch version): not this model's retrains
    shutil.copy(ROOT / "ground_truth" / "digits_mlp.npz", tmp_path / "digits_mlp.npz")
    assert match_run(digits_mlp_run, lambda: data).name == "digits_mlp"
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    other = match_run(digits_mlp_run, lambda: data)
    assert other.name is None and "another key" in other.message and "lds ground-truth digits_mlp" in other.message
    monkeypatch.undo()
    # no registered recipe: the lds score command that retrains this very model, when its options can say so
    plain = RunConfig(model=ModelConfig(arch="mlp", hidden=16, epochs=5))
    message = match_run(plain, lambda: data).message
    assert message.startswith("No shipped ground truth is of this model")
    assert "`python -m influence_core lds score --dataset digits --arch mlp --hidden 16 --epochs 5 --seed 0" in message
    upload = match_run(RunConfig(data=plain.data.__class__(name="npz", npz_digest="ab" * 32)), lambda: data)
    assert upload.name is None and "uploaded dataset" in upload.message
