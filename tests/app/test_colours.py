"""Colours and markers (ui/colours.py): state colours (good, bad, not in the sample, chosen) are never class colours,
the influence map's markers use them with distinct symbols, and each sampler keeps one colour in every chart whatever
the order it was chosen in."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import ok, specs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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
