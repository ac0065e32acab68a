"""Tabular thumbnails a class can read (issue 23, item 6): MNIST-1D inputs (an ordered 40-point signal) are line
charts of the raw signal with labelled axes, at most four to a row; other tabular data stay standardised bars."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from apptest_helpers import ok

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
