"""AppTest tests of every page on the default digits data with a small, fast (real) training configuration:
each page runs without exceptions, its main widgets change what is shown, and bad input shows an error element."""

from __future__ import annotations

import io

import numpy as np
import pytest
from apptest_helpers import errors, ok, tile_captions

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def charts(at):
    return at.get("plotly_chart")


def chart_specs(at):
    return [c.proto.spec for c in charts(at)]


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------- home
def test_home_trains_and_shows_accuracy_confusion_and_examples(app_page, fast_run):
    from ui.config import ModelConfig, RunConfig

    untrained = RunConfig(model=ModelConfig(hidden=8, epochs=2, polish_steps=7))
    at = ok(app_page("app.py", run=untrained).run())
    assert any("Press **Train**" in i.value for i in at.info) and not at.metric
    at.number_input(key="form_epochs").set_value(3)
    at.number_input(key="form_hidden").set_value(8)
    at.button[0].click()  # the form's Train button
    ok(at.run())
    assert not errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test accuracy"].endswith("%") and float(metrics["Test accuracy"][:-1]) > 50
    assert metrics["Training points"] == "1,437"
    assert any('"Heatmap"' in s or '"heatmap"' in s for s in chart_specs(at))  # confusion matrix
    assert len(tile_captions(at)) == 20  # two example inputs per class
    assert "mlp on digits" in at.subheader[-1].value


def test_home_form_trains_another_model(app_page):
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_arch").set_value("logreg")
    at.button[0].click()
    ok(at.run())
    assert at.session_state["run_config"].model.arch == "logreg"
    assert "logreg on digits" in at.subheader[-1].value
    assert {m.label: m.value for m in at.metric}["Parameters"] == "650"


def test_home_malformed_upload_shows_error_and_keeps_previous_model(app_page):
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    at.file_uploader(key="form_upload").upload("broken.npz", b"this is not a zip file")
    at.button[0].click()
    ok(at.run())
    assert any("not a readable .npz" in e for e in errors(at)), errors(at)
    assert "mlp on digits" in at.subheader[-1].value  # the app keeps running on the previous model


def test_home_refuses_object_arrays_without_unpickling(app_page):
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    payload = npz_bytes(X_train=np.array([{"a": 1}, None], dtype=object), y_train=np.array([0, 1]))
    at.file_uploader(key="form_upload").upload("pickled.npz", payload)
    at.button[0].click()
    ok(at.run())
    assert any("object arrays" in e for e in errors(at)), errors(at)


def test_home_npz_without_file_shows_error(app_page):
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    at.button[0].click()
    ok(at.run())
    assert any("no .npz file arrived" in e and "over the 25 MB upload limit" in e for e in errors(at)), errors(at)


def test_home_valid_upload_trains_on_it(app_page):
    from sklearn.datasets import load_digits

    d = load_digits()
    payload = npz_bytes(X_train=d.images[:600], y_train=d.target[:600])  # real digits, (n, 8, 8) images
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    at.file_uploader(key="form_upload").upload("digits600.npz", payload)
    at.button[0].click()
    ok(at.run())
    assert not errors(at)
    assert "upload digits600.npz" in at.subheader[-1].value
    assert {m.label: m.value for m in at.metric}["Training points"] == "480"


# ------------------------------------------------------------------------------------------------------- samplers
def test_samplers_page_maps_and_distributions(app_page):
    at = ok(app_page("pages/1_Samplers.py").run())
    assert not errors(at)
    assert len(charts(at)) == 5  # 3 maps + class shares + confidence (samples vs population)
    # digits (1,797 points): SVG maps, much cheaper than WebGL to redraw without a GPU (ui.figures.WEBGL_MIN_POINTS)
    assert all('"scatter"' in s and '"scattergl"' not in s for s in chart_specs(at)[:3])
    table = at.dataframe[0].value
    assert list(table.sampler) == ["random", "feature", "logit"] and (table.m == 100).all()

    before = chart_specs(at)[0]
    at.number_input(key="smp_seed").set_value(3)
    ok(at.run())
    moved = at.dataframe[0].value
    assert (moved.seed == 3).all() and chart_specs(at)[0] != before  # random's sample moved

    at.selectbox(key="smp_colour").set_value("confidence")
    ok(at.run())
    assert '"colorscale"' in chart_specs(at)[0]

    at.multiselect(key="smp_samplers").set_value(["random", "importance"])
    ok(at.run())
    assert len(charts(at)) == 4 and list(at.dataframe[0].value.sampler) == ["random", "importance"]

    at.toggle(key="smp_seeds_on").set_value(True)
    ok(at.run())
    per_seed = at.dataframe[-1].value
    assert len(per_seed) == 2 * 5 and set(per_seed.sampler) == {"random", "importance"}
    assert (per_seed.loc[per_seed.seed == 0, "overlap with seed 0"] == 1).all()


def test_samplers_page_m_is_bounded_by_the_training_set(app_page):
    at = ok(app_page("pages/1_Samplers.py").run())
    widget = at.number_input(key="smp_m")
    assert widget.value == 100 and "1 to 1437" in widget.help
    widget.set_value(1438)  # out of range: kept in the box, the range said under it, nothing drawn with it
    ok(at.run())
    assert at.number_input(key="smp_m").value == 1438
    assert any("1 to 1437" in e.value and "you typed 1438" in e.value for e in at.error)
    assert not at.get("plotly_chart")


# ------------------------------------------------------------------------------------------------------- influence
def test_influence_page_thumbnails_comparison_and_test_point(app_page):
    at = ok(app_page("pages/2_Influence.py").run())
    assert not errors(at)
    k = 8
    assert len(tile_captions(at)) == 1 + 3 * 2 * k  # test point + helpful/harmful for A, B and full data
    comparison = at.dataframe[0].value
    assert len(comparison) == 3 and comparison["Spearman"].between(-1, 1).all()
    first_scores = at.dataframe[0].value["Spearman"].tolist()

    at.radio(key="inf_mode").set_value("by index")
    ok(at.run())
    at.number_input(key="inf_index").set_value(7)
    ok(at.run())
    assert any("Test point #7" in m.value for m in at.markdown)
    assert at.dataframe[0].value["Spearman"].tolist() != first_scores  # another test point, other scores

    at.radio(key="inf_mode").set_value("misclassified")
    ok(at.run())
    assert not errors(at)

    at.slider(key="inf_k").set_value(4)
    ok(at.run())
    assert len(tile_captions(at)) == 1 + 3 * 2 * 4


def test_influence_page_box_selection_gives_linked_table_and_csv(app_page):
    at = app_page("pages/2_Influence.py")
    at.session_state["inf_map"] = {
        "selection": {
            "points": [{"customdata": [0, 3]}, {"customdata": [0, 10]}, {"customdata": [1, 2]}],
            "box": [{"x": [0, 1], "y": [0, 1]}],
            "lasso": [],
            "point_indices": [],
        }
    }
    ok(at.run())
    tables = [d.value for d in at.dataframe if "train index" in d.value.columns]
    assert len(tables) == 1
    table = tables[0]
    assert sorted(table["train index"]) == [3, 10]
    assert {"score A: logit", "score B: random", "score full data"} <= set(table.columns)
    assert at.download_button(key="inf_csv").label.startswith("Download")


def test_influence_page_click_on_test_point_picks_it(app_page):
    at = app_page("pages/2_Influence.py")
    at.session_state["inf_map"] = {"selection": {"points": [{"customdata": [1, 12]}], "box": [], "lasso": []}}
    ok(at.run())
    assert any("Test point #12" in m.value for m in at.markdown)


def test_influence_page_cg_shows_convergence_trace(app_page):
    at = ok(app_page("pages/2_Influence.py").run())
    at.selectbox(key="inf_solver").set_value("cg")
    ok(at.run())
    assert any("relative residual" in s for s in chart_specs(at))


# ------------------------------------------------------------------------------------------------------- removal
def test_removal_page_runs_and_offers_downloads(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    assert any("Run class removal" in i.value for i in at.info)
    at.multiselect(key="rm_samplers").set_value(["logit"])
    at.slider(key="rm_seeds").set_value(1)
    at.button(key="rm_run").click()
    ok(at.run())
    assert not errors(at)
    summary = at.dataframe[0].value
    assert list(summary.sampler) == ["random", "logit"]
    assert any("F1 along the" in s for s in chart_specs(at))
    assert any(m.label == "Reference F1" for m in at.metric)
    assert at.download_button(key="rm_csv") and at.download_button(key="rm_json")
    records = at.session_state["rm_results"]["records"]
    assert [r["sampler"] for r in records] == ["random", "logit"]
    assert all(0 <= r["best"]["f1"] <= 1 and r["best"]["f1"] >= r["at_one"]["f1"] - 1e-12 for r in records)

    at.selectbox(key="rm_class").set_value(3)
    ok(at.run())
    assert at.warning and "settings changed" in at.warning[0].value


def test_removal_page_m_is_bounded_by_the_pool(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    widget = at.number_input(key="rm_m")
    pool = 1295  # digits training points outside class 0 (1437 - 142)
    assert f"1 to {pool}" in widget.help
    widget.set_value(pool + 1)
    ok(at.run())
    assert any(f"1 to {pool}" in e.value for e in at.error)
