"""AppTest tests of the Faithfulness, Lesson and Explorer pages (issue 12 parts 4-6) on the digits data with the
small, fast (real) training configuration of conftest.py: each page and each lesson step runs, shows what it
promises (checked against an independent computation where there is one) and sets up the state it says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apptest_helpers import errors, ok, tile_captions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[2]


def charts(at):
    return at.get("plotly_chart")


def specs(at):
    return [json.loads(c.proto.spec) for c in charts(at)]


def array(value) -> np.ndarray:
    """A plotly array from a chart spec: a list, or plotly 6's typed array ``{"dtype": "f8", "bdata": base64}``."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value)


def markdown(at):
    return "\n".join(m.value for m in at.markdown)


def frames(at):
    return [d.value for d in at.dataframe]


def downloads(at):
    return at.get("download_button")


# ------------------------------------------------------------------------------------------------ faithfulness
def committed_best(limit_m: int) -> str:
    """The sampler with the highest mean LDS at m <= limit_m in docs/lds/digits_mlp.json, read independently."""
    from influence_core.sampling.samplers import RENAMED_SAMPLERS

    summary = json.loads((ROOT / "docs" / "lds" / "digits_mlp.json").read_text())["summary"]
    best = max((r for r in summary if r["m"] <= limit_m), key=lambda r: r["lds_mean"])["sampler"]
    return RENAMED_SAMPLERS.get(best, best)


def test_faithfulness_page_shows_the_committed_study_bands_lines_and_budget(app_page):
    at = app_page("pages/4_Faithfulness.py")
    at.session_state["faith_study"] = "digits_mlp"
    ok(at.run())
    assert not errors(at)
    fig = specs(at)[0]
    names = {t.get("name") for t in fig["data"]}
    from influence_core.sampling.samplers import RENAMED_SAMPLERS

    samplers = {
        RENAMED_SAMPLERS.get(r["sampler"], r["sampler"])
        for r in json.loads((ROOT / "docs/lds/digits_mlp.json").read_text())["summary"]
    }
    assert samplers <= names  # one line per sampler ...
    assert sum(t.get("fill") == "toself" for t in fig["data"]) == len(samplers)  # ... and its seed band
    notes = " ".join(a.get("text", "") for a in fig["layout"].get("annotations", []))
    assert "noise ceiling 0.992" in notes and "full-data influence 0.755" in notes  # docs/lds/digits_mlp.json
    at.radio(key="faith_budget").set_value("m")
    at.session_state["faith_limit_kind"] = "m"
    at.number_input(key="faith_limit").set_value(128.0)
    ok(at.run())
    assert f"**{committed_best(128)}** at m = " in markdown(at)
    at.number_input(key="faith_limit").set_value(32.0)
    ok(at.run())
    assert f"**{committed_best(32)}** at m = 32" in markdown(at)
    # the cost axis: joined from docs/faithfulness/digits_mlp_summary.csv (same configuration)
    assert any("solve time" in (f["layout"].get("title", {}).get("text") or "") for f in specs(at))
    assert any("peak memory" in (f["layout"].get("title", {}).get("text") or "") for f in specs(at))
    at.radio(key="faith_budget").set_value("solve_seconds")
    ok(at.run())
    table = frames(at)[0]
    assert table["solve time (s)"].max() <= at.number_input(key="faith_limit").value
    assert len(downloads(at)) >= 3  # every table has a CSV button


@pytest.mark.slow
def test_faithfulness_live_lds_runs_on_the_current_model_with_progress(app_page, monkeypatch, tmp_path):
    monkeypatch.setenv("INFLUENCE_LDS_CACHE", str(tmp_path))
    at = app_page("pages/4_Faithfulness.py", timeout=600)
    ok(at.run())
    assert any("press **Run a small LDS" in i.value for i in at.info)
    at.multiselect(key="faith_live_samplers").set_value(["random", "importance"])
    at.multiselect(key="faith_live_ms").set_value([32])
    at.slider(key="faith_live_k").set_value(10)
    at.slider(key="faith_live_t").set_value(10)
    at.button(key="faith_live_run").click()
    ok(at.run())
    assert not errors(at), errors(at)
    assert "20 retrains run and 0 read from the cache" in " ".join(c.value for c in at.caption)
    assert len(list(tmp_path.rglob("k*_r*.npz"))) == 20  # the retrains are on disk (resumable cache)
    live = at.session_state["faith_live"]["record"]
    assert {r["sampler"] for r in live["summary"]} == {"random", "importance"}
    assert all(-1 <= r["lds_mean"] <= 1 for r in live["summary"])
    assert "Live LDS: K = 10" in specs(at)[-1]["layout"]["title"]["text"]


def test_faithfulness_budget_helpers():
    from ui.faithfulness import best_within_budget, budget_verdict, load_study

    rows = [
        {"sampler": "a", "m": 32, "lds_mean": 0.5, "lds_std": 0.01, "solve_seconds": 0.1, "peak_mb": 10},
        {"sampler": "a", "m": 64, "lds_mean": 0.6, "lds_std": 0.01, "solve_seconds": 0.3, "peak_mb": 20},
        {"sampler": "b", "m": 32, "lds_mean": 0.55, "lds_std": 0.02, "solve_seconds": 0.2, "peak_mb": 5},
        {"sampler": "b", "m": 64, "lds_mean": 0.59, "lds_std": 0.02, "solve_seconds": 0.9, "peak_mb": 8},
    ]
    assert [(r["sampler"], r["m"]) for r in best_within_budget(rows, "m", 64)] == [("a", 64), ("b", 64)]
    assert [(r["sampler"], r["m"]) for r in best_within_budget(rows, "solve_seconds", 0.25)] == [("b", 32), ("a", 32)]
    assert [(r["sampler"], r["m"]) for r in best_within_budget(rows, "peak_mb", 9)] == [("b", 64)]
    assert best_within_budget(rows, "m", 16) == []
    assert "treat them as tied" in budget_verdict(best_within_budget(rows, "m", 64), "m", 64)  # 0.01 <= std
    assert "tied" not in budget_verdict(best_within_budget(rows, "m", 32), "m", 32)  # 0.05 > 0.02
    with pytest.raises(ValueError, match="unknown budget"):
        best_within_budget(rows, "money", 1)
    study = load_study("digits_mlp")
    cost = pd.read_csv(ROOT / "docs/faithfulness/digits_mlp_summary.csv").set_index(["sampler", "m"])
    row = next(r for r in study.rows if r["sampler"] == "logit" and r["m"] == 128)
    assert row["solve_seconds"] == pytest.approx(cost.loc[("logit", 128), "solve_seconds_mean"])
    assert row["peak_mb"] == pytest.approx(cost.loc[("logit", 128), "peak_mb_mean"])


def test_faithfulness_cost_is_not_joined_from_another_configuration(tmp_path):
    import shutil

    from ui.faithfulness import load_study

    (tmp_path / "lds").mkdir()
    (tmp_path / "faithfulness").mkdir()
    shutil.copy(ROOT / "docs/lds/digits_mlp.json", tmp_path / "lds/digits_mlp.json")
    shutil.copy(ROOT / "docs/faithfulness/digits_mlp_summary.csv", tmp_path / "faithfulness/digits_mlp_summary.csv")
    meta = json.loads((ROOT / "docs/faithfulness/digits_mlp.json").read_text())
    meta["config"]["damping"] = 0.1
    (tmp_path / "faithfulness/digits_mlp.json").write_text(json.dumps(meta))
    study = load_study("digits_mlp", docs=tmp_path)
    assert not study.has_cost and "damping differs" in study.cost_note
    assert all(np.isnan(r["solve_seconds"]) for r in study.rows)


# ------------------------------------------------------------------------------------------------ class removal
def test_class_removal_shows_the_honest_f1_and_agreement_with_retraining(app_page):
    at = app_page("pages/3_Class_removal.py", timeout=300)
    ok(at.run())
    at.multiselect(key="rm_samplers").set_value(["feature"])
    at.slider(key="rm_seeds").set_value(1)
    at.button(key="rm_run").click()
    ok(at.run())
    assert not errors(at)
    records = at.session_state["rm_results"]["records"]
    summary = frames(at)[0]
    honest = summary.set_index("sampler")["honest F1"]
    for r in records:
        assert honest[r["sampler"]].startswith(f"{r['selected']['f1']:.3f}")
    agree = next(f for f in frames(at) if "agreement (honest)" in f.columns)
    np.testing.assert_allclose(
        agree["agreement (honest)"], [r["reference"]["report_agreement"]["selected_alpha"] for r in records]
    )


# ------------------------------------------------------------------------------------------------ lesson
def lesson_page(app_page, timeout: float = 300):
    """The lesson page inside the app's navigation (its page links need ``st.navigation``), like a student who
    opened the app and clicked "Lesson"."""
    at = app_page("app.py", timeout=timeout)
    ok(at.run())
    at.switch_page("pages/5_Lesson.py")
    return ok(at.run())


@pytest.fixture
def lesson(app_page):
    def at_step(key: str, timeout: float = 300):
        at = lesson_page(app_page, timeout)
        at.button(key=f"lesson_go_{key}").click()
        ok(at.run())
        assert not errors(at), errors(at)
        return at

    return at_step


def first_wrong(run):
    from ui.state import get_dataset, get_view

    view, data = get_view(run), get_dataset(run.data)
    wrong = np.flatnonzero(view.test_pred != data.y_test)
    return int(wrong[0]) if len(wrong) else 0


def test_lesson_starts_with_an_invitation(app_page):
    at = lesson_page(app_page)
    assert any("to start" in i.value for i in at.info) and len(at.button) == 6


def test_lesson_step_1_shows_the_helpful_and_harmful_neighbours(lesson, trained_fast_run):
    from influence_core import InfluenceCalculator, top_influences
    from ui.state import get_dataset, get_model

    at = lesson("score")
    t = first_wrong(trained_fast_run)
    data = get_dataset(trained_fast_run.data)
    calc = InfluenceCalculator(get_model(trained_fast_run), data.X_train, data.y_train)
    calc.fit(solver="exact", damping=0.01, curvature="gauss_newton")
    top = top_influences(calc.scores(data.X_test[t : t + 1], data.y_test[t : t + 1])[0], 5)
    captions = tile_captions(at)
    assert captions[0].startswith("true ")  # the test point, then 5 helpful, 5 harmful
    shown = [int(c.split("(")[0].replace("#", "").strip()) for c in captions[1:]]
    assert shown == [*top["helpful"].tolist(), *top["harmful"].tolist()]
    assert at.session_state["inf_mode"] == "by index" and at.session_state["inf_index"] == t
    assert "What to look at" in markdown(at) and "Exercise" in markdown(at)


def test_lesson_step_2_shows_five_seeds_of_a_random_sample(lesson, trained_fast_run):
    at = lesson("seeds")
    table = frames(at)[0]
    assert list(table["sampler"]) == ["random"] * 5 + ["importance"] * 5
    assert list(table["seed"]) == [0, 1, 2, 3, 4] * 2
    random_rows = table[table.sampler == "random"]
    assert random_rows["Spearman vs full data"].nunique() == 5  # five seeds, five different answers
    assert (table["Spearman vs full data"] < 1).all()
    # seed 3 recomputed with the public API: the random sample of 50, exact Gauss-Newton solve, damping 0.01
    from scipy.stats import spearmanr

    from influence_core import InfluenceCalculator, sample_hessian_subset
    from ui.state import get_dataset, get_model

    t = first_wrong(trained_fast_run)
    model, data = get_model(trained_fast_run), get_dataset(trained_fast_run.data)
    scores = {}
    for name, sample in (("full", None), ("seed 3", sample_hessian_subset(model, data, "random", 50, seed=3))):
        calc = InfluenceCalculator(model, data.X_train, data.y_train)
        calc.fit(sample, solver="exact", damping=0.01, curvature="gauss_newton")
        scores[name] = calc.scores(data.X_test[t : t + 1], data.y_test[t : t + 1])[0]
    expect = spearmanr(scores["seed 3"], scores["full"]).statistic
    assert random_rows["Spearman vs full data"].iloc[3] == pytest.approx(expect, abs=1e-6)
    assert at.session_state["inf_m"] == 50 and at.session_state["inf_spread"] is True


def test_lesson_step_3_draws_the_samples_on_the_map(lesson):
    from ui.lesson import LESSON_SAMPLERS

    at = lesson("map")
    titles = [s["layout"]["title"]["text"] for s in specs(at)]
    assert [t.split(" ")[0] for t in titles] == list(LESSON_SAMPLERS)
    gaps = frames(at)[0]
    assert list(gaps["sampler"]) == list(LESSON_SAMPLERS) and gaps["class TV distance"].between(0, 1).all()
    assert at.session_state["smp_samplers"] == list(LESSON_SAMPLERS) and at.session_state["smp_m"] == 50


def test_lesson_step_4_compares_class_removal_with_retraining(lesson, trained_fast_run):
    from ui.state import removal_run

    at = lesson("removal")
    forgetting, against = frames(at)[:2]  # two tables of few columns (readable at 1024 px), one row per sampler
    assert list(forgetting["sampler"]) == list(against["sampler"]) == ["random", "feature", "importance"]
    table = forgetting.merge(against, on="sampler")
    for _, row in table.iterrows():
        rec = removal_run(trained_fast_run, 3, row["sampler"], 100, 0, "cg", 0.01, True, False)  # cached
        assert row["honest F1"] == pytest.approx(rec["selected"]["f1"])
        assert row["agreement (chosen α)"] == pytest.approx(rec["reference"]["report_agreement"]["selected_alpha"])
    assert at.session_state["rm_class"] == 3 and at.session_state["rm_reference"] is True


def test_lesson_step_6_finds_flipped_labels_by_self_influence(lesson):
    at = lesson("mislabel")
    summary = frames(at)[0].set_index("ranking")
    assert summary.loc["self-influence", "found after 10%"] > 0.3  # random inspection: 0.10
    assert "Mislabel detection" in specs(at)[0]["layout"]["title"]["text"]
    assert len(tile_captions(at)) == 10
    assert at.session_state["exp_colour"] == "self-influence"


def test_lesson_step_sets_up_the_influence_page(app_page, trained_fast_run):
    """The state one click writes is what the Influence page then shows (same session, another page)."""
    at = lesson_page(app_page)
    at.button(key="lesson_go_score").click()
    ok(at.run())
    at.switch_page("pages/2_Influence.py")
    ok(at.run())
    t = first_wrong(trained_fast_run)
    assert at.radio(key="inf_mode").value == "by index"
    assert at.number_input(key="inf_index").value == t
    assert any(f"Test point #{t}" in m.value for m in at.markdown)


# ------------------------------------------------------------------------------------------------ explorer
def test_explorer_nearest_neighbours_of_a_training_point(app_page, trained_fast_run):
    from ui.state import get_view

    at = app_page("pages/6_Explorer.py")
    at.session_state["exp_index_kind"] = "train"
    at.session_state["exp_index"] = 5
    ok(at.run())
    assert not errors(at)
    table = frames(at)[0]
    F = get_view(trained_fast_run).inputs.features.astype(np.float64)
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    dist = 1 - Fn @ Fn[5]
    dist[5] = np.inf
    expect = np.argsort(dist, kind="stable")[:8]
    assert set(table["train index"]) == set(expect.tolist())
    np.testing.assert_allclose(np.sort(table["cosine distance"]), np.sort(dist[expect]), atol=1e-6)
    assert any("nearest neighbours" == t.get("name") for t in specs(at)[0]["data"])


def test_explorer_colours_by_self_influence_and_compares_slices(app_page, trained_fast_run):
    from influence_core import InfluenceCalculator
    from ui.state import get_dataset, get_model, get_sample

    data = get_dataset(trained_fast_run.data)
    at = app_page("pages/6_Explorer.py", timeout=300)
    at.session_state["exp_colour"] = "self-influence"
    ones = np.flatnonzero(data.y_train == 1)[:40].tolist()
    at.session_state["exp_slices"] = {"ones": ones, "first 60": list(range(60))}
    ok(at.run())
    assert not errors(at), errors(at)
    train_trace = specs(at)[0]["data"][0]
    calc = InfluenceCalculator(get_model(trained_fast_run), data.X_train, data.y_train)
    calc.fit(solver="exact", damping=0.01, curvature="gauss_newton")
    rows = [3, 300, 900]
    np.testing.assert_allclose(array(train_trace["marker"]["color"])[rows], calc.self_influence(rows), rtol=1e-5)
    table = frames(at)[-1]
    assert len(table) == 2 * 4  # 2 slices x (full data + 3 samplers)
    full = table[table.sampler == "full data"].set_index("slice")
    assert full.loc["ones", "in sample"] == 40 and full.loc["ones", "weight share"] == pytest.approx(40 / data.n_train)
    rnd = table[(table.sampler == "random") & (table.slice == "ones")].iloc[0]
    sample = np.asarray(get_sample(trained_fast_run, "random", 100, 0).indices)
    assert rnd["in sample"] == len(np.intersect1d(sample, ones))
    assert rnd["weight share"] == pytest.approx(rnd["in sample"] / 100)
    from scipy.special import softmax

    from ui.state import get_view

    p = softmax(get_view(trained_fast_run).inputs.logits.astype(np.float64), axis=1)
    c = 1 - (p * p).sum(1)  # Gauss-Newton curvature proxy, independently
    assert full.loc["ones", "curvature share (population)"] == pytest.approx(c[ones].sum() / c.sum(), rel=1e-4)
    assert rnd["curvature share (sample)"] == pytest.approx(
        c[np.intersect1d(sample, ones)].sum() / c[sample].sum(), rel=1e-4
    )
    mix = next(s for s in specs(at) if s["layout"]["title"]["text"] == "Class mix of the slices")
    ones_bar = next(t for t in mix["data"] if t["name"] == "ones")
    assert array(ones_bar["y"])[1] == pytest.approx(1.0)
    assert len(downloads(at)) >= 2


def test_explorer_slice_names_are_checked():
    from ui.explore import MAX_SLICES, clean_slice_name

    assert clean_slice_name("  thin   ones ", {}) == "thin ones"
    with pytest.raises(ValueError, match="name"):
        clean_slice_name("   ", {})
    full = {f"s{i}": [] for i in range(MAX_SLICES)}
    with pytest.raises(ValueError, match="at most"):
        clean_slice_name("new", full)
    assert clean_slice_name("s0", full) == "s0"  # replacing one is fine
