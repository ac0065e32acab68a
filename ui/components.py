"""Streamlit building blocks shared by the pages (widgets and layout only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

import influence_core as ic

from . import artifacts
from .config import RunConfig
from .errors import CANCEL_NOTICE_SHOWN, reported
from .figures import (
    TABULAR_PER_ROW,
    caption_row_html,
    feature_bars,
    gallery_html,
    normalised_tile,
    signal_lines,
    signal_range,
    thumbnail_kind,
)
from .state import (
    CANCEL_NOTICE_KEY,
    background_projection_error,
    cache_problems,
    clear_disk_cache,
    current_run,
    ensure_model,
    get_dataset,
    get_projection,
    get_view,
    projection_ready,
    start_projection_in_background,
)

PROJECTOR_CSS = """<style>
@media (max-width: 1400px) {
  [data-testid="stMainBlockContainer"] { padding-left: 1.5rem; padding-right: 1.5rem; }
}
</style>"""
"""On screens up to 1400 px wide (a projector's 1024 or 1366 px) the page keeps 1.5rem of side padding instead of
Streamlit's 5rem: 110 px more for charts and tables beside the sidebar (a style-only ``st.html`` takes no space)."""


def page_header(title: str) -> None:
    st.set_page_config(page_title=f"Influence Explorer: {title}", layout="wide")
    st.html(PROJECTOR_CSS)
    st.title(title)
    notice = st.session_state.pop(CANCEL_NOTICE_KEY, None)  # the Cancel button was pressed in the last run
    st.session_state[CANCEL_NOTICE_SHOWN] = notice is not None
    if notice:
        st.info(notice, icon="⏹️")


def words_panel(page: str) -> None:
    """An expander "Words on this page" with the glossary entries the page uses (:data:`ui.glossary.PAGE_TERMS`)."""
    from .glossary import PAGE_TERMS, glossary_markdown

    with st.expander("Words on this page (see also the Glossary page)"):
        st.markdown(glossary_markdown(PAGE_TERMS[page]))


def load_current() -> tuple[RunConfig, ic.Dataset, object, object] | None:
    """The session's run configuration, dataset, model and view (training it with a progress bar if needed).

    Shows an error and returns None when the data or the model cannot be prepared."""
    run = current_run()
    with reported(
        f"Could not prepare the data and model ({run.data.label()}, {run.model.arch})",
        then="Choose other settings on the home page.",
    ) as outcome:
        dataset = get_dataset(run.data)
        model = ensure_model(run)
        view = get_view(run)
    if outcome.failed:
        return None
    acc = model.training_report["test_accuracy"]
    st.caption(
        f"Model: {run.model.arch} on {run.data.label()}, {dataset.n_train} training / {dataset.n_test} "
        f"test points, {view.n_params:,} parameters, test accuracy {acc:.1%}. Change it on the home page."
    )
    return run, dataset, model, view


def show_inputs(
    dataset: ic.Dataset, X_rows: np.ndarray, captions: Sequence[str], per_row: int = 8, key: str = "inputs"
) -> None:
    """Thumbnails of input rows with a caption under each, drawn as :func:`ui.figures.thumbnail_kind` says. Images
    (raw scale, min-max per tile) go in one HTML grid (:func:`ui.figures.gallery_html`: one element, however many
    tiles). Tabular rows go at most :data:`ui.figures.TABULAR_PER_ROW` a row (readable at a projector's 1024 px),
    one chart per row of panels with the captions in a grid under it: an ordered signal (MNIST-1D) as line charts
    of its raw values (:func:`ui.figures.signal_lines`), other tabular data as bars of the standardised features
    (:func:`ui.figures.feature_bars`), both with labelled axes. Captions wrap between words and never inside a
    number (see :func:`ui.figures.score_text`)."""
    X_rows = np.asarray(X_rows)
    kind = thumbnail_kind(dataset)
    if kind == "image":
        raw = dataset.inverse_transform(X_rows)
        st.html(gallery_html([normalised_tile(row, dataset.image_shape) for row in raw], captions, per_row))
        return
    per_row = min(per_row, TABULAR_PER_ROW)
    feature_names = (dataset.info or {}).get("feature_names")
    raw = dataset.inverse_transform(X_rows) if kind == "signal" else None
    y_range = signal_range(raw) if kind == "signal" else None  # one scale for every row of the list
    for start in range(0, len(X_rows), per_row):
        chunk = X_rows[start : start + per_row]
        width = len(chunk) / per_row  # a short last row keeps the panels' width
        col = st.columns([width, 1 - width])[0] if width < 1 else st.container()
        with col:
            st.plotly_chart(
                signal_lines(raw[start : start + per_row], y_range=y_range)
                if kind == "signal"
                else feature_bars(chunk, feature_names),
                width="stretch",
                config={"displayModeBar": False},
                key=f"{key}-{start}",
            )
            st.html(caption_row_html(captions[start : start + per_row], len(chunk)))


def widget_default(key: str, value, options: Sequence | None = None) -> None:
    """Give the widget ``key`` its first value through the session state; draw the widget after this call with no
    ``default=`` / ``value=`` / ``index=``. A widget given both logs Streamlit's warning "created with a default
    value but also had its value set via the Session State API" whenever :func:`ui.url_state.keep_settings`
    restores its setting (a page switch, a reload, a shared link). ``options``: the widget's choices; a kept value
    outside them (a multiselect's: each value) is dropped, and a menu left with nothing falls back to ``value``."""
    if key not in st.session_state:
        st.session_state[key] = value
        return
    if options is None:
        return
    current = st.session_state[key]
    if isinstance(current, (list, tuple)):
        kept = [v for v in current if v in options]
        if len(kept) != len(current):
            st.session_state[key] = kept or value
    elif current not in options:
        st.session_state[key] = value


def checked_number(
    label: str, key: str, lo: float, hi: float | None, default: float | int, integer: bool = True, **kwargs
) -> float | int | None:
    """A number box without browser-side bounds (so what the student typed stays visible) and, under it, one
    error line with the allowed range when the value is outside ``[lo, hi]`` (:func:`ui.inputs.range_problem`).
    Returns the value, or None when it is out of range: the page must then compute nothing
    (:func:`stop_if_invalid`)."""
    from .inputs import range_problem

    if key not in st.session_state:
        st.session_state[key] = default
    # The step's type sets the box's type (no bounds are given): whole numbers show as "5", not "5.00".
    kwargs.setdefault("step", 1 if integer else 0.001)
    if integer:
        st.session_state[key] = (
            int(st.session_state[key]) if float(st.session_state[key]).is_integer() else st.session_state[key]
        )
    value = st.number_input(label, key=key, **kwargs)
    problem = range_problem(value, lo, hi, label, integer)
    if problem:
        st.error(problem)
        return None
    return int(value) if integer else float(value)


def scroll_to(element_id: str) -> None:
    """Scroll the page so that the element with ``element_id`` (e.g. an ``st.html('<div id=...>')`` anchor) is at
    the top of the view: the result a click changed, when it is drawn above the control that was clicked."""
    import json

    from streamlit.components.v1 import html

    html(
        f"<script>const el = window.parent.document.getElementById({json.dumps(element_id)});"
        "if (el) el.scrollIntoView({behavior: 'instant', block: 'start'});</script>",
        height=0,
    )


def stop_if_invalid(*values) -> None:
    """Stop the page (after its controls are drawn) when a checked input is out of range (None)."""
    if any(v is None for v in values):
        st.info("Nothing was computed: fix the value marked in red above (its allowed range is under it).")
        st.stop()


def sample_size_input(label: str, pool: int, key: str, what: str, default: int = 100) -> int | None:
    """A checked number input for the Hessian sample size m, ``1 <= m <= pool`` (the pool it is drawn from).

    The default is ``min(default, pool)``; a value outside the range (typed, or left from a larger pool: another
    class, another dataset) stays in the box with the allowed range under it, and None is returned."""
    pool = max(int(pool), 1)
    return checked_number(
        label,
        key,
        1,
        pool,
        min(default, pool),
        step=10,
        help=f"1 to {pool}: the {what}. The default is {min(default, pool)} (100, or the "
        "whole pool when it is smaller).",
    )


POLL_SECONDS = 2.0


def map_coordinates(run: RunConfig, space: str, method: str, key: str) -> tuple[np.ndarray, str]:
    """The (n_train + n_test, 2) map and the method it shows. A map already computed (memory or disk cache) is
    returned at once; a UMAP not yet computed is started in the background and PCA is shown meanwhile, with a note
    that polls every two seconds and reruns the page when the UMAP is ready (no click needed)."""
    if projection_ready(run, space, method):
        return get_projection(run, space, method), method
    error = background_projection_error(run, space, method)
    if error is not None:
        raise RuntimeError(f"the {method.upper()} map failed: {error}")
    start_projection_in_background(run, space, method)

    @st.fragment(run_every=POLL_SECONDS)
    def wait_for_map() -> None:
        if projection_ready(run, space, method) or background_projection_error(run, space, method):
            st.rerun()
        st.info(
            f"Computing the {method.upper()} map of the {space} in the background "
            f"({start_projection_in_background(run, space, method):.0f} s so far; it is computed once and kept on "
            "disk). Showing PCA meanwhile; the map switches by itself when it is ready.",
            icon="⏳",
        )

    with st.container(key=f"{key}_waiting"):
        wait_for_map()
    return get_projection(run, space, "pca"), "pca"


def disk_cache_section() -> None:
    """The home page's view of the disk cache: its use against its size budget (in the title), where it is, what
    it holds (kind, configuration, size, date), the problems met (corrupt or foreign files, removed and
    recomputed), and a button that clears it."""
    from . import cache_budget

    store = artifacts.disk_store()
    use = cache_budget.usage(None if store is None else store.root)
    of = "no size limit" if use.budget is None else f"of {use.budget / 1e6:,.0f} MB"
    title = (
        "Disk cache: off"
        if store is None
        else f"Disk cache: {use.bytes / 1e6:,.1f} MB {of} (trained models, maps and fitted inverses kept across "
        "restarts)"
    )
    with st.expander(title, expanded=False):
        if store is None:
            st.caption("The disk cache is off (INFLUENCE_EXPLORER_CACHE_DIR=off).")
            return
        entries = store.entries()
        total = sum(e.bytes for e in entries) / 1e6
        st.caption(
            f"{len(entries)} files, {total:.1f} MB in `{store.root}`, shared by every session and kept "
            "across server restarts. Each file is keyed by its full configuration and the version of the "
            "code that made it; files are arrays (.npz), never pickles. Beyond the size budget "
            f"({cache_budget.ENV_BUDGET}, in MB) the least recently used files are removed (never one a "
            "running computation uses) and recomputed when next needed."
        )
        for message in cache_problems():
            st.warning(message)
        if entries:
            st.dataframe(
                [artifacts.describe_entry(e) for e in entries], hide_index=True, width="stretch", key="cache_table"
            )
        if st.button(
            "Clear the disk cache",
            key="cache_clear",
            help="Removes every file; models, maps and fitted inverses are recomputed when next asked for "
            "(by any session).",
        ):
            removed = clear_disk_cache()
            st.success(f"Removed {removed} files.")
