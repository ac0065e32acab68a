"""Page settings that survive page switches, reloads and shared links.

Streamlit forgets a widget's value when a page without that widget runs (a visit to another page), and a reload
starts a new session. So each page names its settings (:data:`PAGE_SETTINGS`: session-state key -> type) and calls
:func:`keep_settings` before drawing its widgets: a setting missing from the session is restored from this
session's own copy, else from the URL's query parameters (a reload or a shared link), else the widget's default
applies; then every setting present is copied back to the session's copy and written into the URL, together with
the model choice (:func:`ui.config.run_to_query`). The URL thus says what is shown, and opening it shows the same.

Encoding (:func:`encode` / :func:`decode`, pure): int, float, bool ("1"/"0"), str, and lists of str joined by
commas; a value that does not parse is ignored (a hand-edited URL never breaks a page).
"""

from __future__ import annotations

from typing import Any

KEPT_KEY = "kept_settings"

PAGE_SETTINGS: dict[str, dict[str, type]] = {
    "samplers": {
        "smp_space": str,
        "smp_method": str,
        "smp_colour": str,
        "smp_m": int,
        "smp_seed": int,
        "smp_samplers": list,
    },
    "influence": {
        "inf_mode": str,
        "inf_index": int,
        "inf_clicked": int,
        "inf_a": str,
        "inf_b": str,
        "inf_m": int,
        "inf_seed": int,
        "inf_solver": str,
        "inf_damping": float,
        "inf_k": int,
        "inf_full": bool,
        "inf_space": str,
        "inf_colour": str,
        "inf_nseeds": int,
        "inf_spread": bool,
    },
    "removal": {
        "rm_class": int,
        "rm_m": int,
        "rm_samplers": list,
        "rm_seeds": int,
        "rm_solver": str,
        "rm_damping": float,
        "rm_reference": bool,
        "rm_memory": bool,
    },
    "faithfulness": {
        "faith_study": str,
        "faith_samplers": list,
        "faith_budget": str,
        "faith_limit": float,
        "faith_limit_kind": str,
    },
    "lesson": {"lesson_step": str},
    "explorer": {
        "exp_space": str,
        "exp_method": str,
        "exp_colour": str,
        "exp_hessian": str,
        "exp_index_kind": str,
        "exp_index": int,
        "exp_k": int,
        "exp_m": int,
        "exp_seed": int,
    },
}


def choices(key: str) -> list | None:
    """The values a menu setting may take (a URL value outside them is ignored), or None for free values."""
    import influence_core as ic

    from .figures import COLOUR_OPTIONS

    samplers = ic.available_samplers()
    if key in ("smp_samplers", "rm_samplers", "faith_samplers", "inf_a", "inf_b"):
        return samplers
    fixed = {
        "smp_space": ["features", "logits"],
        "inf_space": ["features", "logits"],
        "exp_space": ["features", "logits"],
        "smp_method": ["pca", "umap"],
        "exp_method": ["pca", "umap"],
        "smp_colour": list(COLOUR_OPTIONS),
        "inf_colour": list(COLOUR_OPTIONS),
        "exp_colour": [*COLOUR_OPTIONS, "influence score", "self-influence"],
        "exp_index_kind": ["train", "test"],
        "exp_hessian": ["full data", *samplers],
        "inf_mode": ["click on the map", "by index", "misclassified"],
        "faith_budget": ["m", "solve_seconds", "peak_mb"],
    }
    if key in fixed:
        return fixed[key]
    if key in ("inf_solver", "rm_solver"):
        return ic.available_solvers()
    if key == "faith_study":
        from .faithfulness import available_studies

        return available_studies()
    if key == "lesson_step":
        from .lesson import STEP_KEYS

        return list(STEP_KEYS)
    return None


def valid(key: str, value: Any) -> bool:
    """Whether ``value`` (decoded) is an allowed value of the setting ``key`` (see :func:`choices`)."""
    allowed = choices(key)
    if allowed is None:
        return True
    if isinstance(value, list):
        return all(v in allowed for v in value)
    return value in allowed


def encode(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def decode(text: str, kind: type) -> Any:
    """The value of type ``kind`` written as ``text`` by :func:`encode`, or None when it does not parse."""
    try:
        if kind is bool:
            return {"1": True, "0": False, "true": True, "false": False}.get(str(text).lower())
        if kind is list:
            return [part for part in str(text).split(",") if part]
        if kind is int:
            return int(text)
        if kind is float:
            value = float(text)
            return value if value == value and abs(value) != float("inf") else None
        return str(text)
    except (TypeError, ValueError):
        return None


def restored(page: str, session: dict, kept: dict, query: dict) -> dict[str, Any]:
    """The settings of ``page`` to put into the session: those missing from ``session``, from ``kept`` (this
    session's copy) first, else from ``query`` (the URL)."""
    out = {}
    for key, kind in PAGE_SETTINGS[page].items():
        if key in session:
            continue
        if key in kept:
            out[key] = kept[key]
        elif key in query:
            value = decode(query[key], kind)
            if value is not None and valid(key, value):
                out[key] = value
    return out


def keep_settings(page: str) -> None:
    """Restore ``page``'s settings missing from the session (see module doc), then copy the present ones to the
    session's copy and the URL, with the model choice. Call before the page's widgets."""
    import streamlit as st

    from .config import run_to_query
    from .state import current_run

    kept = st.session_state.setdefault(KEPT_KEY, {})
    for key, value in restored(page, dict(st.session_state), kept, st.query_params.to_dict()).items():
        st.session_state[key] = value
    publish_settings(page, run_to_query(current_run()))


def publish_settings(page: str, base: dict[str, str] | None = None) -> None:
    """Copy ``page``'s settings present in the session to the session's copy and into the URL (after ``base``,
    the model choice, when given). Call again after widgets whose values the page changes in code."""
    import streamlit as st

    kept = st.session_state.setdefault(KEPT_KEY, {})
    params = dict(base) if base is not None else {k: v for k, v in st.query_params.to_dict().items()}
    for key in PAGE_SETTINGS[page]:
        if key in st.session_state:
            value = st.session_state[key]
            kept[key] = value
            params[key] = encode(value)
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)
