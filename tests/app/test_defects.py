"""AppTest and unit tests of the defects a new user hit (issue 14) and of the app side of the hostile-input issue:
every test here failed, or could not run, on the code before the fix."""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from apptest_helpers import errors, ok

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def specs(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def values(array) -> np.ndarray:
    """A plotly spec array: a list, or plotly's typed-array encoding {"dtype": ..., "bdata": base64}."""
    import base64

    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array, dtype=float)


def progress_bars(at):
    return at.get("progress")


# ------------------------------------------------------------------------------------------ 1: cache replay crash
def run_removal(at):
    at.multiselect(key="rm_samplers").set_value(["logit"])
    at.slider(key="rm_seeds").set_value(1)
    at.button(key="rm_run").click()
    return ok(at.run())


def test_removal_pressed_twice_with_the_same_settings_shows_results(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    run_removal(at)
    first = at.session_state["rm_results"]["records"]
    at.button(key="rm_run").click()  # the same settings again: a cache hit (crashed with CacheReplayClosureError)
    ok(at.run())
    assert not errors(at)
    again = at.session_state["rm_results"]["records"]
    assert [r["sampler"] for r in again] == ["random", "logit"]
    assert [r["best"]["f1"] for r in again] == [r["best"]["f1"] for r in first]
    assert any(m.label == "Reference F1" for m in at.metric) and not progress_bars(at)


def test_removal_same_settings_from_two_sessions(app_page):
    """Two AppTest sessions in one process share the app's caches, as two browser sessions on one server do."""
    one = ok(app_page("pages/3_Class_removal.py").run())
    two = ok(app_page("pages/3_Class_removal.py").run())
    run_removal(one)
    run_removal(two)  # the second session hits what the first computed
    for at in (one, two):
        assert not errors(at)
        assert list(at.dataframe[0].value.sampler) == ["random", "logit"]
    assert one.session_state["rm_results"]["records"] == two.session_state["rm_results"]["records"]


def test_removal_records_are_copies_of_the_shared_cache(trained_fast_run):
    from ui.state import removal_run

    args = (trained_fast_run, 1, "random", 30, 0, "cg", 0.01, False, False)
    calls = []
    first = removal_run(*args, progress=lambda f, msg: calls.append(f))
    first["best"]["f1"] = -1.0  # a caller mutating its record must not change what another session gets
    second = removal_run(*args, progress=lambda f, msg: calls.append("hit"))
    assert second["best"]["f1"] >= 0 and "hit" not in calls  # a hit never calls the (element-updating) callback


# ------------------------------------------------------------------------------------------ 2: model eviction
def fake_model(seconds):
    return SimpleNamespace(training_report={"seconds": seconds})


def test_evict_one_drops_the_cheapest_model_not_the_oldest():
    from collections import OrderedDict

    from ui.state import evict_one

    models = OrderedDict(
        [
            ("cnn mnist5k", fake_model(367.0)),
            ("mlp digits", fake_model(2.0)),
            ("logreg digits", fake_model(0.5)),
            ("new", fake_model(0.1)),
        ]
    )
    assert evict_one(models, keep="new") == "logreg digits"  # not the 367 s CNN (oldest), not the new one
    assert evict_one(models, keep="new") == "mlp digits"
    assert list(models) == ["cnn mnist5k", "new"]
    models["a"], models["b"] = fake_model(5.0), fake_model(5.0)
    assert evict_one(models, keep="new") == "a"  # equal cost: the least recently used goes first


def test_home_lists_the_kept_models(app_page, fast_run):
    at = ok(app_page("app.py").run())
    captions = [c.value for c in at.caption if c.value.startswith("Models kept in memory")]
    assert captions and "quickest to retrain is dropped first" in captions[0]
    assert "mlp on digits" in captions[0] and "s to train" in captions[0]


# ------------------------------------------------------------------------------------------ 3, 5, 7: colours
def test_state_colours_are_not_class_colours():
    from ui import colours

    state = {colours.GOOD, colours.BAD, colours.NOT_IN_SAMPLE, colours.CHOSEN, colours.POPULATION}
    assert not state & set(colours.CLASS_PALETTE)
    for c in colours.CLASS_PALETTE:  # no grey in the class palette (grey means "not in the sample")
        r, g, b = (int(c[i : i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) > 40, c


def test_influence_map_markers_use_state_colours_and_symbols(app_page):
    from ui import colours

    at = ok(app_page("pages/2_Influence.py").run())
    fig = next(
        f
        for f in specs(at)
        if "Map" in str(f["layout"].get("title", ""))
        or any(t.get("name", "").startswith("test correct") for t in f["data"])
    )
    traces = {t["name"]: t for t in fig["data"]}
    class_traces = [t for name, t in traces.items() if name.startswith("train ")]
    assert class_traces and all(t["marker"]["color"] in colours.CLASS_PALETTE for t in class_traces)
    assert traces["test correct"]["marker"]["color"] == colours.GOOD
    assert traces["test correct"]["marker"]["symbol"] != traces["test wrong"]["marker"]["symbol"]
    assert traces["top helpful (sampler A)"]["marker"]["color"] == colours.GOOD
    assert traces["top harmful (sampler A)"]["marker"]["color"] == colours.BAD
    assert fig["layout"]["legend"]["orientation"] == "h"  # below the plot: no room taken from a colour bar

    at.selectbox(key="inf_colour").set_value("confidence")
    ok(at.run())
    fig = next(f for f in specs(at) if any(t.get("name") == "test correct" for t in f["data"]))
    bar = next(t["marker"]["colorbar"] for t in fig["data"] if "colorbar" in t.get("marker", {}))
    assert fig["layout"]["legend"]["orientation"] == "h" and fig["layout"]["legend"]["y"] < 0 <= bar.get("x", 1)


def test_sampler_colours_are_fixed_across_charts_and_selection_order(app_page):
    from ui.colours import sampler_colour

    at = ok(app_page("pages/3_Class_removal.py").run())
    at.multiselect(key="rm_samplers").set_value(["logit", "feature"])
    at.slider(key="rm_seeds").set_value(1)
    at.button(key="rm_run").click()
    ok(at.run())
    path, classes = specs(at)[:2]
    path_colours = {t["name"]: t["line"]["color"] for t in path["data"]}
    class_colours = {t["name"].split(" (")[0]: t["marker"]["color"] for t in classes["data"]}
    for name in ("random", "logit", "feature"):
        assert path_colours[name] == class_colours[name] == sampler_colour(name)
    assert len(set(path_colours.values())) == 3
    # the per-class chart keeps a tick per class with the legend below; the α = 1 label sits at log10(1) = 0
    assert classes["layout"]["legend"]["orientation"] == "h" and len(classes["layout"]["xaxis"]["tickvals"]) == 10
    label = next(a for a in path["layout"]["annotations"] if a["text"] == "α = 1")
    assert path["layout"]["xaxis"]["type"] == "log" and label["x"] == 0

    from ui.figures import distribution_figures

    labels = np.array([0, 1, 0, 1])
    f1, _ = distribution_figures(labels, np.full(4, 0.5), {"logit": [0, 1], "random": [2, 3]}, ["a", "b"])
    g1, _ = distribution_figures(labels, np.full(4, 0.5), {"random": [2, 3], "logit": [0, 1]}, ["a", "b"])
    colour = [{t.name: t.marker.color for t in fig.data} for fig in (f1, g1)]
    assert colour[0]["logit"] == colour[1]["logit"] == sampler_colour("logit")


# ------------------------------------------------------------------------------------------ 6: captions, tabular
def test_score_text_cannot_wrap_inside_the_number():
    from ui.figures import score_text

    text = score_text(0.3141)
    assert text == "+3.1e\u201101" and "-" not in score_text(-0.02) and " " not in text


def test_gallery_is_one_grid_of_escaped_captions_and_lossless_tiles():
    """One HTML element for all thumbnails: a tile per caption, captions escaped, each tile's PNG decodes to its
    pixels (8-bit), and a count mismatch is refused."""
    import base64
    import io

    from PIL import Image

    from ui.figures import GALLERY_CLASS, gallery_html, normalised_tile

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 17, size=(3, 64)).astype(float)
    tiles = [normalised_tile(row, (8, 8)) for row in raw]
    assert all(t.min() == 0 and t.max() == 1 for t in tiles)
    page = gallery_html(tiles, ["#1 <b>", "#2 & more", "#3"], per_row=2)
    assert page.count(f'class="{GALLERY_CLASS}"') == 1 and page.count('class="ie-tile"') == 3
    assert "repeat(2," in page and "<b>" not in page and "&lt;b&gt;" in page and "&amp; more" in page
    for tile, uri in zip(tiles, re.findall(r'src="data:image/png;base64,([^"]+)"', page)):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))), dtype=float)
        assert pixels.shape == (8, 8) and np.abs(pixels - tile * 255).max() <= 0.5
    with pytest.raises(ValueError, match="one caption per tile"):
        gallery_html(tiles, ["only one"])


def test_feature_bars_is_one_figure_with_a_panel_per_row_on_a_shared_z_axis():
    from ui.figures import feature_bars

    rows = np.array([[0.5, -1.0, 2.0], [4.0, 0.0, -0.5]])
    fig = feature_bars(rows, ["a", "b", "c"])
    assert len(fig.data) == 2 and [t.xaxis for t in fig.data] == ["x", "x2"]
    assert np.allclose(fig.data[1].y, rows[1]) and list(fig.data[0].x) == ["a", "b", "c"]
    assert fig.layout.yaxis.range == (-4.0, 4.0) and fig.layout.yaxis.title.text == "z"
    assert fig.data[0].marker.color[1] != fig.data[0].marker.color[0]  # negative bars in the other colour
    assert len(feature_bars(rows[0]).data) == 1  # one row, one panel


@pytest.fixture(scope="module")
def wine_run():
    """The real wine data (178 points, 13 features of very different scales) uploaded as a .npz."""
    import io

    from sklearn.datasets import load_wine

    from ui.config import DataConfig, ModelConfig, RunConfig

    w = load_wine()
    buf = io.BytesIO()
    np.savez(buf, X_train=w.data, y_train=w.target)
    payload = buf.getvalue()
    import hashlib

    digest = hashlib.sha256(payload).hexdigest()
    run = RunConfig(
        data=DataConfig(name="npz", npz_digest=digest, npz_filename="wine.npz"),
        model=ModelConfig(hidden=8, epochs=20, polish_steps=20),
    )
    return run, {digest: payload}


def wine_page(app_page, wine_run, path):
    run, payloads = wine_run
    at = app_page(path, run=run)
    at.session_state["npz_payloads"] = payloads
    return ok(at.run())


def test_tabular_thumbnails_are_standardised_with_labelled_axes_and_full_captions(app_page, wine_run):
    from ui.state import get_dataset

    at = wine_page(app_page, wine_run, "pages/2_Influence.py")
    assert not errors(at)
    from ui.figures import TABULAR_PER_ROW

    bars = [f for f in specs(at) if f["data"] and f["data"][0].get("type") == "bar"]
    # one figure per row of thumbnails (the test point, then rows of 4 per list of 8, readable at 1024 px): one panel,
    # one bar trace, per input
    assert TABULAR_PER_ROW == 4 and len(bars) >= 1 + 2 and all(len(f["data"]) == 4 for f in bars[1:3])
    assert all(trace["type"] == "bar" for f in bars for trace in f["data"])
    dataset = get_dataset(wine_run[0].data)
    test_bar = bars[0]
    # standardised values (z-scores, as the model sees them), not the raw scale (proline is ~1000)
    assert np.allclose(values(test_bar["data"][0]["y"]), dataset.X_test[0], atol=1e-5)
    assert test_bar["layout"]["xaxis"]["title"]["text"] == "feature" and test_bar["layout"]["yaxis"]["title"]["text"]
    assert "title" not in test_bar["layout"] or not test_bar["layout"]["title"].get("text")
    # the captions, in a grid under each figure: whole scores, unescaped only where they are plain text
    cells = [html.unescape(c) for h in at.get("html") for c in re.findall(r">([^<>]*)</div>", h.proto.body)]
    score_captions = [c for c in cells if re.search(r"[+\u2011]\d\.\de", c)]
    assert len(score_captions) >= 2 * 8 and all(
        re.search(r"[+-]\d\.\de[+-]\d\d$", c.replace("\u2011", "-")) for c in score_captions
    )


# ------------------------------------------------------------------------------------------ 11: m and the pool
def test_removal_default_m_fits_a_small_pool_and_a_larger_one_is_said(app_page, wine_run):
    """The default m is the whole pool when it is below 100; an m outside another class's pool stays in its box
    with the allowed range under it (issue 23: never silently replaced), and nothing runs until it is fixed."""
    from ui.state import get_dataset

    at = wine_page(app_page, wine_run, "pages/3_Class_removal.py")
    dataset = get_dataset(wine_run[0].data)
    pool = int(np.sum(dataset.y_train != 0))
    assert pool < 100
    widget = at.number_input(key="rm_m")
    assert widget.value == pool and f"1 to {pool}" in widget.help
    at.selectbox(key="rm_class").set_value(1)  # another class: another pool
    ok(at.run())
    pool1 = int(np.sum(dataset.y_train != 1))
    assert at.number_input(key="rm_m").value == pool
    if pool > pool1:
        assert any(f"1 to {pool1}" in e.value and f"you typed {pool}" in e.value for e in at.error)
        at.number_input(key="rm_m").set_value(pool1)
        ok(at.run())
    at.slider(key="rm_seeds").set_value(1)
    at.multiselect(key="rm_samplers").set_value([])
    at.button(key="rm_run").click()
    ok(at.run())
    assert not errors(at) and at.session_state["rm_results"]["records"][0]["m"] == min(pool, pool1)


# ------------------------------------------------------------------------------------------ 8 + issue 13: any error
def test_any_engine_exception_is_shown_the_bar_removed_and_results_kept(app_page, failing_sampler):
    at = ok(app_page("pages/3_Class_removal.py").run())
    run_removal(at)
    kept = at.session_state["rm_results"]
    for kind in (MemoryError, TypeError, KeyError):
        failing_sampler["kind"] = kind
        at.multiselect(key="rm_samplers").set_value(["exploding"])
        at.button(key="rm_run").click()
        ok(at.run())  # no raw traceback
        assert any(e.startswith("Class removal failed:") for e in errors(at)), errors(at)
        assert not progress_bars(at)  # the bar is gone after the failure
        assert at.session_state["rm_results"] is kept  # the previous results stay
        assert list(at.dataframe[0].value.sampler) == ["random", "logit"]
    assert any("ran out of memory" in e for e in errors(at)) or any("KeyError" in e for e in errors(at))


@pytest.mark.parametrize("page", ["pages/1_Samplers.py", "pages/2_Influence.py"])
def test_samplers_and_influence_pages_survive_any_engine_exception(app_page, failing_sampler, page):
    failing_sampler["kind"] = TypeError
    at = app_page(page)
    at.session_state["smp_samplers"] = ["random", "exploding"]
    at.session_state["inf_a"] = "exploding"
    ok(at.run())
    assert any("unexpected TypeError" in e and "simulated failure" in e for e in errors(at)), errors(at)


def test_readable_names_the_problem_for_every_exception_type():
    from ui.errors import readable

    assert readable(ValueError("m = 5 is too large")) == "m = 5 is too large"
    assert "ran out of memory" in readable(MemoryError())
    assert "unexpected TypeError: bad" in readable(TypeError("bad"))


def test_training_failure_leaves_no_progress_bar_and_keeps_the_model(app_page):
    import io

    import numpy as np

    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")  # MNIST-1D no longer offers the CNN; a tabular upload does
    ok(at.run())
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, X_train=rng.normal(size=(60, 5)), y_train=np.arange(60) % 3)
    at.file_uploader(key="form_upload").upload("tabular.npz", buf.getvalue())
    at.selectbox(key="form_arch").set_value("cnn")  # tabular: the CNN refuses it
    at.button[0].click()
    ok(at.run())
    assert any(e.startswith("Could not train with these settings") for e in errors(at)), errors(at)
    assert not progress_bars(at)
    assert "mlp on digits" in at.subheader[-1].value


# ------------------------------------------------------------------------------------------ 10 + 13: uploads
def test_upload_over_the_limit_names_the_limit(app_page):
    at = ok(app_page("app.py").run())
    assert not at.get("file_uploader")  # digits chosen: no upload box
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    assert "25 MB" in at.get("file_uploader")[0].proto.label
    at.file_uploader(key="form_upload").upload("big.npz", b"\0" * (26 * 1024 * 1024))
    at.button[0].click()
    ok(at.run())
    assert any("over the 25 MB upload limit" in e and "27.3 MB" in e for e in errors(at)), errors(at)
    assert "mlp on digits" in at.subheader[-1].value


def test_config_toml_bounds_uploads_and_turns_off_deploy_stats_and_watcher():
    from pathlib import Path

    import tomllib

    from influence_core.data.datasets import MAX_NPZ_BYTES

    cfg = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] * 1024 * 1024 <= MAX_NPZ_BYTES
    assert cfg["server"]["fileWatcherType"] == "none" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False and cfg["client"]["toolbarMode"] == "minimal"


def test_session_keeps_at_most_the_current_and_the_latest_upload(app_page):
    import io

    from sklearn.datasets import load_digits

    d = load_digits()
    payloads = []
    for n in (300, 310, 320):
        buf = io.BytesIO()
        np.savez(buf, X_train=d.images[:n], y_train=d.target[:n])
        payloads.append(buf.getvalue())
    at = ok(app_page("app.py").run())
    at.selectbox(key="form_dataset").set_value("npz")
    at.run()  # the uploader is drawn only once "upload a .npz file" is chosen
    at.number_input(key="form_epochs").set_value(2)
    at.number_input(key="form_hidden").set_value(8)
    for i, payload in enumerate(payloads):
        at.file_uploader(key="form_upload").upload(f"d{i}.npz", payload)
        at.button[0].click()
        ok(at.run())
        assert not errors(at)
        assert len(at.session_state["npz_payloads"]) == 1  # only the current model's upload
    at.file_uploader(key="form_upload").upload("broken.npz", b"not a zip")
    at.button[0].click()
    ok(at.run())
    assert len(at.session_state["npz_payloads"]) == 2  # the current one survives a failed upload
    assert "upload d2.npz" in at.subheader[-1].value


# ------------------------------------------------------------------------------------------ 12: MNIST-1D
def test_mnist1d_low_accuracy_shows_the_hint_and_the_suggested_settings(app_page):
    from ui.config import MNIST1D_SUGGESTED, DataConfig, ModelConfig, RunConfig

    weak = RunConfig(data=DataConfig(name="mnist1d", num_samples=200), model=ModelConfig(epochs=2, polish_steps=5))
    at = ok(app_page("app.py", run=weak).run())
    at.button[0].click()  # train the weak model
    ok(at.run())
    assert any("MNIST-1D is built to be hard" in w.value for w in at.warning)
    assert at.button(key="mnist1d_suggested").label == "Train the suggested MNIST-1D model"
    assert MNIST1D_SUGGESTED.data.num_samples >= 5000 and MNIST1D_SUGGESTED.model.hidden >= 64


# ------------------------------------------------------------------------------------------ small
def test_formula_is_rendered_as_math(app_page):
    at = ok(app_page("pages/3_Class_removal.py").run())
    text = " ".join(m.value for m in at.markdown)
    assert "Σ_{j in c}" not in text and r"\sum_{j \in c}" in text and "$" in text
    assert at.toggle(key="rm_memory").label == "Peak memory"


def test_influence_caption_says_when_the_scores_come_from_the_cache(app_page):
    at = ok(app_page("pages/2_Influence.py").run())
    at.number_input(key="inf_seed").set_value(11)  # a spec nobody computed yet
    ok(at.run())
    assert any("computed just now" in c.value for c in at.caption)
    at.slider(key="inf_k").set_value(5)  # the same scores again: a cache hit
    ok(at.run())
    assert any("loaded from the cache" in c.value and "the first time" in c.value for c in at.caption)
    assert not any("0 iterations" in c.value for c in at.caption)  # a direct solve says so


def test_choice_is_kept_in_the_url_and_read_back(app_page):
    from ui.config import ModelConfig, RunConfig, run_from_query, run_to_query

    at = app_page("app.py")
    del at.session_state["run_config"]
    at.query_params["data"] = "digits"
    at.query_params["model"] = "logreg"
    at.query_params["epochs"] = "nonsense"  # a malformed value falls back to the default
    ok(at.run())
    run = at.session_state["run_config"]
    assert run.model.arch == "logreg" and run.model.epochs == ModelConfig().epochs
    at.selectbox(key="form_arch").set_value("mlp")
    at.run()  # the hidden width is shown for the MLP only
    at.number_input(key="form_hidden").set_value(8)
    at.number_input(key="form_epochs").set_value(3)
    at.button[0].click()
    ok(at.run())
    assert at.query_params["model"] in ("mlp", ["mlp"]) and at.query_params["hidden"] in ("8", ["8"])
    trained = RunConfig(model=ModelConfig(hidden=8, epochs=3))
    assert run_from_query(run_to_query(trained)) == trained


def test_sidebar_names_the_home_page():
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "app.py").read_text()
    assert 'st.Page("pages/0_Home.py", title="Home"' in source and "st.navigation(" in source


def test_make_app_is_satisfied_by_make_test():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    rule = re.search(r"^\$\(VENV\)/\.test: (.*)$", makefile, re.M).group(1)
    assert "$(VENV)/.app" in rule  # .test builds on .app, so `make app` after `make test` does nothing new


def test_the_cnn_trains_with_its_bounded_workshop_recipe_and_the_others_polish_to_the_tolerance():
    from ui.config import CNN_RECIPE, POLISH_STEPS, ModelConfig

    cnn = ModelConfig(arch="cnn").train_kwargs()
    assert cnn["lr_schedule"] == "cosine" and cnn["batch_size"] == 128
    assert cnn["polish_steps"] == cnn["max_polish_steps"] == CNN_RECIPE["polish_steps"]  # no float64 extension
    mlp = ModelConfig().train_kwargs()
    assert mlp["polish_steps"] == POLISH_STEPS and "max_polish_steps" not in mlp and "lr_schedule" not in mlp
    assert ModelConfig(polish_steps=7).train_kwargs()["polish_steps"] == 7
    assert ModelConfig(arch="cnn", polish_steps=3).train_kwargs()["polish_steps"] == 3


def test_a_changed_recipe_never_reuses_a_cached_model(monkeypatch):
    """The disk cache keys a model by the settings it was trained with, recipe included: a CNN cached under the
    old recipe is not served after ``CNN_RECIPE`` changes (the key held only the ModelConfig fields before)."""
    from ui import config
    from ui.config import ModelConfig, RunConfig

    run = RunConfig(model=ModelConfig(arch="cnn"))
    before = run.cache_key()
    assert before["train_kwargs"]["polish_steps"] == config.CNN_RECIPE["polish_steps"]
    monkeypatch.setattr(config, "CNN_RECIPE", {**config.CNN_RECIPE, "polish_steps": 1, "max_polish_steps": 1})
    assert run.cache_key() != before and run.to_dict() == RunConfig(model=ModelConfig(arch="cnn")).to_dict()
    assert RunConfig().cache_key()["train_kwargs"] == ModelConfig().train_kwargs()  # the MLP: unchanged


def test_home_says_whether_the_model_is_stationary(app_page, trained_fast_run):
    from ui.state import get_model

    report = get_model(trained_fast_run).training_report
    at = ok(app_page("app.py").run())
    captions = " ".join(c.value for c in at.caption)
    expected = "Stationary:" if report["grad_tol_reached"] else "Gradient norm of the full training objective"
    assert expected in captions and f"{report['grad_norm']:.1e}" in captions
