"""End-to-end test in headless Chromium (Debian's chromium via pytest-playwright): start the real app, walk the
default flow, make a box selection on the influence map, and save screenshots of every page; then the defects of
issue 14 in a real browser: class removal pressed twice and from a second browser context (item 1), the map's
state colours (item 3), the removal charts' legends and α = 1 label (item 5), and an upload over the limit (10);
and issue 12's lesson flow, Explorer slice and PNG export, two sessions at once, and cancelling a long training.

Skips when /usr/bin/chromium is missing, unless REQUIRE_BROWSER=1 (CI), where it fails (see conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from browser_gate import free_port  # tests/app is on sys.path (conftest)

from ui.colours import BAD, CLASS_PALETTE, GOOD

ROOT = Path(__file__).resolve().parents[2]
# Screenshots always go to test-artifacts/; the README's copies in docs/screenshots/ are refreshed only on request
# (UPDATE_SCREENSHOTS=1), so a test run never dirties the work tree.
SHOTS = [ROOT / "test-artifacts"] + ([ROOT / "docs" / "screenshots"] if os.environ.get("UPDATE_SCREENSHOTS") else [])
pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(browser_type_launch_args, tmp_path_factory):
    """``python -m ui.serve`` (``streamlit run app.py`` as ``make app`` starts it) on a free port (one server for
    the module: the tests share its caches, as a class shares a workshop server); yields its URL once
    /_stcore/health answers ok."""
    tmp_path = tmp_path_factory.mktemp("streamlit")
    port = free_port()
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ui.serve",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        # the server as make app starts it: its jobs on a local Dask cluster (the app tests' in-process setting is
        # for AppTest only)
        env={
            **{k: v for k, v in os.environ.items() if k != "INFLUENCE_EXPLORER_WORKERS"},
            "PYTHONPATH": str(ROOT),
            "INFLUENCE_EXPLORER_WARM_UP": "0",
        },
    )
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


def rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i : i + 2], 16) for i in (0, 2, 4)))


def legend_colours(page, scope: str) -> dict[str, str]:
    """{legend entry text: its symbol's colour (fill, or stroke for open symbols)} of the plotly chart in scope."""
    return page.evaluate(
        """(scope) => {
        const out = {};
        document.querySelectorAll(scope + ' .legend .traces').forEach(t => {
            const name = t.querySelector('.legendtext').textContent;
            const p = t.querySelector('.legendpoints path');
            const s = getComputedStyle(p);
            out[name] = (s.fill && s.fill !== 'none' && !s.fill.startsWith('rgba(0, 0, 0, 0')) ? s.fill : s.stroke;
        });
        return out;
    }""",
        scope,
    )


def shot(page, name: str, docs: bool = True) -> None:
    """A screenshot in test-artifacts/ (and docs/screenshots/ with UPDATE_SCREENSHOTS=1, unless ``docs`` is False:
    the whole-page views for checking the layout stay out of the repository)."""
    for folder in SHOTS:
        folder.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # let plotly finish drawing
    path = SHOTS[0] / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    for folder in SHOTS[1:] if docs else ():
        shutil.copy(path, folder / f"{name}.png")


def wait_idle(page) -> None:
    """Wait until Streamlit's script run is over (no 'Running...' status widget)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=90_000)
    # and no element left over from the previous run (Streamlit marks them data-stale until the run replaces them)
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')", timeout=90_000)


def box_select(page, scope: str, until, start: float = 0.3, size: float = 0.4) -> None:
    """Drag a box with the box-select tool of the plotly chart in ``scope`` (from ``start`` to ``start + size`` of
    its plot area, both ways) until ``until`` (a locator) appears; the drag can land while plotly is still
    redrawing after the last rerun, so it is tried up to three times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    plot = page.locator(f"{scope} .js-plotly-plot")
    for attempt in range(3):
        wait_idle(page)
        plot.scroll_into_view_if_needed()
        plot.hover()
        page.locator(f'{scope} .modebar-btn[data-val="select"]').click()
        area = plot.locator(".nsewdrag").first.bounding_box()
        x0, y0 = area["x"] + area["width"] * start, area["y"] + area["height"] * start
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + area["width"] * size, y0 + area["height"] * size, steps=12)
        page.mouse.up()
        try:
            until.wait_for(timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


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
    step = Steps()
    page.set_default_timeout(90_000)
    page.set_viewport_size({"width": 1500, "height": 1800})
    page.goto(app_url)
    page.get_by_text("Press Train").wait_for()
    assert page.locator('[data-testid="stSidebarNav"]').get_by_text("Home", exact=True).is_visible()

    # Home: a small configuration of the default digits MLP, trained with the progress bar.
    step("app loaded")
    page.get_by_label("MLP hidden width", exact=True).fill("12")
    page.get_by_label("Epochs (Adam; logistic regression uses L-BFGS only)", exact=True).fill("8")
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("Confusion matrix", exact=False).first.wait_for()
    page.get_by_text("Test accuracy").wait_for()
    wait_idle(page)
    assert page.locator("figure.ie-tile").count() >= 20
    shot(page, "home")
    step("home: trained")

    # Samplers page: three maps (SVG for digits' 1,797 points) with the subsets highlighted.
    page.get_by_role("link", name="Samplers").first.click()
    page.get_by_text("How representative is each sample?").wait_for()
    wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 5
    assert page.locator(".js-plotly-plot .scatterlayer .point").count() >= 3 * 1437  # every training point, 3 maps
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
    assert page.locator("figure.ie-tile").count() >= 1 + 3 * 2 * 8
    # Item 3: the map's state markers are drawn in the state colours, none of which is a class colour.
    page.locator(".st-key-inf_map .legend .traces").first.wait_for()  # plotly has drawn the map's legend
    legend = legend_colours(page, ".st-key-inf_map")
    assert legend["test correct"] == rgb(GOOD) and legend["test wrong"] == rgb(BAD), legend
    assert legend["top helpful (sampler A)"] == rgb(GOOD) and legend["top harmful (sampler A)"] == rgb(BAD)
    classes = {rgb(c) for c in CLASS_PALETTE}
    assert all(legend[f"train {c}"] in classes for c in range(10))
    assert not {legend[k] for k in legend if not k.startswith("train ")} & classes
    shot(page, "influence")
    step("influence: test point #5")

    # Box selection on the map -> linked table with scores and a CSV download.
    summary = page.get_by_text("selected training points")
    box_select(page, ".st-key-inf_map", summary, start=0.25, size=0.5)
    wait_idle(page)
    n_selected = int(summary.inner_text().split()[0])
    assert n_selected >= 5, f"the box should hold many training points, the table lists {n_selected}"
    page.get_by_role("button", name="Download the selection as CSV").wait_for()
    page.get_by_text("selected training points").scroll_into_view_if_needed()
    shot(page, "influence_selection")
    step(f"influence: box selection ({n_selected} rows)")

    # Class removal page: one run per sampler, results and downloads (the screenshot: the next test).
    page.get_by_role("link", name="Class removal").first.click()
    run_removal_and_wait(page)
    step("class removal: 3 samplers x 3 seeds + retrained reference")


def run_removal_and_wait(page) -> None:
    page.get_by_role("button", name="Run class removal").click()
    page.wait_for_timeout(700)
    wait_idle(page)
    page.get_by_role("button", name="Download the runs as CSV").wait_for()
    page.get_by_text("Reference F1").first.wait_for()
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()
    assert page.get_by_text("Class removal failed").count() == 0
    page.get_by_role("button", name="Download the runs as CSV").wait_for()


def test_removal_twice_two_sessions_charts_and_upload_limit(browser, app_url, tmp_path):
    """Items 1, 5 and 10 of issue 14 in a real browser, on the server (and caches) of the first test."""
    from urllib.parse import urlencode

    from ui.config import ModelConfig, RunConfig, run_to_query

    step = Steps()
    query = urlencode(run_to_query(RunConfig(model=ModelConfig(hidden=12, epochs=8))))  # the first test's model
    pages = []
    for _ in range(2):  # two browser contexts = two sessions of one server
        context = browser.new_context(viewport={"width": 1500, "height": 1800})
        page = context.new_page()
        page.set_default_timeout(120_000)
        page.goto(f"{app_url}/?{query}")  # the model choice comes from the URL (a reload keeps it)
        page.get_by_text("Test accuracy").wait_for()
        assert "mlp on digits" in page.locator("h3").filter(has_text="Trained model").inner_text()
        page.get_by_role("link", name="Class removal").first.click()
        page.get_by_role("button", name="Run class removal").wait_for()
        wait_idle(page)
        pages.append(page)
    step("two sessions open")

    # Item 1: the settings the first test ran are cached; pressing Run (twice) and in a second session shows them.
    for page in pages:
        run_removal_and_wait(page)
        run_removal_and_wait(page)
    step("class removal pressed twice in each of two sessions")

    # Item 5: the α = 1 label sits on its line; the per-class chart keeps every class tick, the legend below.
    page = pages[0]
    geometry = page.evaluate("""() => {
        const path = document.querySelector('.st-key-rm_path .js-plotly-plot');
        const line = path.querySelector('.shapelayer path').getBoundingClientRect();
        const label = [...path.querySelectorAll('.annotation')].find(a => a.textContent.includes('α = 1'))
            .getBoundingClientRect();
        const bars = document.querySelector('.st-key-rm_classes .js-plotly-plot');
        const plot = bars.querySelector('.nsewdrag').getBoundingClientRect();
        const legend = bars.querySelector('.legend').getBoundingClientRect();
        return {line: line.x, label: label.x, ticks: bars.querySelectorAll('.xtick').length,
                plotBottom: plot.bottom, legendTop: legend.top};
    }""")
    assert abs(geometry["label"] - geometry["line"]) < 30, geometry
    assert geometry["ticks"] == 10 and geometry["legendTop"] >= geometry["plotBottom"], geometry
    legend = legend_colours(page, ".st-key-rm_path")
    assert len(set(legend.values())) == len(legend) == 3, legend  # one colour per sampler
    assert legend_colours(page, ".st-key-rm_classes")["logit (best α)"] == legend["logit"]
    shot(page, "class_removal")
    step("class removal charts checked")

    # Item 10: a file over the upload limit is named as such, with the limit.
    page = pages[1]
    page.get_by_role("link", name="Home").first.click()
    page.get_by_text("Data and model").wait_for()
    wait_idle(page)
    big = tmp_path / "big.npz"
    big.write_bytes(b"\0" * (26 * 1024 * 1024))
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="upload a .npz file").click()
    page.locator('input[type="file"]').set_input_files(str(big))
    page.get_by_text("or smaller.", exact=False).first.wait_for()  # the browser refuses the file itself
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("over the 25 MB upload limit", exact=False).wait_for()
    wait_idle(page)
    assert "mlp on digits" in page.locator("h3").filter(has_text="Trained model").inner_text()
    page.get_by_text("over the 25 MB upload limit", exact=False).scroll_into_view_if_needed()
    shot(page, "upload_limit")
    step("upload over the limit refused with the limit named")


def test_lesson_flow_explorer_slice_and_png_export(browser, app_url):
    """Issue 12 parts 4-6 in a real browser: walk the six lesson steps (one click each; screenshots), follow step 1's
    link to the Influence page set up for the lesson's test point, keep a box selection as a named slice on the
    Explorer page, and find plotly's PNG export button on the Faithfulness page's charts."""
    from urllib.parse import urlencode

    from playwright.sync_api import expect as pw_expect

    from ui.config import ModelConfig, RunConfig, run_to_query
    from ui.lesson import BUTTON_LABELS, STEPS

    step = Steps()
    query = urlencode(run_to_query(RunConfig(model=ModelConfig(hidden=12, epochs=8))))  # the first test's model
    context = browser.new_context(viewport={"width": 1500, "height": 1800})
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(f"{app_url}/?{query}")
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Lesson", exact=True).click()
    page.get_by_text("to start", exact=False).wait_for()
    wait_idle(page)
    expect = {
        "score": "Top 5 helpful",
        "seeds": "top-10 shared by two seeds",
        "map": "Every training point equally likely",
        "removal": "The model retrained from scratch without it",
        "lds": "No committed LDS study",
        "mislabel": "When does self-influence win?",
    }  # hidden 12: no study
    for i, s in enumerate(STEPS, start=1):
        page.get_by_role("button", name=BUTTON_LABELS[s.key], exact=True).click()
        page.get_by_role("heading", name=s.title).wait_for()
        page.get_by_text(expect[s.key], exact=False).first.wait_for()  # this step's own content
        wait_idle(page)
        # The previous step's elements stay on screen (stale) until the new run has drawn; once it has, one exercise.
        pw_expect(page.get_by_text("Exercise.", exact=False)).to_have_count(1, timeout=120_000)
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.locator('[data-testid="stAlertContentError"]').count() == 0, page.locator(
            '[data-testid="stAlertContentError"]'
        ).first.inner_text()
        shot(page, f"lesson_{i}_{s.key}")
        step(f"lesson step {i}: {s.key}")

    # Step 1 again, then its link: the Influence page opens on the lesson's test point.
    page.get_by_role("button", name=BUTTON_LABELS[STEPS[0].key], exact=True).click()
    page.get_by_text("Top 5 helpful").wait_for()
    wait_idle(page)
    test_caption = page.get_by_text("Test point #", exact=False).first.inner_text()
    t = int(test_caption.split("#")[1].split()[0].strip("*"))
    page.get_by_role("link", name=STEPS[0].page_label).click()
    page.get_by_text(f"Test point #{t}").wait_for()
    wait_idle(page)
    step(f"lesson step 1 -> Influence page on test point #{t}")

    # Explorer: a click on a training point shows its nearest neighbours (the map is coloured by self-influence,
    # as lesson step 6 set it: trace 0 holds every training point, row = point index).
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Explorer", exact=True).click()
    page.get_by_text("No slices yet", exact=False).wait_for()
    wait_idle(page)
    row = 100
    for attempt in range(3):
        page.locator(".st-key-exp_map .js-plotly-plot").scroll_into_view_if_needed()
        wait_idle(page)
        xy = page.evaluate(
            """(row) => {
            const gd = document.querySelector('.st-key-exp_map .js-plotly-plot');
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
            const tr = gd._fullData[0];
            return [box.left + xa._offset + xa.l2p(tr.x[row]), box.top + ya._offset + ya.l2p(tr.y[row])];
        }""",
            row,
        )
        page.mouse.click(xy[0], xy[1])
        try:
            page.get_by_text(f"Nearest training points to training point #{row} ", exact=False).wait_for(timeout=20_000)
            break
        except Exception:
            if attempt == 2:
                raise
    wait_idle(page)
    step(f"explorer: clicked training point #{row}, its neighbours shown")

    # Explorer: a box selection kept as a named slice, compared across samplers.
    keep = page.get_by_role("button", name="Keep as a slice")
    box_select(page, ".st-key-exp_map", keep)
    wait_idle(page)
    page.get_by_label("Name for the", exact=False).fill("my slice")
    page.get_by_label("Name for the", exact=False).press("Enter")
    wait_idle(page)
    keep.click()
    page.get_by_text("Class mix of the slices").first.wait_for()
    wait_idle(page)
    page.get_by_text("slice influence is the predicted increase", exact=False).wait_for()
    page.get_by_role("button", name="Download this table as CSV").nth(1).wait_for()  # neighbours, slices
    page.get_by_text("slice influence is the predicted increase", exact=False).scroll_into_view_if_needed()
    shot(page, "explorer_slices")
    step("explorer: box selection kept as a slice and compared")

    # Faithfulness: the committed study; every chart's toolbar has plotly's PNG export.
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Faithfulness", exact=True).click()
    page.get_by_text("For my budget, which sampler?").wait_for()
    wait_idle(page)
    charts = page.locator(".js-plotly-plot")
    for i in range(3):  # LDS against m, against solve time, against peak memory (drawn one after the other)
        charts.nth(i).scroll_into_view_if_needed()
        charts.nth(i).wait_for()
    for i in range(charts.count()):
        charts.nth(i).scroll_into_view_if_needed()
        charts.nth(i).hover()
        assert charts.nth(i).locator('.modebar-btn[data-title^="Download plot"]').count() == 1
    page.get_by_text("LDS against m", exact=False).first.scroll_into_view_if_needed()
    shot(page, "faithfulness")
    step("faithfulness page: PNG export on every chart")
    context.close()


def test_two_sessions_compute_influence_on_different_data_at_once(browser, app_url):
    """Issue 12 part 3: two browser contexts (two sessions of one server) on different data (digits MLP and MNIST-1D
    MLP) compute influence at the same time: neither fails (before the fix one showed "Could not compute influence:
    Trying to access a forward AD level with an invalid index"), and each sees its own model and choices."""
    from urllib.parse import urlencode

    from ui.config import DataConfig, ModelConfig, RunConfig, run_to_query

    runs = [
        RunConfig(model=ModelConfig(hidden=10, epochs=4)),
        RunConfig(data=DataConfig(name="mnist1d", num_samples=400), model=ModelConfig(hidden=10, epochs=4)),
    ]
    labels = ["mlp on digits", "mlp on mnist1d (n=400)"]
    pages = []
    for run in runs:
        context = browser.new_context(viewport={"width": 1500, "height": 1600})
        page = context.new_page()
        page.set_default_timeout(180_000)
        page.goto(f"{app_url}/?{urlencode(run_to_query(run))}")
        page.get_by_text("Data and model").wait_for()
        wait_idle(page)
        pages.append(page)
    for page in pages:  # both sessions open the Influence page at once: each trains its model, then computes
        page.get_by_role("link", name="Influence").first.click()
    for page in pages:
        page.get_by_text("Top 8 helpful").first.wait_for()
        wait_idle(page)
    for page in pages:  # both change the test point at once: new solves and scoring in both sessions
        page.get_by_text("by index", exact=True).click()
    for page in pages:
        wait_idle(page)
    for page in pages:
        box = page.get_by_label("Test index", exact=True)
        box.fill("7")
        box.press("Enter")
    for page, label in zip(pages, labels):
        page.get_by_text("Test point #7").first.wait_for()
        wait_idle(page)
        assert page.get_by_text("Could not compute influence").count() == 0
        assert page.locator('[data-testid="stException"]').count() == 0
        assert label in page.get_by_text("Model: ").first.inner_text()  # its own model, not the other's
    shot(pages[1], "two_sessions_mnist1d")
    for page in pages:
        page.context.close()


def test_cancel_a_long_training_then_train_again(page, app_url):
    """Issue 12 part 2: a long training shows its progress bar and a Cancel button; a click stops it, the page says
    so, nothing is stored, and the next request trains."""
    from ui import artifacts
    from ui.config import ModelConfig, RunConfig

    step = Steps()
    page.set_default_timeout(90_000)
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(app_url)
    page.get_by_text("Data and model").wait_for()
    wait_idle(page)
    page.get_by_label("MLP hidden width", exact=True).fill("13")
    page.get_by_label("Epochs (Adam; logistic regression uses L-BFGS only)", exact=True).fill("400")
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("Training mlp on digits: epoch").first.wait_for()  # the bar says what it is doing
    step("long training started")
    page.get_by_role("button", name="Cancel", exact=True).scroll_into_view_if_needed()
    for folder in SHOTS:
        folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS[0] / "training_cancel.png"))  # the bar and its Cancel button (viewport)
    for folder in SHOTS[1:]:
        shutil.copy(SHOTS[0] / "training_cancel.png", folder / "training_cancel.png")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_text("Cancelled: Training mlp on digits").wait_for()
    step("cancelled (click to the page saying so)")
    wait_idle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    long_run = RunConfig(model=ModelConfig(hidden=13, epochs=400))
    assert not artifacts.is_stored(artifacts.MODEL_KIND, long_run.cache_key())  # the server's disk cache (same dir)
    page.get_by_label("Epochs (Adam; logistic regression uses L-BFGS only)", exact=True).fill("6")
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text("Test accuracy").wait_for()
    wait_idle(page)
    assert "mlp on digits" in page.locator("h3").filter(has_text="Trained model").inner_text()
    assert artifacts.is_stored(artifacts.MODEL_KIND, RunConfig(model=ModelConfig(hidden=13, epochs=6)).cache_key())
    step("trained again after the cancel")


PROJECTOR_SIZES = ((1024, 768), (1366, 768))

TRUNCATED_BUTTONS = """() => [...document.querySelectorAll('.stButton button, [data-testid="stPageLink"] a')]
    .filter(b => [...b.querySelectorAll('p, div, span')].some(e => e.scrollWidth > e.clientWidth + 1))
    .map(b => b.innerText)"""

TITLES_UNDER_TOOLBAR = """() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => {
    const t = p.querySelector('.gtitle'), m = p.querySelector('.modebar');
    if (!t || !m) return false;
    const a = t.getBoundingClientRect(), b = m.getBoundingClientRect();
    return b.width > 0 && a.right > b.left && a.left < b.right && a.bottom > b.top && a.top < b.bottom;
}).length"""


TABLES_OVERFLOWING = """() => {
    const out = [];
    const shown = el => el.getBoundingClientRect().width > 0;  // not in a closed expander or another tab
    const name = el => [...el.querySelectorAll('[role="columnheader"], th')].map(h => h.innerText.trim())
        .filter(t => t).join(' | ');
    document.querySelectorAll('[data-testid="stDataFrame"]').forEach(el => {
        const s = el.querySelector('.dvn-scroller');  // glide grid's scroller: wider content scrolls sideways
        if (shown(el) && s && s.scrollWidth > s.clientWidth + 1)
            out.push(`dataframe [${name(el)}]: ${s.scrollWidth} px in ${s.clientWidth} px`);
    });
    document.querySelectorAll('[data-testid="stTable"]').forEach(el => {
        const t = el.querySelector('table');
        const w = t ? t.getBoundingClientRect().width : 0, c = el.getBoundingClientRect().width;
        if (shown(el) && w > c + 1) out.push(`table [${name(el)}]: ${Math.round(w)} px in ${Math.round(c)} px`);
    });
    return out;
}"""


LEGENDS_OVER_AXIS_TITLES = """() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => {
    const legend = p.querySelector('.legend');
    if (!legend || legend.getBoundingClientRect().width === 0) return false;
    const a = legend.getBoundingClientRect();
    return [...p.querySelectorAll('.xtitle, .ytitle')].some(t => {
        const b = t.getBoundingClientRect();
        return b.width > 0 && a.right > b.left && a.left < b.right && a.bottom > b.top && a.top < b.bottom;
    });
}).map(p => (p.querySelector('.gtitle') || {textContent: '(untitled chart)'}).textContent)"""

HIDDEN_CHOICES = """() => [...document.querySelectorAll('[data-testid="stMultiSelectTagsContainer"]')]
    .filter(c => c.getBoundingClientRect().width > 0 && c.scrollWidth > c.clientWidth + 1)
    .map(c => c.closest('[data-testid="stMultiSelect"]').querySelector('label').innerText)"""


def fits_the_page(page, where: str, width: int) -> None:
    """Every button and page link shows its whole label, every st.dataframe / st.table shown fits the page's width
    (no column scrolled out of view), every multiselect shows all its chosen values (none scrolled away), and no
    chart's legend covers an axis title."""
    truncated = page.evaluate(TRUNCATED_BUTTONS)
    assert truncated == [], f"{where} at {width} px: labels cut: {truncated}"
    overflowing = page.evaluate(TABLES_OVERFLOWING)
    assert overflowing == [], f"{where} at {width} px: tables wider than the page: {overflowing}"
    hidden = page.evaluate(HIDDEN_CHOICES)
    assert hidden == [], f"{where} at {width} px: multiselects hiding chosen values: {hidden}"
    covered = page.evaluate(LEGENDS_OVER_AXIS_TITLES)
    assert covered == [], f"{where} at {width} px: legends over an axis title: {covered}"


SIGNAL_PANEL_WIDTHS = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .filter(gd => gd.getBoundingClientRect().width > 0 && (gd.data || []).length
        && String(gd.data[0].hovertemplate || '').startsWith('position'))
    .map(gd => Math.min(...Object.keys(gd._fullLayout).filter(k => /^xaxis[0-9]*$/.test(k))
        .map(k => gd._fullLayout[k]._length)))"""


def at_projector_sizes(page, name: str, check) -> None:
    """Screenshots ``projector_<w>_<name>`` at each projector size (what the class sees), ``check(width)`` at each,
    and the whole page at the narrowest size (``_whole``, not copied to docs/): one page, resized, not reloaded."""
    for width, height in PROJECTOR_SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(400)
        page.mouse.move(0, height - 1)  # no tooltip in the picture
        check(width)
        shot(page, f"projector_{width}_{name}")
    width = PROJECTOR_SIZES[0][0]
    page.set_viewport_size({"width": width, "height": 2400})
    shot(page, f"projector_{width}_{name}_whole", docs=False)


def test_projector_sizes_lesson_and_pages(browser, app_url):
    """Issue 23 item 6: every page and lesson step at both projector sizes (screenshots ``projector_<w>_<page>``),
    with no truncated lesson button, no chart title under plotly's toolbar and no table wider than the page (the
    Explorer with a slice kept, so its slice tables are shown); then the Influence page on MNIST-1D, whose
    thumbnails are line charts of at least 100 px a panel."""
    from urllib.parse import urlencode

    from ui.config import DEFAULT_RUN, DataConfig, ModelConfig, RunConfig, run_to_query
    from ui.lesson import BUTTON_LABELS, STEPS

    query = urlencode(run_to_query(DEFAULT_RUN))  # the teacher's model: its committed studies are shown
    width, height = PROJECTOR_SIZES[0]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(300_000)
    page.goto(f"{app_url}/?{query}")
    page.get_by_text("Data and model").wait_for()
    wait_idle(page)
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Lesson", exact=True).click()  # the lesson trains the model of the URL if needed
    page.get_by_text("to start", exact=False).wait_for()
    wait_idle(page)

    def no_truncated_button(w, name="Lesson"):
        fits_the_page(page, name, w)  # buttons and links whole, tables and multiselects within the page

    no_truncated_button(width)
    for i, s in enumerate(STEPS, start=1):
        page.set_viewport_size({"width": width, "height": height})
        page.get_by_role("button", name=BUTTON_LABELS[s.key], exact=True).click()
        page.get_by_role("heading", name=s.title).wait_for()
        page.get_by_text("Top 5 helpful" if s.key == "score" else "What the numbers say", exact=False).first.wait_for()
        wait_idle(page)
        at_projector_sizes(page, f"lesson_{i}_{s.key}", lambda w, s=s: no_truncated_button(w, f"lesson {s.key}"))
    for name, ready in (
        ("Samplers", "How representative is each sample?"),
        ("Influence", "Top 8 helpful"),
        ("Class removal", "Removing class"),
        ("Faithfulness", "For my budget, which sampler?"),
        ("Explorer", "Nearest training points"),
        ("Glossary", "noise ceiling"),
    ):
        page.set_viewport_size({"width": width, "height": height})
        nav.get_by_text(name, exact=True).click()
        page.get_by_text(ready, exact=False).first.wait_for()
        wait_idle(page)
        if name == "Explorer":  # keep a slice: the slice tables are the widest of the page
            keep = page.get_by_role("button", name="Keep as a slice")
            box_select(page, ".st-key-exp_map", keep, start=0.2, size=0.6)
            wait_idle(page)
            keep.click()
            page.get_by_text("slice influence is the predicted increase", exact=False).wait_for()
            wait_idle(page)
            page.get_by_text("slice influence is the predicted increase", exact=False).scroll_into_view_if_needed()

        def no_title_under_toolbar(w, name=name):
            overlap = page.evaluate(TITLES_UNDER_TOOLBAR)
            assert overlap == 0, f"{name} at {w} px: {overlap} chart titles under the toolbar"
            fits_the_page(page, name, w)

        at_projector_sizes(page, name.lower().replace(" ", "_"), no_title_under_toolbar)
    page.set_viewport_size({"width": width, "height": height})
    nav.get_by_text("Home", exact=True).click()
    page.get_by_text("Test accuracy").wait_for()
    wait_idle(page)
    at_projector_sizes(page, "home", lambda w: fits_the_page(page, "Home", w))

    # MNIST-1D (a 40-point signal per input): the thumbnails are line charts a class can read.
    mnist1d = RunConfig(data=DataConfig(name="mnist1d", num_samples=400), model=ModelConfig(hidden=10, epochs=4))
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{app_url}/?{urlencode(run_to_query(mnist1d))}")
    page.get_by_text("Data and model").wait_for()
    wait_idle(page)
    nav.get_by_text("Influence", exact=True).click()
    page.get_by_text("Top 8 helpful").first.wait_for()
    wait_idle(page)

    def readable_signals(w):
        # the test point's chart and two rows of four for each list, drawn (plotly draws after the page's rerun)
        page.wait_for_function(f"({SIGNAL_PANEL_WIDTHS})().length >= 5", timeout=60_000)
        panels = page.evaluate(SIGNAL_PANEL_WIDTHS)
        assert len(panels) >= 1 + 2 * 2, f"{w} px: {len(panels)} signal thumbnail charts"
        assert min(panels) >= 100, f"{w} px: signal panels of {panels} px"
        fits_the_page(page, "Influence (MNIST-1D)", w)

    at_projector_sizes(page, "influence_mnist1d", readable_signals)
    context.close()
