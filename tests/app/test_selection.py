"""Unit tests of the pure selection parser (ui/selection.py)."""

import numpy as np

from ui.selection import TEST, TRAIN, MapSelection, parse_selection


def event(points, box=(), lasso=()):
    return {"selection": {"points": list(points), "box": list(box), "lasso": list(lasso), "point_indices": []}}


def test_empty_inputs_give_empty_selection():
    for ev in (None, {}, {"selection": None}, {"selection": {}}, event([])):
        sel = parse_selection(ev)
        assert sel == MapSelection() and sel.empty and sel.clicked_test_row() is None


def test_box_selection_splits_train_and_test_rows_sorted_unique():
    ev = event(
        [
            {"customdata": [TRAIN, 7], "point_index": 0},
            {"customdata": [TRAIN, 3], "point_index": 5},
            {"customdata": [TEST, 2]},
            {"customdata": [TRAIN, 7]},
        ],
        box=[{"x": [0, 1], "y": [0, 1]}],
    )
    sel = parse_selection(ev)
    assert sel.train_rows == (3, 7) and sel.test_rows == (2,) and sel.region
    assert sel.clicked_test_row() is None  # a region is never a click


def test_lasso_counts_as_region_and_uses_customdata_not_point_index():
    ev = event([{"customdata": [0, 42], "point_index": 1, "curve_number": 3}], lasso=[{"x": [0], "y": [0]}])
    sel = parse_selection(ev)
    assert sel.train_rows == (42,) and sel.region


def test_single_click_on_a_test_point_is_a_pick():
    sel = parse_selection(event([{"customdata": [1, 11]}]))
    assert not sel.region and sel.clicked_test_row() == 11
    # a click on a training point is not a test pick
    assert parse_selection(event([{"customdata": [0, 11]}])).clicked_test_row() is None


def test_string_kinds_floats_and_numpy_values_are_accepted():
    ev = event(
        [
            {"customdata": ["train", 4.0]},
            {"customdata": np.array([1, 5])},
            {"customdata": ("TEST", "6")},
            {"customdata": [np.int64(0), np.int32(9)]},
        ],
        box=[{}],
    )
    sel = parse_selection(ev)
    assert sel.train_rows == (4, 9) and sel.test_rows == (5, 6)


def test_malformed_points_are_ignored():
    ev = event(
        [
            {"customdata": None},
            {"customdata": "0,1"},
            {"customdata": [0]},
            {"customdata": [2, 1]},
            {"customdata": [0, -1]},
            {"customdata": [0, 1.5]},
            {"customdata": [True, 1]},
            {},
            {"customdata": [0, "x"]},
            {"customdata": [1, 3]},
        ],
        box=[{}],
    )
    sel = parse_selection(ev)
    assert sel.train_rows == () and sel.test_rows == (3,)


def test_rows_outside_the_dataset_are_dropped():
    ev = event(
        [{"customdata": [0, 5]}, {"customdata": [0, 500]}, {"customdata": [1, 9]}, {"customdata": [1, 10]}], box=[{}]
    )
    sel = parse_selection(ev, n_train=100, n_test=10)
    assert sel.train_rows == (5,) and sel.test_rows == (9,)


def test_attribute_style_events_work():
    class Obj:  # streamlit returns attribute-accessible dicts; objects with attributes work too
        def __init__(self, **kw):
            self.__dict__.update(kw)

    ev = Obj(selection=Obj(points=[{"customdata": [0, 1]}], box=[{"x": [0, 1]}], lasso=[]))
    assert parse_selection(ev).train_rows == (1,)


def test_browser_shape_of_customdata_is_understood():
    # what Streamlit 1.67 + plotly.js actually deliver for a numeric (typed-array) customdata in a scattergl trace
    ev = event(
        [
            {
                "curve_number": 0,
                "point_number": 0,
                "point_index": 0,
                "x": 0.1,
                "y": -0.1,
                "customdata": {"0": 0, "1": 17},
            },
            {
                "curve_number": 2,
                "point_number": 5,
                "point_index": 5,
                "x": 0.6,
                "y": 0.1,
                "customdata": {"0": 1, "1": 4},
            },
        ],
        box=[{"x": [0, 1], "y": [0, 1]}],
    )
    sel = parse_selection(ev)
    assert sel.train_rows == (17,) and sel.test_rows == (4,)


# ------------------------------------------------------------------------------ browser gate (skip vs fail in CI)
def test_browser_gate_skips_without_chromium_and_fails_when_required(monkeypatch, tmp_path):
    import pytest
    from browser_gate import chromium_or_skip

    missing = str(tmp_path / "no-chromium")
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        chromium_or_skip(missing)
    monkeypatch.setenv("REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_BROWSER=1"):
        chromium_or_skip(missing)
    present = tmp_path / "chromium"
    present.write_text("")
    assert chromium_or_skip(str(present)) == str(present)


def test_maps_are_svg_below_the_webgl_threshold_and_webgl_above():
    import numpy as np

    from ui.figures import WEBGL_MIN_POINTS, influence_map, sample_map

    def types(fig):
        return {trace.type for trace in fig.data}

    def maps(n_train, n_test=10):
        rng = np.random.default_rng(0)
        xy, xt = rng.normal(size=(n_train, 2)), rng.normal(size=(n_test, 2))
        labels, conf = rng.integers(0, 3, n_train), rng.random(n_train)
        tl, tc = rng.integers(0, 3, n_test), rng.random(n_test)
        return (
            sample_map(xy, np.arange(5), "label", labels, labels, conf, "abc", "t"),
            influence_map(xy, xt, "label", labels, labels, conf, tl, tl, tc, "abc", 0, [1, 2], [3]),
        )

    for fig in maps(500):
        assert types(fig) == {"scatter"}
    for fig in maps(WEBGL_MIN_POINTS + 1):
        assert types(fig) == {"scattergl"}


def test_a_click_on_a_test_cross_over_a_training_dot_picks_the_cross():
    """Issue 23 item 5: plotly gives the click to the small training dot under a test cross; the cross is on top."""
    import numpy as np

    from ui.selection import MapSelection, prefer_drawn_on_top

    xy_train = np.array([[0.0, 0.0], [10.0, 10.0], [5.0, 5.0]])
    xy_test = np.array([[5.02, 5.0], [9.0, 1.0]])
    under = MapSelection(train_rows=(2,))
    assert prefer_drawn_on_top(under, xy_train, xy_test) == MapSelection(test_rows=(0,))
    alone = MapSelection(train_rows=(1,))
    assert prefer_drawn_on_top(alone, xy_train, xy_test) == alone  # no cross over it: stays a dot
    box = MapSelection(train_rows=(2,), region=True)
    assert prefer_drawn_on_top(box, xy_train, xy_test) == box  # regions select what they enclose
