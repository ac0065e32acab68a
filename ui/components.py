"""Streamlit building blocks shared by the pages (widgets and layout only)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st

import influence_core as ic

from .config import RunConfig
from .figures import feature_bars, image_tile
from .state import current_run, ensure_model, get_dataset, get_view


def page_header(title: str) -> None:
    st.set_page_config(page_title=f"Influence Explorer: {title}", layout="wide")
    st.title(title)


def load_current() -> tuple[RunConfig, ic.Dataset, object, object] | None:
    """The session's run configuration, dataset, model and view (training it with a progress bar if needed).

    Shows an error and returns None when the data or the model cannot be prepared."""
    run = current_run()
    try:
        dataset = get_dataset(run.data)
        model = ensure_model(run)
        view = get_view(run)
    except (ValueError, RuntimeError) as exc:
        st.error(f"Could not prepare the data and model ({run.data.label()}, {run.model.arch}): {exc}. "
                 "Choose other settings on the home page.")
        return None
    acc = model.training_report["test_accuracy"]
    st.caption(f"Model: {run.model.arch} on {run.data.label()}, {dataset.n_train} training / {dataset.n_test} "
               f"test points, {view.n_params:,} parameters, test accuracy {acc:.1%}. Change it on the home page.")
    return run, dataset, model, view


def show_inputs(dataset: ic.Dataset, X_rows: np.ndarray, captions: Sequence[str], per_row: int = 8,
                key: str = "inputs") -> None:
    """Thumbnails of input rows (standardised, as in the dataset): images, or feature bars for tabular data."""
    raw = dataset.inverse_transform(np.asarray(X_rows))
    for start in range(0, len(raw), per_row):
        cols = st.columns(per_row)
        for j, col in enumerate(cols):
            i = start + j
            if i >= len(raw):
                break
            with col:
                if dataset.image_shape is not None:
                    st.image(image_tile(raw[i], dataset.image_shape), caption=captions[i], clamp=True, width="stretch")
                else:
                    st.plotly_chart(feature_bars(raw[i], captions[i]), width="stretch",
                                    config={"displayModeBar": False}, key=f"{key}-{i}")
