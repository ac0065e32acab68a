"""Turn a plotly selection event (``st.plotly_chart(..., on_select="rerun")``) into row ids. Pure: no Streamlit.

The app's maps put ``customdata = [kind, row]`` on every point, where ``kind`` is :data:`TRAIN` (0) or
:data:`TEST` (1) and ``row`` the index into the training or test set. Trace-local ``point_index`` values are never
used: they change meaning as soon as a figure has several traces (grey background, highlighted subset, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TRAIN = 0
TEST = 1
_KIND_NAMES = {"train": TRAIN, "test": TEST}


@dataclass(frozen=True)
class MapSelection:
    """Selected training and test rows (sorted, unique) and how they were selected.

    ``region`` is True when a box or lasso was drawn (a linked table is wanted), False for a click (or nothing).
    """

    train_rows: tuple[int, ...] = ()
    test_rows: tuple[int, ...] = ()
    region: bool = False

    @property
    def empty(self) -> bool:
        return not self.train_rows and not self.test_rows

    def clicked_test_row(self) -> int | None:
        """The test row picked by a single click, or None (a region, several points, or a training point)."""
        if not self.region and len(self.test_rows) == 1 and not self.train_rows:
            return self.test_rows[0]
        return None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    try:  # numpy scalars
        as_float = float(value)
    except (TypeError, ValueError):
        return None
    return int(as_float) if as_float.is_integer() else None


def _kind(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() in _KIND_NAMES:
        return _KIND_NAMES[value.strip().lower()]
    k = _as_int(value)
    return k if k in (TRAIN, TEST) else None


def parse_selection(event: Any, n_train: int | None = None, n_test: int | None = None) -> MapSelection:
    """Rows selected in a plotly selection event.

    Args:
        event: the value returned by ``st.plotly_chart(on_select="rerun")`` (or kept in ``st.session_state``):
            ``{"selection": {"points": [{"customdata": [kind, row], ...}, ...], "box": [...], "lasso": [...]}}``.
            In a real browser, numeric customdata arrives as ``{"0": kind, "1": row}`` (a serialised typed array);
            both forms are accepted.
            None, an empty dict, or points without usable customdata give an empty selection.
        n_train, n_test: when given, rows outside ``[0, n)`` are dropped (a stale event from another dataset).
    Returns:
        A :class:`MapSelection`.
    """
    if event is None:
        return MapSelection()
    selection = _get(event, "selection", None)
    if selection is None:
        return MapSelection()
    points = _get(selection, "points", None) or []
    region = bool(_get(selection, "box", None)) or bool(_get(selection, "lasso", None))
    train: set[int] = set()
    test: set[int] = set()
    for point in points:
        custom = _get(point, "customdata", None)
        if custom is None or isinstance(custom, (str, bytes)):
            continue
        if isinstance(custom, Mapping):  # plotly.js sends typed-array customdata as {"0": kind, "1": row}
            custom = [custom.get("0", custom.get(0)), custom.get("1", custom.get(1))]
        try:
            custom = list(custom)
        except TypeError:
            continue
        if len(custom) < 2:
            continue
        kind, row = _kind(custom[0]), _as_int(custom[1])
        if kind is None or row is None or row < 0:
            continue
        if kind == TRAIN and (n_train is None or row < n_train):
            train.add(row)
        elif kind == TEST and (n_test is None or row < n_test):
            test.add(row)
    return MapSelection(tuple(sorted(train)), tuple(sorted(test)), region)


TOP_RADIUS = 0.007
"""A test cross covers about this share of the map's span (its marker radius on a map of the app's size)."""


def prefer_drawn_on_top(selection: MapSelection, xy_train, xy_test, radius: float = TOP_RADIUS) -> MapSelection:
    """A click that plotly gave to a training dot lying under a test cross, given to the cross instead.

    Test crosses are drawn on top of the training dots, but plotly's click picks, among the markers under the
    pointer, the smaller one (a dot's hover distance is 0 within 3 px of its centre, a cross's never is), so a click
    on a cross selected the dot under it. Here a single clicked training row whose position lies within ``radius``
    x the map's span of a test point becomes that (nearest) test point. Regions and test clicks are unchanged."""
    import numpy as np

    if selection.region or len(selection.train_rows) != 1 or selection.test_rows:
        return selection
    xy_train, xy_test = np.asarray(xy_train, dtype=float), np.asarray(xy_test, dtype=float)
    if not len(xy_test):
        return selection
    every = np.vstack([xy_train, xy_test])
    span = float(np.max(np.ptp(every, axis=0))) or 1.0
    d = np.linalg.norm(xy_test - xy_train[selection.train_rows[0]], axis=1)
    j = int(np.argmin(d))
    if d[j] <= radius * span:
        return MapSelection(train_rows=(), test_rows=(j,), region=False)
    return selection
