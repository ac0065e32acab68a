"""Figures of the Lesson and Explorer pages (no Streamlit, no influence maths): the mislabel detection curve, the
map coloured by a score, the class mix of slices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from .colours import BAD, CHOSEN, GOOD, POPULATION
from .figures import FRAME, LEGEND_BELOW, _custom, _layout, scatter_trace, test_points
from .selection import TRAIN

# Diverging scale for influence on one test point: harmful = orange, ~0 = light grey, helpful = dark blue (the
# state colours of the app); sequential purple for self-influence (no class, state or confidence colour).
# Neither scale reaches white: every point stays visible on the white background, whatever its value.
INFLUENCE_SCALE = [[0.0, BAD], [0.5, "#b4b4b4"], [1.0, GOOD]]
SELF_INFLUENCE_SCALE = [[0.0, "#c6c3e0"], [0.5, "#807dba"], [1.0, "#3f007d"]]
CONTRAST_QUANTILE = 0.98
"""The colour scales end at this quantile of the values (not at the single most extreme point), so the bulk of the
points spreads over the scale instead of sharing its palest colour; the hover text gives each exact value."""
DETECTION_COLOURS = {"self-influence": "#6a3d9a", "training loss": "#b15928", "random inspection": POPULATION}


def detection_figure(curves: dict[str, dict[str, Any]], share: float) -> go.Figure:
    """Fraction of the flipped labels found against the fraction of the training set inspected, one line per
    ranking, and the diagonal of random inspection."""
    fig = go.Figure()
    for name, curve in curves.items():
        x, y = np.asarray(curve["inspected"]), np.asarray(curve["found"])
        step = max(1, len(x) // 400)  # a few hundred points draw the same line
        fig.add_trace(
            go.Scatter(
                x=x[::step],
                y=y[::step],
                mode="lines",
                name=f"{name} (AUC {curve['auc']:.2f})",
                line=dict(color=DETECTION_COLOURS.get(name, "#555555"), width=2.5),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="random inspection (AUC 0.50)",
            line=dict(color=DETECTION_COLOURS["random inspection"], dash="dash"),
        )
    )
    fig.add_vline(x=share, line=dict(color="#444444", dash="dot"))
    fig.add_annotation(x=share, y=0.02, text=f"{share:.0%} flipped", showarrow=False, xanchor="left", xshift=4)
    fig.update_layout(
        title="Mislabel detection: flipped labels found against training points inspected",
        height=420,
        **FRAME,
        xaxis_title="fraction of the training set inspected",
        yaxis_title="fraction of flipped labels found",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.02],
        legend=LEGEND_BELOW,
    )
    return fig


def score_map(
    xy_train: np.ndarray,
    xy_test: np.ndarray,
    values: np.ndarray,
    kind: str,
    test_labels: np.ndarray,
    test_pred: np.ndarray,
    test_conf: np.ndarray,
    class_names: Sequence[str],
    test_index: int | None = None,
    neighbours: Sequence[int] = (),
    focus_train: int | None = None,
    title: str = "",
) -> go.Figure:
    """Training points coloured by ``values`` (n_train,): ``kind`` "influence" (diverging, symmetric around 0:
    dark blue helpful, orange harmful) or "self-influence" (sequential); test points as crosses; the chosen test
    point as a star; ``neighbours`` ringed."""
    v = np.asarray(values, dtype=np.float64)
    rows = np.arange(len(xy_train))
    finite = v[np.isfinite(v)]
    if kind == "influence":
        lim = float(np.quantile(np.abs(finite), CONTRAST_QUANTILE)) if finite.size else 1.0
        lim = lim or float(np.max(np.abs(finite), initial=0.0)) or 1.0
        marker = dict(
            size=5,
            color=v,
            colorscale=INFLUENCE_SCALE,
            cmin=-lim,
            cmax=lim,
            colorbar=dict(title="score", thickness=10, len=0.6, x=1.0, xanchor="left"),
        )
    else:
        lo = float(np.quantile(finite, 1 - CONTRAST_QUANTILE)) if finite.size else 0.0
        hi = float(np.quantile(finite, CONTRAST_QUANTILE)) if finite.size else 1.0
        marker = dict(
            size=5,
            color=v,
            colorscale=SELF_INFLUENCE_SCALE,
            cmin=lo,
            cmax=hi if hi > lo else lo + 1.0,
            colorbar=dict(title="self-inf.", thickness=10, len=0.6, x=1.0, xanchor="left"),
        )
    trace = scatter_trace(len(xy_train) + len(xy_test))
    fig = go.Figure(
        trace(
            x=xy_train[:, 0],
            y=xy_train[:, 1],
            mode="markers",
            name=f"train ({kind})",
            marker=marker,
            customdata=_custom(TRAIN, rows),
            hovertext=[f"train #{r}<br>{kind} {v[r]:+.2e}" for r in rows],
            hoverinfo="text",
            showlegend=False,
        )
    )
    test_points(fig, xy_test, test_labels, test_pred, test_conf, class_names, trace=trace)
    add_focus(fig, xy_train, xy_test, test_index, neighbours, focus_train)
    return _layout(fig, title, height=520)


def add_focus(
    fig: go.Figure,
    xy_train: np.ndarray,
    xy_test: np.ndarray,
    test_index: int | None,
    neighbours: Sequence[int] = (),
    focus_train: int | None = None,
) -> go.Figure:
    """Ring the nearest ``neighbours`` (black open circles), star the chosen test point or training point."""
    nb = np.asarray(neighbours, dtype=np.int64)
    trace = scatter_trace(len(xy_train) + len(xy_test))  # as the map's own points (see ui.figures)
    if len(nb):
        fig.add_trace(
            trace(
                x=xy_train[nb, 0],
                y=xy_train[nb, 1],
                mode="markers",
                name="nearest neighbours",
                marker=dict(size=13, symbol="circle-open", color=CHOSEN, line=dict(width=2)),
                customdata=_custom(TRAIN, nb),
                hovertext=[f"neighbour train #{r}" for r in nb],
                hoverinfo="text",
            )
        )
    if focus_train is not None:
        fig.add_trace(
            trace(
                x=[xy_train[focus_train, 0]],
                y=[xy_train[focus_train, 1]],
                mode="markers",
                name=f"train #{focus_train}",
                marker=dict(size=18, symbol="star", color=CHOSEN, line=dict(width=1, color="white")),
                customdata=_custom(TRAIN, np.array([focus_train])),
                hoverinfo="text",
                hovertext=[f"train #{focus_train}"],
            )
        )
    elif test_index is not None:
        fig.add_trace(
            trace(
                x=[xy_test[test_index, 0]],
                y=[xy_test[test_index, 1]],
                mode="markers",
                name=f"test #{test_index}",
                marker=dict(size=18, symbol="star", color=CHOSEN, line=dict(width=1, color="white")),
                hoverinfo="text",
                hovertext=[f"test #{test_index}"],
                customdata=_custom(1, np.array([test_index])),
            )
        )
    return fig


def slice_mix_figure(mixes: dict[str, np.ndarray], population: np.ndarray, class_names: Sequence[str]) -> go.Figure:
    """Class shares of each named slice (bars in the class colours would clash across slices, so slices get a
    neutral sequence of greys-to-purples) beside the whole training set (grey)."""
    names = [str(c) for c in class_names]
    shades = ("#54278f", "#756bb1", "#9e9ac8", "#bcbddc", "#3f007d", "#807dba")
    bars = [go.Bar(x=names, y=population, name="training set", marker_color=POPULATION)]
    bars += [
        go.Bar(x=names, y=mix, name=name, marker_color=shades[i % len(shades)])
        for i, (name, mix) in enumerate(mixes.items())
    ]
    fig = go.Figure(bars)
    fig.update_xaxes(type="category", title="class")
    fig.update_layout(
        barmode="group",
        title="Class mix of the slices",
        height=320,
        yaxis_title="share",
        **FRAME,
        legend=LEGEND_BELOW,
    )
    return fig
