"""Small AppTest helpers shared by the app test modules."""

from __future__ import annotations


def ok(at):
    """The AppTest ``at`` after a run that raised nothing (fails with the exceptions' texts otherwise)."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at):
    """Texts of the ``st.error`` elements on the page."""
    return [e.value for e in at.error]
