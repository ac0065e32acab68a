"""Settings restored from the URL (a reload, a shared link) or from the session's copy (a page switch) never meet a
widget default (issue 23): a widget given ``default=`` / ``value=`` / ``index=`` whose key the page also set through
the Session State API makes Streamlit log "The widget with key ... was created with a default value but also had
its value set via the Session State API" (the Samplers page's ``smp_samplers`` did)."""

from __future__ import annotations

import pytest
from apptest_helpers import ok

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PAGES = {
    "samplers": "pages/1_Samplers.py",
    "influence": "pages/2_Influence.py",
    "removal": "pages/3_Class_removal.py",
    "faithfulness": "pages/4_Faithfulness.py",
    "explorer": "pages/6_Explorer.py",
}
DUPLICATE = "created with a default value but also had its value set via the Session State API"


@pytest.fixture
def duplicate_warnings(monkeypatch):
    """The texts of Streamlit's default-and-session-state warnings logged during the test (Streamlit logs the
    first one of a process only: the flag is reset here, so every test sees its own)."""
    from streamlit.elements.lib import policies

    seen: list[str] = []

    def record(message, *args, **kwargs):
        if DUPLICATE in str(message):
            seen.append(str(message) % args)

    monkeypatch.setattr(policies, "_shown_default_value_warning", False)
    monkeypatch.setattr(policies._LOGGER, "warning", record)
    return seen


def test_the_warning_is_caught_when_a_widget_has_both(duplicate_warnings, tmp_path):
    """The check can fail: a page that sets a key and gives its widget a default is caught."""
    from streamlit.testing.v1 import AppTest

    script = tmp_path / "both.py"
    script.write_text("import streamlit as st\nst.session_state['k'] = 5\nst.slider('k', 0, 10, 3, key='k')\n")
    ok(AppTest.from_file(str(script)).run())
    assert duplicate_warnings and "k" in duplicate_warnings[0]


@pytest.mark.parametrize("page", list(PAGES))
def test_settings_restored_from_the_url_meet_no_widget_default(app_page, duplicate_warnings, page):
    from ui.url_state import KEPT_KEY, encode

    first = ok(app_page(PAGES[page]).run())  # the page's settings, as it writes them into the URL
    kept = dict(first.session_state[KEPT_KEY])
    assert kept, f"{page} keeps no settings"
    assert not duplicate_warnings, duplicate_warnings

    at = app_page(PAGES[page])  # a new session opening that URL (a reload or a shared link)
    at.query_params.update({key: encode(value) for key, value in kept.items()})
    ok(at.run())
    assert not duplicate_warnings, duplicate_warnings
    for key, value in kept.items():
        assert at.session_state[key] == value, key  # every setting was restored from the URL


def test_a_page_switch_keeps_the_samplers_without_the_warning(app_page, duplicate_warnings):
    """Samplers chosen, another page visited (Streamlit forgets the widget), Samplers again: the choice is back."""
    at = ok(app_page("app.py").run())
    at.switch_page("pages/1_Samplers.py")
    ok(at.run())
    at.multiselect(key="smp_samplers").set_value(["random", "importance"])
    ok(at.run())
    at.switch_page("pages/7_Glossary.py")
    ok(at.run())
    at.switch_page("pages/1_Samplers.py")
    ok(at.run())
    assert at.multiselect(key="smp_samplers").value == ["random", "importance"]
    assert not duplicate_warnings, duplicate_warnings
