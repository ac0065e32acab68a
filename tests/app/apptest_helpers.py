"""Small AppTest helpers shared by the app test modules."""

from __future__ import annotations


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
