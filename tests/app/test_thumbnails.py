"""Thumbnails and their captions. Tabular thumbnails a class can read (issue 23, item 6): MNIST-1D inputs (an ordered
40-point signal) are line charts of the raw signal with labelled axes, at most four to a row; other tabular data (the
wine data) are standardised bars, one figure a row. Image thumbnails are one HTML grid of lossless tiles with escaped
captions, and a score in a caption cannot wrap inside the number."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import numpy as np
import pytest
from apptest_helpers import errors, ok, specs, wine_page

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_thumbnail_kind_follows_the_data():
    from ui.figures import thumbnail_kind

    assert thumbnail_kind(SimpleNamespace(name="digits", image_shape=(8, 8))) == "image"
    assert thumbnail_kind(SimpleNamespace(name="mnist1d", image_shape=None)) == "signal"
    assert thumbnail_kind(SimpleNamespace(name="upload wine.npz", image_shape=None)) == "bars"


def test_signal_lines_draw_each_row_with_labelled_axes_on_one_scale():
    from ui.figures import signal_lines, signal_range

    rows = np.array([[0.0, 1.0, -2.0, 0.5], [3.0, 2.0, 1.0, 0.0]])
    fig = signal_lines(rows)
    assert [t.type for t in fig.data] == ["scatter", "scatter"] and [t.xaxis for t in fig.data] == ["x", "x2"]
    np.testing.assert_array_equal(fig.data[1].y, rows[1])
    np.testing.assert_array_equal(fig.data[0].x, np.arange(4))
    assert fig.layout.xaxis.title.text == "position" and fig.layout.yaxis.title.text == "value"
    assert fig.layout.xaxis.tickfont.size >= 11 and fig.layout.yaxis.tickfont.size >= 11  # readable on a projector
    lo, hi = fig.layout.yaxis.range
    assert lo < -2.0 and hi > 3.0 and (lo, hi) == pytest.approx(signal_range(rows))
    assert signal_range(np.full(3, 2.0)) == (1.0, 3.0)  # a flat signal still has a scale
    assert signal_lines(rows, y_range=(-5.0, 5.0)).layout.yaxis.range == (-5.0, 5.0)  # one scale for a whole list


@pytest.mark.slow
def test_influence_page_draws_mnist1d_inputs_as_raw_signals_four_to_a_row(app_page):
    from ui.config import DataConfig, ModelConfig, RunConfig
    from ui.figures import TABULAR_PER_ROW
    from ui.state import get_dataset

    run = RunConfig(
        data=DataConfig(name="mnist1d", num_samples=400), model=ModelConfig(hidden=8, epochs=1, polish_steps=2)
    )
    at = app_page("pages/2_Influence.py", run=run)
    ok(at.run())
    assert not at.error, [e.value for e in at.error]
    figures = [c.proto.spec for c in at.get("plotly_chart")]
    import json

    signals = [json.loads(f) for f in figures if '"position %{x}' in f]
    assert not any('"type":"bar"' in f.replace(" ", "") for f in figures if '"feature %{x}' in f)
    # the test point, then rows of 4 for the top 8 helpful and harmful of each tab
    assert len(signals) >= 1 + 2 * 2 and all(len(f["data"]) == TABULAR_PER_ROW for f in signals[1:5])
    dataset = get_dataset(run.data)
    shown = next(m.value for m in at.markdown if m.value.startswith("**Test point #"))
    t = int(shown.split("#")[1].split("*")[0])
    y = signals[0]["data"][0]["y"]
    if isinstance(y, dict):  # plotly's typed-array encoding
        import base64

        y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"]))
    np.testing.assert_allclose(y, dataset.inverse_transform(dataset.X_test[t : t + 1])[0], rtol=1e-6, atol=1e-6)
    ranges = {tuple(f["layout"]["yaxis"]["range"]) for f in signals[1:3]}
    assert len(ranges) == 1  # the two rows of one list share a scale


def values(array) -> np.ndarray:
    """A plotly spec array: a list, or plotly's typed-array encoding {"dtype": ..., "bdata": base64}."""
    import base64

    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array, dtype=float)


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
