"""Checks of the numbers a student types (no Streamlit): the pages draw number boxes without browser-side bounds,
so an out-of-range value stays visible in its box, and these checks say what is allowed next to it; the page
computes nothing until it is fixed (never with another value than the one shown)."""

from __future__ import annotations

import math


def range_problem(
    value: float | int | None, lo: float, hi: float | None, label: str, integer: bool = True
) -> str | None:
    """None when ``lo <= value <= hi`` (``hi`` None: no upper bound) and ``value`` is a whole number if
    ``integer``; else one line naming the control, the allowed range and the value typed."""
    allowed = (f"{lo:g} to {hi:g}" if hi is not None else f"at least {lo:g}") + (" (whole numbers)" if integer else "")
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"{label}: type a number, {allowed}."
    if integer and float(value) != int(value):
        return f"{label} must be a whole number, {allowed}; you typed {value:g}."
    if value < lo or (hi is not None and value > hi):
        return f"{label} must be {allowed}; you typed {value:g}. Nothing is computed until it is in range."
    return None
