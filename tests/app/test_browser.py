"""End-to-end test in headless Chromium (Debian's chromium via pytest-playwright): start the real app, walk the
default flow, make a box selection on the influence map, and save screenshots of every page.

Skips when /usr/bin/chromium is missing, unless REQUIRE_BROWSER=1 (CI), where it fails (see conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Screenshots always go to test-artifacts/; the README's copies in docs/screenshots/ are refreshed only on request
# (UPDATE_SCREENSHOTS=1), so a test run never dirties the work tree.
SHOTS = [ROOT / "test-artifacts"] + ([ROOT / "docs" / "screenshots"] if os.environ.get("UPDATE_SCREENSHOTS") else [])
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app_url(browser_type_launch_args, tmp_path):
    """``streamlit run app.py`` on a free port; yields its URL once /_stcore/health answers ok."""
    port = free_port()
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        out = (tmp_path / "streamlit.log").read_text()
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts" / "streamlit.log").write_text(out)


def shot(page, name: str) -> None:
    for folder in SHOTS:
        folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let plotly finish drawing
    path = SHOTS[0] / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    for folder in SHOTS[1:]:
        shutil.copy(path, folder / f"{name}.png")


def wait_idle(page) -> None:
    """Wait until Streamlit's script run is over (no 'Running...' status widget)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=90_000)


class Steps:
    """Wall time of each step, printed (pytest -s) and written to test-artifacts/browser_steps.txt (not asserted)."""

    def __init__(self):
        self.t = time.perf_counter()
        self.lines = []

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.lines.append(f"{name}: {now - self.t:.1f} s")
        print(self.lines[-1])
        self.t = now
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts" / "browser_steps.txt").write_text("\n".join(self.lines) + "\n")


def test_default_flow_box_selection_and_screenshots(page, app_url):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    step = Steps()
    page.set_default_timeout(90_000)
    page.set_viewport_size({"width": 1500, "height": 1800})
    page.goto(app_url)
    page.get_by_text("Press Train").wait_for()

    # Home: a small configuration of the default digits MLP, trained with the progress bar.
    step("app loaded")
    page.get_by_label("MLP hidden width").fill("12")
    page.get_by_label("Epochs (Adam; logistic regression uses L-BFGS only)").fill("8")
    page.get_by_role("button", name="Train").click()
    page.get_by_text("Confusion matrix", exact=False).first.wait_for()
    page.get_by_text("Test accuracy").wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stImage"]').count() >= 20
    shot(page, "home")
    step("home: trained")

    # Samplers page: three WebGL maps with the subsets highlighted.
    page.get_by_role("link", name="Samplers").first.click()
    page.get_by_text("How representative is each sample?").wait_for()
    wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 5
    assert page.locator(".js-plotly-plot .gl-container canvas").count() >= 3  # scattergl draws on WebGL
    shot(page, "samplers")
    step("samplers page")

    # Influence page: pick a test point by index, see the thumbnails.
    page.get_by_role("link", name="Influence").first.click()
    page.get_by_text("Top 8 helpful").first.wait_for()
    wait_idle(page)
    step("influence page (first solves)")
    page.get_by_text("by index", exact=True).click()
    index = page.get_by_label("Test index")
    index.fill("5")
    index.press("Enter")
    page.get_by_text("Test point #5").wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stImage"]').count() >= 1 + 3 * 2 * 8
    shot(page, "influence")
    step("influence: test point #5")

    # Box selection on the map -> linked table with scores and a CSV download.
    plot = page.locator(".st-key-inf_map .js-plotly-plot")
    summary = page.get_by_text("selected training points")
    for attempt in range(3):  # the drag can land while plotly is still redrawing after the last rerun: retry
        wait_idle(page)
        plot.scroll_into_view_if_needed()
        plot.hover()
        page.locator('.st-key-inf_map .modebar-btn[data-val="select"]').click()
        area = plot.locator(".nsewdrag").first.bounding_box()
        x0, y0 = area["x"] + area["width"] * 0.25, area["y"] + area["height"] * 0.25
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + area["width"] * 0.5, y0 + area["height"] * 0.5, steps=12)
        page.mouse.up()
        try:
            summary.wait_for(timeout=20_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    wait_idle(page)
    n_selected = int(summary.inner_text().split()[0])
    assert n_selected >= 5, f"the box should hold many training points, the table lists {n_selected}"
    assert page.get_by_role("button", name="Download the selection as CSV").is_visible()
    page.get_by_text("selected training points").scroll_into_view_if_needed()
    shot(page, "influence_selection")
    step(f"influence: box selection ({n_selected} rows)")

    # Class removal page: one run per sampler, results and downloads.
    page.get_by_role("link", name="Class removal").first.click()
    page.get_by_role("button", name="Run class removal").click()
    page.get_by_text("Retrained-from-scratch reference").wait_for()
    wait_idle(page)
    assert page.get_by_role("button", name="Download the runs as CSV").is_visible()
    shot(page, "class_removal")
    step("class removal: 3 samplers x 3 seeds + retrained reference")
