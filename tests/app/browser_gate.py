"""Where Debian's chromium is, and what to do when it is missing: skip, or fail when REQUIRE_BROWSER=1 (CI); and the
helpers the browser test and the measurement scripts share (a free port, waiting until a page is idle)."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_or_skip(path: str = CHROMIUM) -> str:
    """Path of Debian's chromium; skip when it is missing, unless REQUIRE_BROWSER=1 (CI), then fail."""
    if os.path.exists(path):
        return path
    found = shutil.which("chromium")
    if found:
        return found
    message = f"Debian's chromium is not installed at {path} (apt-get install chromium); the browser test needs it"
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(message + " and REQUIRE_BROWSER=1 is set", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def idle(page, settle_ms: int = 150, timeout_ms: int = 600_000) -> None:
    """Wait ``settle_ms``, then until Streamlit's "running" status widget is gone."""
    page.wait_for_timeout(settle_ms)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=timeout_ms)
