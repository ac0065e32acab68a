"""Where Debian's chromium is, and what to do when it is missing: skip, or fail when REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import os
import shutil

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
