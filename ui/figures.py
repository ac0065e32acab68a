"""Plotly figure builders and display helpers for the pages (no Streamlit import, no influence maths).

Maps draw SVG markers (``go.Scatter``) up to ``WEBGL_MIN_POINTS`` points and WebGL (``go.Scattergl``) above
(:func:`scatter_trace`), and put ``customdata = [kind, row]`` on every point (see :mod:`ui.selection`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .colours import (
    BAD,
    CHOSEN,
    CONFIDENCE_SCALE,
    GOOD,
    NOT_IN_SAMPLE,
    POPULATION,
    REFERENCE,
    class_colour,
    sampler_colour,
)
from .selection import TEST, TRAIN

COLOUR_OPTIONS = ("label", "predicted", "confidence", "correctness")
FRAME = dict(margin=dict(l=10, r=30, t=40, b=10), modebar_orientation="v")
"""Layout of every chart: a vertical toolbar at the right edge, so it never covers the (left-aligned) title."""
LEGEND_BELOW = dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0)
"""A horizontal legend at the bottom of the figure, below the x-axis title: plotly widens the bottom margin to hold
it, however many rows it wraps to (a legend placed at a fraction of the plot height, e.g. ``y=-0.18``, covered the
axis title when the plot was short or the legend wrapped)."""
MAP_HEIGHT = 420
WEBGL_MIN_POINTS = 10_000
"""Maps with fewer points are drawn in SVG: without a GPU (headless Chromium in the tests, many laptops) WebGL is
drawn in software, and a by-hand profile of the browser's main thread (not a committed benchmark) found the SVG map
cheaper to redraw on every rerun; the app's committed timings are in ``docs/app_timings/cache_timings.json``. Above
the threshold, SVG stops being smooth and WebGL is the better choice."""


def scatter_trace(n_points: int) -> type:
    """The trace class for a map of ``n_points`` points: ``go.Scatter`` (SVG) below ``WEBGL_MIN_POINTS``, else
    ``go.Scattergl``. Both accept the same arguments and deliver the same selection events."""
    return go.Scatter if n_points < WEBGL_MIN_POINTS else go.Scattergl


def _custom(kind: int, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    return np.column_stack([np.full(len(rows), kind), rows])


def _layout(fig: go.Figure, title: str, height: int = MAP_HEIGHT) -> go.Figure:
    # The legend sits below the plot, so a colour bar (colouring by confidence) on the right never overlaps it.
    fig.update_layout(
        title=title,
        height=height,
        **FRAME,
        dragmode="zoom",
        legend=dict(
            itemsizing="constant", font=dict(size=10), orientation="h", yanchor="top", y=-0.02, x=0, xanchor="left"
        ),
        uirevision="keep",
    )
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    return fig


def coloured_points(
    fig: go.Figure,
    xy: np.ndarray,
    rows: np.ndarray,
    kind: int,
    colour_by: str,
    labels: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    class_names: Sequence[str],
    size: float = 6,
    symbol: str = "circle",
    name_prefix: str = "",
    showlegend: bool = True,
    trace: type = go.Scattergl,
) -> None:
    """Add the points ``rows`` (coordinates ``xy[rows]``) coloured by label, predicted label, confidence or
    correctness. ``labels``, ``pred``, ``conf`` are indexed by row; ``trace`` is the class (see
    :func:`scatter_trace`)."""
    rows = np.asarray(rows, dtype=np.int64)
    hover = [
        f"{'train' if kind == TRAIN else 'test'} #{r}<br>label {class_names[labels[r]]}, "
        f"predicted {class_names[pred[r]]}<br>confidence {conf[r]:.2f}"
        for r in rows
    ]
    hover = np.asarray(hover, dtype=object)
    if colour_by == "confidence":
        fig.add_trace(
            trace(
                x=xy[rows, 0],
                y=xy[rows, 1],
                mode="markers",
                name=f"{name_prefix}confidence",
                marker=dict(
                    size=size,
                    symbol=symbol,
                    color=conf[rows],
                    colorscale=CONFIDENCE_SCALE,
                    cmin=0,
                    cmax=1,
                    colorbar=dict(title="conf.", thickness=10, len=0.6, x=1.0, xanchor="left"),
                    line=dict(width=0),
                ),
                customdata=_custom(kind, rows),
                hovertext=hover,
                hoverinfo="text",
                showlegend=False,
            )
        )
        return
    if colour_by == "correctness":
        groups = [("correct", labels[rows] == pred[rows], GOOD), ("wrong", labels[rows] != pred[rows], BAD)]
    else:
        values = labels[rows] if colour_by == "label" else pred[rows]
        groups = [(str(class_names[c]), values == c, class_colour(c)) for c in range(len(class_names))]
    for name, mask, colour in groups:
        if not np.any(mask):
            continue
        fig.add_trace(
            trace(
                x=xy[rows[mask], 0],
                y=xy[rows[mask], 1],
                mode="markers",
                name=f"{name_prefix}{name}",
                legendgroup=name,
                showlegend=showlegend,
                marker=dict(size=size, symbol=symbol, color=colour, line=dict(width=0)),
                customdata=_custom(kind, rows[mask]),
                hovertext=hover[mask],
                hoverinfo="text",
            )
        )


def sample_map(
    xy_train: np.ndarray,
    subset: np.ndarray,
    colour_by: str,
    labels: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    class_names: Sequence[str],
    title: str,
    showlegend: bool = True,
) -> go.Figure:
    """All training points greyed, the Hessian subset on top coloured by ``colour_by``."""
    fig = go.Figure()
    n = len(xy_train)
    trace = scatter_trace(n)
    fig.add_trace(
        trace(
            x=xy_train[:, 0],
            y=xy_train[:, 1],
            mode="markers",
            name="not in sample",
            marker=dict(size=4, color=NOT_IN_SAMPLE),
            customdata=_custom(TRAIN, np.arange(n)),
            hoverinfo="skip",
        )
    )
    coloured_points(
        fig,
        xy_train,
        np.asarray(subset),
        TRAIN,
        colour_by,
        labels,
        pred,
        conf,
        class_names,
        size=7,
        showlegend=showlegend,
        trace=trace,
    )
    fig = _layout(fig, title)
    # Every map of a row keeps the same plot size: the bottom margin holds the legend (drawn on one map only).
    fig.update_layout(
        margin=dict(b=120, r=70 if colour_by == "confidence" else 30), legend=dict(y=-0.03), showlegend=showlegend
    )
    fig.layout.margin.autoexpand = False
    return fig


def test_points(
    fig: go.Figure,
    xy_test: np.ndarray,
    labels: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    class_names: Sequence[str],
    trace: type = go.Scattergl,
) -> None:
    """Test points as crosses in the state colours: correct = thin dark-blue cross, wrong = bold orange cross."""
    rows = np.arange(len(xy_test))
    hover = np.asarray(
        [
            f"test #{r}<br>label {class_names[labels[r]]}, predicted {class_names[pred[r]]}<br>confidence {conf[r]:.2f}"
            for r in rows
        ],
        dtype=object,
    )
    for name, mask, colour, symbol, size in (
        ("correct", labels == pred, GOOD, "x-thin-open", 7),
        ("wrong", labels != pred, BAD, "x", 9),
    ):
        if np.any(mask):
            fig.add_trace(
                trace(
                    x=xy_test[mask, 0],
                    y=xy_test[mask, 1],
                    mode="markers",
                    name=f"test {name}",
                    marker=dict(size=size, symbol=symbol, color=colour, line=dict(width=1.5, color=colour)),
                    customdata=_custom(TEST, rows[mask]),
                    hovertext=hover[mask],
                    hoverinfo="text",
                )
            )


def influence_map(
    xy_train: np.ndarray,
    xy_test: np.ndarray,
    colour_by: str,
    train_labels: np.ndarray,
    train_pred: np.ndarray,
    train_conf: np.ndarray,
    test_labels: np.ndarray,
    test_pred: np.ndarray,
    test_conf: np.ndarray,
    class_names: Sequence[str],
    test_index: int | None,
    helpful: Sequence[int] = (),
    harmful: Sequence[int] = (),
    title: str = "",
) -> go.Figure:
    """Training points (small, coloured), test points (crosses: click one to pick it), the chosen test point
    (star) and its top helpful (dark-blue circles) / harmful (orange diamonds) training points."""
    fig = go.Figure()
    trace = scatter_trace(len(xy_train) + len(xy_test))
    coloured_points(
        fig,
        xy_train,
        np.arange(len(xy_train)),
        TRAIN,
        colour_by,
        train_labels,
        train_pred,
        train_conf,
        class_names,
        size=4,
        name_prefix="train ",
        trace=trace,
    )
    test_points(fig, xy_test, test_labels, test_pred, test_conf, class_names, trace=trace)
    for name, rows, colour, symbol in (
        ("helpful", helpful, GOOD, "circle-open"),
        ("harmful", harmful, BAD, "diamond-open"),
    ):
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            fig.add_trace(
                trace(
                    x=xy_train[rows, 0],
                    y=xy_train[rows, 1],
                    mode="markers",
                    name=f"top {name} (sampler A)",
                    marker=dict(size=14, symbol=symbol, color=colour, line=dict(width=3, color=colour)),
                    customdata=_custom(TRAIN, rows),
                    hovertext=[f"{name} train #{r}" for r in rows],
                    hoverinfo="text",
                )
            )
    if test_index is not None:
        fig.add_trace(
            trace(
                x=[xy_test[test_index, 0]],
                y=[xy_test[test_index, 1]],
                mode="markers",
                name=f"test #{test_index}",
                marker=dict(size=18, symbol="star", color=CHOSEN, line=dict(width=1, color="white")),
                customdata=_custom(TEST, np.array([test_index])),
                hoverinfo="text",
                hovertext=[f"test #{test_index}"],
            )
        )
    return _layout(fig, title, height=520)


def distribution_figures(
    labels: np.ndarray, conf: np.ndarray, subsets: dict[str, np.ndarray], class_names: Sequence[str]
) -> tuple[go.Figure, go.Figure]:
    """Class shares and confidence histogram of each sampler's subset against the whole population (grey)."""
    C = len(class_names)
    names = [str(c) for c in class_names]
    edges = np.linspace(0, 1, 11)
    bins = [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])]
    f1 = go.Figure(
        [
            go.Bar(
                x=names,
                y=np.bincount(labels, minlength=C) / max(len(labels), 1),
                name="population",
                marker_color=POPULATION,
            )
        ]
    )
    f2 = go.Figure(
        [
            go.Bar(
                x=bins,
                y=np.histogram(conf, bins=edges)[0] / max(len(conf), 1),
                name="population",
                marker_color=POPULATION,
            )
        ]
    )
    for name, subset in subsets.items():
        subset = np.asarray(subset, dtype=np.int64)
        colour = sampler_colour(name)
        f1.add_trace(
            go.Bar(
                x=names,
                y=np.bincount(labels[subset], minlength=C) / max(len(subset), 1),
                name=name,
                marker_color=colour,
            )
        )
        f2.add_trace(
            go.Bar(
                x=bins,
                y=np.histogram(conf[subset], bins=edges)[0] / max(len(subset), 1),
                name=name,
                marker_color=colour,
            )
        )
    # Short titles: at a projector's 1024 px the two charts share a row, and a long title ran under the toolbar.
    for fig, title, x_title in ((f1, "Class shares", "class"), (f2, "Confidence (max softmax)", "confidence bin")):
        fig.update_xaxes(type="category")  # one tick per class (a numeric axis showed every other one)
        fig.update_layout(
            barmode="group",
            title=title,
            height=340,
            **FRAME,
            yaxis_title="share",
            xaxis_title=x_title,
            legend=LEGEND_BELOW,
        )
    return f1, f2


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    cm = confusion_counts(y_true, y_pred, len(class_names))
    names = [str(c) for c in class_names]
    fig = go.Figure(
        go.Heatmap(
            z=cm,
            x=names,
            y=names,
            colorscale="Blues",
            text=cm,
            texttemplate="%{text}",
            hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
            showscale=False,
        )
    )
    fig.update_layout(
        title="Confusion matrix (test set)",
        height=420,
        **FRAME,
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        xaxis_type="category",
        yaxis_type="category",
    )
    return fig


def trace_figure(traces: dict[str, Sequence[float]], tol: float | None = None) -> go.Figure:
    """Relative residual per iteration (log scale) for each named solve."""
    fig = go.Figure()
    for name, trace in traces.items():
        if len(trace):
            fig.add_trace(go.Scatter(x=np.arange(1, len(trace) + 1), y=list(trace), mode="lines", name=name))
    if tol:
        fig.add_hline(y=tol, line_dash="dot", annotation_text=f"tolerance {tol:.0e}")
    fig.update_layout(
        title="Solver convergence: relative residual per iteration",
        height=320,
        **FRAME,
        xaxis_title="iteration",
        yaxis_title="relative residual",
        yaxis_type="log",
    )
    fig.update_yaxes(dtick=1, tickformat=".0e")  # 1e-04 at each power of ten (not "100μ")
    return fig


def alpha_path_figure(alphas: Sequence[float], series: dict[str, Sequence[float]]) -> go.Figure:
    """F1 against the step size α (log axis), one line per sampler in its fixed colour, a dotted line at α = 1.

    On a log axis plotly places annotations at log10(x) while shapes use x itself, so the α = 1 label is put at
    ``x=0`` (log10 1) explicitly instead of with ``add_vline(annotation_text=...)``, which drew it near α = 10."""
    fig = go.Figure(
        [
            go.Scatter(
                x=list(alphas),
                y=list(y),
                mode="lines+markers",
                name=name,
                line=dict(color=sampler_colour(name)),
                marker=dict(color=sampler_colour(name)),
            )
            for name, y in series.items()
        ]
    )
    fig.add_vline(x=1.0, line_dash="dot", line_color="#444444")
    fig.add_annotation(
        x=0.0,
        xref="x",
        y=1.0,
        yref="paper",
        text="α = 1",
        showarrow=False,
        xanchor="left",
        yanchor="top",
        xshift=4,
        font=dict(size=11),
    )
    fig.update_xaxes(type="log", title="α (log scale)", dtick=1)  # labels at powers of ten only
    fig.update_layout(
        title="F1 along the α path",
        height=440,  # as tall as the per-class chart beside it, whose legend below takes up to five rows
        **FRAME,
        yaxis_title="F1 (mean over seeds)",
        legend=LEGEND_BELOW,
    )
    return fig


def per_class_figure(
    class_names: Sequence[str], before: np.ndarray, after: dict[str, np.ndarray], reference: np.ndarray | None = None
) -> go.Figure:
    """Grouped bars of test accuracy per class: before removal (grey), the retrained reference (black) and each
    sampler after its influence update (its fixed colour). The legend sits below the plot so every class keeps a
    tick (a right-hand legend with long names squeezed the axis to two ticks)."""
    names = [str(c) for c in class_names]
    bars = [go.Bar(x=names, y=before, name="before removal", marker_color=POPULATION)]
    if reference is not None:
        bars.append(go.Bar(x=names, y=reference, name="retrained without the class", marker_color=REFERENCE))
    bars += [
        go.Bar(x=names, y=acc, name=f"{name} (best α)", marker_color=sampler_colour(name))
        for name, acc in after.items()
    ]
    fig = go.Figure(bars)
    fig.update_layout(
        barmode="group",
        title="Accuracy per class",
        height=440,  # its legend below wraps to five rows in half a projector's width
        **FRAME,
        yaxis_title="test accuracy (mean over seeds)",
        yaxis_range=[0, 1.05],
        legend=LEGEND_BELOW,
    )
    fig.update_xaxes(type="category", tickmode="array", tickvals=names, ticktext=names, title="class")
    return fig


def strip_figure(groups: dict[str, Sequence[float]], title: str, y_title: str) -> go.Figure:
    """One box with all points per group (e.g. a metric across seeds per sampler)."""
    fig = go.Figure([go.Box(y=list(v), name=k, boxpoints="all", jitter=0.3, pointpos=0) for k, v in groups.items()])
    fig.update_layout(title=title, height=320, **FRAME, yaxis_title=y_title, showlegend=False)
    return fig


def feature_bars(rows: np.ndarray, feature_names: Sequence[str] | None = None, height: int = 160) -> go.Figure:
    """Tabular inputs, shape (r, d) (or one row, shape (d,)), as bars side by side, one panel per row and one bar
    per feature, in **standardised** units (each feature's z-score, as the model sees it), so a feature with a large
    raw scale does not hide the rest. One figure for the r panels (one chart element, not r), with a shared,
    symmetric z axis; the axes are labelled (feature names or indices on x, "z" on y). Captions go under the
    figure (:func:`caption_row_html`), not in titles that get cut off."""
    from plotly.subplots import make_subplots

    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    n_rows, n_features = rows.shape
    names = (
        list(feature_names)
        if feature_names is not None and len(feature_names) == n_features
        else [str(i) for i in range(n_features)]
    )
    fig = make_subplots(rows=1, cols=max(n_rows, 1), shared_yaxes=True, horizontal_spacing=0.02)
    for j, values in enumerate(rows, start=1):
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                marker_color=[GOOD if v >= 0 else BAD for v in values],
                hovertemplate="feature %{x}: z = %{y:.2f}<extra></extra>",
            ),
            row=1,
            col=j,
        )
    fig.update_layout(height=height, margin=dict(l=5, r=5, t=5, b=5), showlegend=False)
    fig.update_xaxes(
        type="category",
        tickfont=dict(size=10),
        title=dict(text="feature", font=dict(size=11)),
        nticks=min(n_features, 6),
    )
    lim = max(3.0, float(np.nanmax(np.abs(rows))) if rows.size else 3.0)
    fig.update_yaxes(range=[-lim, lim], tickfont=dict(size=10), zeroline=True, zerolinecolor="#888888")
    fig.update_yaxes(title=dict(text="z", font=dict(size=11)), row=1, col=1)
    return fig


SIGNAL_DATASETS = ("mnist1d",)
"""Datasets whose features are one ordered signal (MNIST-1D: 40 samples of a 1-D curve), drawn as line charts."""
TABULAR_PER_ROW = 4
"""At most this many tabular thumbnails side by side: each panel keeps ~130 px at a projector's 1024 px."""


def thumbnail_kind(dataset) -> str:
    """How :func:`ui.components.show_inputs` draws a dataset's inputs: ``"image"`` (grey tiles), ``"signal"``
    (:func:`signal_lines`, for :data:`SIGNAL_DATASETS`) or ``"bars"`` (:func:`feature_bars`, other tabular data)."""
    if dataset.image_shape is not None:
        return "image"
    return "signal" if dataset.name in SIGNAL_DATASETS else "bars"


def signal_lines(rows: np.ndarray, height: int = 190, y_range: tuple[float, float] | None = None) -> go.Figure:
    """Ordered 1-D signals, shape (r, d) (or one, shape (d,)), in their **raw** units (``dataset.inverse_transform``:
    the curve itself, as MNIST-1D is drawn): one line chart per row, side by side in one figure, on a shared y
    axis with a visible scale (``y_range``: the same scale for several figures, e.g. every row of one list; by
    default the rows' own range). Both axes are labelled ("position" 0 … d − 1 with two or three ticks, so that
    neighbouring panels' ticks never touch; "value") with ticks at 11 px, readable on a projector. Captions go
    under the figure (:func:`caption_row_html`)."""
    from plotly.subplots import make_subplots

    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    n_rows, n_points = rows.shape
    fig = make_subplots(rows=1, cols=max(n_rows, 1), shared_yaxes=True, horizontal_spacing=0.03)
    x = np.arange(n_points)
    for j, values in enumerate(rows, start=1):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values,
                mode="lines",
                line=dict(color=GOOD, width=2),
                hovertemplate="position %{x}: %{y:.2f}<extra></extra>",
            ),
            row=1,
            col=j,
        )
    lo, hi = y_range if y_range is not None else signal_range(rows)
    fig.update_layout(height=height, margin=dict(l=5, r=5, t=5, b=5), showlegend=False, plot_bgcolor="#f7f7f7")
    last = n_points - 1
    fig.update_xaxes(
        range=[0, last],
        nticks=3,
        tickfont=dict(size=11),
        title=dict(text="position", font=dict(size=11), standoff=2),
        showgrid=False,
    )
    fig.update_yaxes(
        range=[lo, hi],
        nticks=4,
        tickfont=dict(size=11),
        zeroline=True,
        zerolinecolor="#999999",
        gridcolor="#dddddd",
    )
    fig.update_yaxes(title=dict(text="value", font=dict(size=11), standoff=2), row=1, col=1)
    return fig


def signal_range(rows: np.ndarray) -> tuple[float, float]:
    """The y range of :func:`signal_lines` for ``rows`` (any shape): their finite min and max, padded by 8% of the
    span (±1 around a constant signal; (-1, 1) when nothing is finite)."""
    values = np.asarray(rows, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


_CAPTION_STYLE = "font-size:0.8rem;opacity:0.7;text-align:center"


def _grid_style(per_row: int, gap: str) -> str:
    """CSS of a grid of ``per_row`` equal columns that may shrink below their content's width."""
    return f"display:grid;grid-template-columns:repeat({per_row},minmax(0,1fr));gap:{gap}"


def caption_row_html(captions: Sequence[str], per_row: int) -> str:
    """Captions in a grid of ``per_row`` columns (under a :func:`feature_bars` figure of as many panels)."""
    cells = "".join(f'<div style="{_CAPTION_STYLE}">{html.escape(c)}</div>' for c in captions)
    return f'<div style="{_grid_style(per_row, "0 1rem")}">{cells}</div>'


def score_text(score: float) -> str:
    """A score for a thumbnail caption: two significant digits (``+3.1e-01``) that never wrap: the hyphen of the
    exponent is a non-breaking hyphen (U+2011), so a narrow column cannot break it into "+3.1e-" / "01"."""
    return f"{score:+.1e}".replace("-", "\u2011")


def nowrap(text: str) -> str:
    """``text`` with non-breaking spaces and hyphens (a caption that should stay on one line)."""
    return text.replace(" ", "\u00a0").replace("-", "\u2011")


def normalised_tile(raw_row: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """One input row (raw scale, from ``dataset.inverse_transform``) as an ``image_shape`` grey image in [0, 1]
    (min-max per tile; a constant tile is all zeros)."""
    img = np.asarray(raw_row, dtype=np.float64).reshape(image_shape)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def png_data_uri(image: np.ndarray) -> str:
    """A grey image in [0, 1], shape (h, w), as a ``data:image/png;base64,...`` URI (8-bit PNG)."""
    from PIL import Image

    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


GALLERY_CLASS = "ie-gallery"
"""The CSS class of a thumbnail gallery (:func:`gallery_html`); each tile is a ``figure`` with class ``ie-tile``."""


def gallery_html(tiles: Sequence[np.ndarray], captions: Sequence[str], per_row: int = 8) -> str:
    """Image thumbnails with captions as one HTML grid (``per_row`` tiles a row): one page element instead of one
    image element, one media request and one column per tile, so a rerun that changes the thumbnails costs the
    browser a single redraw. ``tiles`` are grey images in [0, 1] at native resolution, scaled up without smoothing
    (``image-rendering: pixelated``); captions are escaped and wrap only where they have ordinary spaces (see
    :func:`nowrap`)."""
    if len(tiles) != len(captions):
        raise ValueError(f"{len(tiles)} tiles but {len(captions)} captions: give one caption per tile.")
    cells = "".join(
        f'<figure class="ie-tile" style="margin:0;min-width:0">'
        f'<img src="{png_data_uri(tile)}" alt="{html.escape(caption)}" '
        f'style="width:100%;aspect-ratio:{tile.shape[1]}/{tile.shape[0]};image-rendering:pixelated;display:block">'
        f'<figcaption style="{_CAPTION_STYLE}">{html.escape(caption)}</figcaption></figure>'
        for tile, caption in zip(tiles, captions)
    )
    return f'<div class="{GALLERY_CLASS}" style="{_grid_style(per_row, "0.5rem 1rem")}">{cells}</div>'


def computed_caption(row: dict, elapsed: float, n_train: int, n_hessians: int) -> str:
    """What the Influence page just did, in words: loaded from the cache or computed now, and how sampler A's
    iHVP was solved (iterations only for an iterative solver; a direct solve says so instead of "0 iterations").
    ``row``: an ``influence_rows`` record (``method``, ``iterations``, ``solve_seconds``, ``seconds`` = the time
    of its first computation); ``elapsed``: this run's wall time for the rows."""
    first = float(row.get("seconds", 0.0))
    if first > 0 and elapsed < 0.5 * first:
        when = f"loaded from the cache in {elapsed:.2f} s (computed in {first:.2f} s the first time)"
    else:
        when = f"computed just now in {elapsed:.2f} s"
    iterations = int(row.get("iterations", 0))
    solve = (
        f"{row['method']} solve, {iterations} iterations in {row['solve_seconds']:.2f} s"
        if iterations > 0
        else f"{row['method']} solve with the factorised (H + δI)⁻¹, no iterations"
    )
    return (
        f"Scores of all {n_train} training points for {n_hessians} Hessians {when}; sampler A: {solve} "
        "(measured on this machine)."
    )
