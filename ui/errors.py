"""One way for every page to survive an engine failure: show it as a readable error in the page and carry on.

A workshop server is shared by a whole class, so no exception from ``influence_core`` (a ``ValueError`` for bad
settings, a ``SolverError``, but also ``MemoryError``, ``TypeError``, ...) may end a page with a raw traceback.
Streamlit's own control flow (``st.stop``, ``st.rerun``) derives from ``BaseException`` and passes through.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

log = logging.getLogger("influence_explorer")

# Plain-words explanations of exception types whose own message says little to a user.
_HINTS = {
    MemoryError: "the server ran out of memory for this request; choose a smaller dataset, model or sample size",
    RecursionError: "the computation went too deep; choose simpler settings",
}


def readable(exc: BaseException) -> str:
    """One line for the page: the message for the engine's own errors (ValueError, RuntimeError: they are written
    for users), otherwise the exception type and a hint."""
    text = str(exc).strip()
    if isinstance(exc, (ValueError, RuntimeError)) and text:
        return text
    for kind, hint in _HINTS.items():
        if isinstance(exc, kind):
            return f"{hint} ({type(exc).__name__}{': ' + text if text else ''})"
    return (f"unexpected {type(exc).__name__}{': ' + text if text else ''}. This is a bug or an unsupported input; "
            "the details are in the server log")


class Outcome:
    """What :func:`reported` saw: ``failed`` is True when the block raised (the error is already on the page)."""

    failed: bool = False
    error: BaseException | None = None


@contextmanager
def reported(what: str, then: str | None = None) -> Iterator[Outcome]:
    """Run a block of engine work; any ``Exception`` becomes ``st.error(f"{what}: {readable(exc)}")`` (plus an
    optional ``st.info(then)``) and is logged with its traceback, and the page keeps running::

        with reported("Could not compute influence") as outcome:
            rows = influence_rows(...)
        if outcome.failed:
            st.stop()
    """
    outcome = Outcome()
    try:
        yield outcome
    except Exception as exc:  # noqa: BLE001 - the point: nothing from the engine may reach the page raw
        outcome.failed, outcome.error = True, exc
        user_error = isinstance(exc, (ValueError, RuntimeError))  # the engine's own, written for users
        log.warning("%s: %s", what, readable(exc), exc_info=None if user_error else exc)
        st.error(f"{what}: {readable(exc)}")
        if then:
            st.info(then)
