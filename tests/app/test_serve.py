"""``python -m ui.serve``: it is ``streamlit run app.py`` with the engine imported in a background thread; and the
server's settings in ``.streamlit/config.toml``."""

from __future__ import annotations

import sys
import threading

import pytest


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


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_config_toml_bounds_uploads_and_turns_off_deploy_stats_and_watcher():
    from pathlib import Path

    import tomllib

    from influence_core.data.datasets import MAX_NPZ_BYTES

    cfg = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] * 1024 * 1024 <= MAX_NPZ_BYTES
    assert cfg["server"]["fileWatcherType"] == "none" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False and cfg["client"]["toolbarMode"] == "minimal"
