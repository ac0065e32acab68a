"""Small AppTest helpers shared by the app test modules."""

from __future__ import annotations

import json


def ok(at):
    """The AppTest ``at`` after a run that raised nothing (fails with the exceptions' texts otherwise)."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at):
    """Texts of the ``st.error`` elements on the page."""
    return [e.value for e in at.error]


def tile_captions(at) -> list[str]:
    """The captions of the image thumbnails on the page (``figure.ie-tile`` in the ``st.html`` galleries of
    :func:`ui.figures.gallery_html`), in page order, unescaped."""
    import html
    import re

    return [
        html.unescape(c)
        for h in at.get("html")
        for c in re.findall(r'<figure class="ie-tile".*?<figcaption[^>]*>(.*?)</figcaption>', h.proto.body)
    ]


def specs(at):
    """The page's plotly charts as their JSON specs (dicts)."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def progress_bars(at):
    """The progress bars on the page."""
    return at.get("progress")


def run_removal(at):
    """Run a class removal with the ``logit`` sampler (and the random baseline) and one seed."""
    at.multiselect(key="rm_samplers").set_value(["logit"])
    at.slider(key="rm_seeds").set_value(1)
    at.button(key="rm_run").click()
    return ok(at.run())


def wine_page(app_page, wine_run, path):
    """The page ``path`` on the uploaded wine data of the ``wine_run`` fixture (conftest.py)."""
    run, payloads = wine_run
    at = app_page(path, run=run)
    at.session_state["npz_payloads"] = payloads
    return ok(at.run())
