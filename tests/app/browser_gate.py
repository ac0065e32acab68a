"""Where Debian's chromium is, and what to do when it is missing: skip, or fail when REQUIRE_BROWSER=1 (CI); and the
helpers the browser test and the measurement scripts share (a free port, waiting until a page is idle)."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


_RUN_COUNTER = """() => {
  if (window.__ieRunsDone === undefined) {
    window.__ieRunsDone = 0;
    new MutationObserver(records => {
      for (const r of records)
        if (r.target.getAttribute('data-test-script-state') === 'notRunning') window.__ieRunsDone++;
    }).observe(document.body, {attributes: true, subtree: true, attributeFilter: ['data-test-script-state']});
  }
  return window.__ieRunsDone;
}"""


def runs_done(page) -> int:
    """How many script runs of this page have finished since the counter was installed (the first call installs
    it): Streamlit sets ``data-test-script-state`` on ``stApp`` to ``notRunning`` at the end of every run, and a
    MutationObserver counts those transitions, so a run that starts and ends between two polls is not missed."""
    return page.evaluate(_RUN_COUNTER)


def after_run(page, before: int, timeout_ms: int = 600_000) -> None:
    """Wait until a script run has finished since ``runs_done(page)`` returned ``before``, the "running" status
    widget is gone and the browser has drawn two more frames: the page has settled, with no fixed wait."""
    page.wait_for_function("n => window.__ieRunsDone > n", arg=before, timeout=timeout_ms)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=timeout_ms)
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
