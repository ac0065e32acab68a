"""Export of every figure and table: plotly's own "Download plot as png" button (the camera in each chart's
toolbar; kaleido is not a dependency, so the server renders no images) with a file name per chart, and a CSV
download button under each table."""

from __future__ import annotations

import re
from collections.abc import Sequence

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
    st.download_button(label, df.to_csv(index=False).encode(), file_name=f"{_slug(name)}.csv", mime="text/csv", key=key)


COLUMN_LABELS = {
    "spearman_vs_full": "Spearman with full data",
    "topk_overlap_vs_full": "top-k overlap with full data",
    "solve_seconds": "solve time (s)",
    "solver s": "solve time (s)",
    "sampler_seconds": "sampling time (s)",
    "peak_mb": "peak memory (MB)",
    "peak memory MB": "peak memory (MB)",
    "lds_mean": "LDS (mean over seeds)",
    "lds_std": "LDS (std over seeds)",
    "lds": "LDS",
    "spearman_mean": "Spearman with full data (mean over seeds)",
    "spearman_std": "Spearman with full data (std over seeds)",
    "spearman": "Spearman with full data",
    "topk_helpful": "top-10 helpful overlap with full data",
    "topk_helpful_mean": "top-10 helpful overlap (mean)",
    "topk_helpful_std": "top-10 helpful overlap (std)",
    "rel_error": "relative error of the iHVP",
    "seeds": "sampler seeds",
    "margin": "lead over the next (LDS)",
    "class_tv": "class TV distance",
    "confidence_tv": "confidence TV distance",
    "status": "status",
    "failed": "failed seeds",
}
"""Readable names (with units) of the raw columns of result records: every table shows these, never the keys."""
MISSING = "n/a"


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :data:`COLUMN_LABELS` names and "n/a" for missing values (no cell reads "None" or "nan"; the
    other numbers of such a column as :func:`number_format` says); a column ``(a, b)`` of a grouped aggregate
    becomes "a b"."""
    out = df.copy()
    out.columns = [
        COLUMN_LABELS.get(c, c)
        if not isinstance(c, tuple)
        else " ".join(str(COLUMN_LABELS.get(part, part)) for part in c if part != "").strip()
        for c in out.columns
    ]
    for col in out.columns:
        if out[col].isna().any():  # a column with gaps becomes text: "n/a" there, numbers as number_format says
            numbers = [v for v in out[col] if isinstance(v, float) and not pd.isna(v)]
            fmt = number_format(numbers)
            out[col] = [MISSING if pd.isna(v) else fmt % v if isinstance(v, float) else v for v in out[col]]
    return out


def number_format(values) -> str:
    """The on-screen printf format of a column of floats: three decimals, a fixed point with one decimal from 100
    up (no column of "1437.000"), and two significant digits in scientific notation when every value is below
    0.01 (self-influence or a score reads "3.1e-04", never "0.000")."""
    import numpy as np

    v = np.abs(np.asarray(values, dtype=np.float64))
    v = v[np.isfinite(v)]
    if v.size == 0 or v.max() == 0:
        return "%.3f"
    if v.max() < 0.01:
        return "%.1e"
    if v.max() >= 100:
        return "%.1f"
    return "%.3f"


def show_table(df: pd.DataFrame, name: str, key: str, hidden: Sequence[str] = (), help: dict | None = None) -> None:
    """``st.dataframe`` (no index, full width, :func:`readable` column names and cells, :func:`number_format`
    numbers) with a CSV download button of the same rows under it. Columns in ``hidden`` (raw or readable names)
    are left off the screen but kept in the CSV: the same for every row and said beside the table, or detail a
    projector's 1024 px has no room for. ``help``: a tooltip per column (readable name -> text)."""
    df = readable(df)
    gone = {COLUMN_LABELS.get(c, c) for c in hidden}
    config: dict = {col: None for col in df.columns if col in gone}
    for col in df.columns:
        if col in gone:
            continue
        tip = (help or {}).get(col)
        if pd.api.types.is_float_dtype(df[col]):
            config[col] = st.column_config.NumberColumn(format=number_format(df[col]), help=tip)
        elif tip:
            config[col] = st.column_config.Column(help=tip)
    st.dataframe(df, hide_index=True, width="stretch", column_config=config)
    csv_button(df, name, key=f"{key}_csv")
