"""One way for every page to survive an engine failure: show it as a readable error in the page and carry on.

A workshop server is shared by a whole class, so no exception from ``influence_core`` (a ``ValueError`` for bad
settings, a ``SolverError``, but also ``MemoryError``, ``TypeError``, ...) may end a page with a raw traceback.
Streamlit's own control flow (``st.stop``, ``st.rerun``) derives from ``BaseException`` and passes through. A
cancelled computation (:class:`influence_core.progress.Cancelled`, also a ``BaseException``) is not an error: the
page says it was cancelled, with a "Start again" button.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from influence_core import Cancelled

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
    return (
        f"unexpected {type(exc).__name__}{': ' + text if text else ''}. This is a bug or an unsupported input; "
        "the details are in the server log"
    )


class Outcome:
    """What :func:`reported` saw: ``failed`` is True when the block raised (the error is already on the page)."""

    failed: bool = False
    cancelled: bool = False  # the block was cancelled (then ``failed`` is True too)
    error: BaseException | None = None


CANCEL_NOTICE_SHOWN = "cancel_notice_shown"  # set by ui.components.page_header for the current run


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
    except Cancelled as exc:
        outcome.failed, outcome.cancelled, outcome.error = True, True, exc
        log.info("%s: %s", what, exc)
        if not st.session_state.get(CANCEL_NOTICE_SHOWN):  # else the page header already said so
            st.info(f"Cancelled: {exc}. Nothing half-done was kept.", icon="⏹️")
        from .state import clear_cancelled

        st.button(
            "Start again",
            key=f"restart_{abs(hash(what))}",
            on_click=clear_cancelled,
            help="Runs the cancelled computation again",
        )
    except Exception as exc:  # noqa: BLE001 - the point: nothing from the engine may reach the page raw
        outcome.failed, outcome.error = True, exc
        user_error = isinstance(exc, (ValueError, RuntimeError))  # the engine's own, written for users
        log.warning("%s: %s", what, readable(exc), exc_info=None if user_error else exc)
        st.error(f"{what}: {readable(exc)}")
        if then:
            st.info(then)
