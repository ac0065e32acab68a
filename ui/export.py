"""Export of every figure and table: plotly's own "Download plot as png" button (the camera in each chart's
toolbar; kaleido is not a dependency, so the server renders no images) with a file name per chart, and a CSV
download button under each table."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "figure"


def chart_config(name: str) -> dict:
    """``st.plotly_chart(..., config=chart_config("lds_vs_m"))``: the toolbar's PNG button saves ``lds_vs_m.png``
    at twice the screen resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": _slug(name), "scale": 2}}


def chart(fig, name: str, key: str, **kwargs):
    """``st.plotly_chart`` with the PNG export named ``name`` (returns what ``st.plotly_chart`` returns)."""
    return st.plotly_chart(fig, width="stretch", key=key, config=chart_config(name), **kwargs)


def csv_button(df: pd.DataFrame, name: str, key: str, label: str = "Download this table as CSV") -> None:
    st.download_button(label, df.to_csv(index=False).encode(), file_name=f"{_slug(name)}.csv", mime="text/csv",
                       key=key)


def show_table(df: pd.DataFrame, name: str, key: str) -> None:
    """``st.dataframe`` (no index, full width) with a CSV download button of the same rows under it."""
    st.dataframe(df, hide_index=True, width="stretch")
    csv_button(df, name, key=f"{key}_csv")
