"""``python -m ui.serve``: it is ``streamlit run app.py`` with the engine imported in a background thread."""

from __future__ import annotations

import sys
import threading


def test_serve_runs_streamlit_on_app_py_with_the_options_and_preloads(monkeypatch):
    import streamlit.web.cli as cli

    import ui.serve as serve

    seen, preloaded = {}, threading.Event()
    monkeypatch.setattr(sys, "argv", ["ui/serve.py"])
    monkeypatch.setattr(cli, "main", lambda: seen.setdefault("argv", list(sys.argv)))
    monkeypatch.setattr(serve, "preload", lambda modules=serve.PRELOAD, later=(): preloaded.set())
    serve.main(["--server.port", "1234", "--server.headless", "true"])
    assert seen["argv"] == ["streamlit", "run", str(serve.APP), "--server.port", "1234", "--server.headless", "true"]
    assert serve.APP.name == "app.py" and serve.APP.is_file()
    assert preloaded.wait(10)


def test_preload_imports_the_modules_and_stops_quietly_at_a_broken_one():
    import ui.serve as serve

    sys.modules.pop("colorsys", None)
    serve.preload(("colorsys", "no_such_module_here", "this_is_never_reached"))
    assert "colorsys" in sys.modules
    from ui.warmup import FIRST_PAGE_DRAWN

    FIRST_PAGE_DRAWN.set()
    serve.preload(serve.PRELOAD, serve.PRELOAD_LATER)  # the real lists import without error
    assert all(name in sys.modules for name in serve.PRELOAD + serve.PRELOAD_LATER)
