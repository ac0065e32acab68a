"""Measure issue 12's targets in headless Chromium (not a test; run by hand, numbers go in the README).

    flock /tmp/influence-bench.lock .venv/bin/python benchmarks/app/measure_cache.py [--rounds 3] [--cnn]

Each round uses a fresh disk cache (a temporary INFLUENCE_EXPLORER_CACHE_DIR) prepared by ``python -m ui.prepare
--no-umap`` (as ``make app`` does, without the UMAP maps so that the first UMAP can be timed), then:

1. cold start: ``python -m ui.serve`` (``streamlit run app.py`` as ``make app`` starts it; a fresh process) until
   the home page shows the default digits MLP (no Train press: the model comes from the disk cache);
2. after caching: switching page Home -> Influence -> Home, and a cached influence test point;
3. first UMAP of the features map on the Samplers page (PCA shown meanwhile) until the UMAP map is on screen; then
   a restart of the server on the same cache and the same UMAP again (loaded from disk);
4. two sessions: a new influence test point in session A alone, then new test points in sessions A (digits MLP)
   and B (digits logistic regression) at the same time; the ratio of the concurrent time to the time alone. B is
   in a second browser process (two students, two browsers; ``--same-browser``: a second context of A's browser),
   both on this machine's cores with the server.

Each step is timed from the click (or the Enter) until its script run has finished, the "running" widget is gone and
the browser has drawn two frames (``browser_gate.after_run``, which counts Streamlit's end-of-run transitions, so
there is no fixed wait in a timing); the first UMAP until its "Computing" notice has gone.

``--cnn`` also times training the home page's MNIST-5k CNN (``ModelConfig(arch="cnn")``, one torch thread) in this
process. Medians over rounds; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "app"))  # browser_gate
from browser_gate import CHROMIUM, CHROMIUM_ARGS, after_run, free_port, idle, runs_done  # noqa: E402


class Server:
    def __init__(self, cache: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ui.serve",
                "--server.headless",
                "true",
                "--server.port",
                str(self.port),
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT), "INFLUENCE_EXPLORER_CACHE_DIR": cache},
        )
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:  # e.g. the UMAP warm-up thread inside numba
            self.proc.kill()
            self.proc.wait(20)


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def seconds_to_settle(page, action, text: str | None = None) -> float:
    """Seconds from ``action()`` until its script run has finished and the page is drawn (and shows ``text``)."""
    before = runs_done(page)
    t = time.perf_counter()
    action()
    after_run(page, before)
    if text is not None:
        page.get_by_text(text).first.wait_for()
    return time.perf_counter() - t


def open_home(browser, url: str, query: str = ""):
    """A new browser context on the home page, once it shows the model and is idle: (context, page)."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1200})
    page = ctx.new_page()
    page.set_default_timeout(600_000)
    page.goto(url + query)
    page.get_by_text("Test accuracy").wait_for()
    idle(page)
    return ctx, page


def measure_once(browser, browser_b) -> dict:
    results: dict = {}

    def record(name: str, seconds: float) -> None:
        results[name] = round(seconds, 2)
        print(f"{name}: {seconds:.2f} s", flush=True)

    cache = tempfile.mkdtemp(prefix="influence-measure-cache-")
    env = {**os.environ, "INFLUENCE_EXPLORER_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "ui.prepare", "--no-umap"], cwd=ROOT, env=env, check=True, capture_output=True
    )
    start = time.perf_counter()
    server = Server(cache)
    try:
        ctx, page = open_home(browser, server.url)
        record("cold start to interactive home (prepared cache)", time.perf_counter() - start)

        def timed(name, action, text=None):
            record(name, seconds_to_settle(page, action, text))

        link = lambda name: lambda: page.get_by_role("link", name=name).first.click()  # noqa: E731
        timed("influence: open page (first)", link("Influence"), "Top 8 helpful")
        page.get_by_text("by index", exact=True).click()
        idle(page)
        timed("influence: test point -> #5 (first)", lambda: set_number(page, "Test index", 5), "Test point #5")
        timed("influence: test point -> #0 (cached)", lambda: set_number(page, "Test index", 0), "Test point #0")
        timed("influence: test point -> #5 (cached)", lambda: set_number(page, "Test index", 5), "Test point #5")
        # uncached work on the Influence page (the 23 s, 42 s, 13 s)
        timed("influence: change m to 150 (first)", lambda: set_number(page, "m (Hessian sample size)", 150))
        set_number(page, "m (Hessian sample size)", 100)
        idle(page, 300)
        page.get_by_text("Spread across seeds", exact=False).first.click()
        idle(page, 300)
        timed(
            "influence: across-seed spread, 3 seeds x 2 samplers (first)",
            lambda: page.get_by_text("Compute the spread", exact=True).click(),
            "one point per seed",
        )
        page.get_by_text("Solver convergence", exact=False).first.click()
        idle(page, 300)
        timed(
            "influence: LiSSA on samples A and B (first)",
            lambda: page.get_by_text("Also run LiSSA on samples A and B", exact=True).click(),
        )
        timed("switch to home (cached)", link("Home"), "Test accuracy")
        timed("switch to influence (cached)", link("Influence"), "Top 8 helpful")
        timed("samplers: open page", link("Samplers"), "How representative is each sample?")

        def first_umap(label: str) -> None:
            t = time.perf_counter()
            page.get_by_text("UMAP", exact=True).first.click()
            page.wait_for_timeout(300)
            page.get_by_text("Computing the UMAP map", exact=False).first.wait_for(state="detached", timeout=600_000)
            idle(page, 0)
            record(label, time.perf_counter() - t)

        first_umap("samplers: first UMAP of the features (PCA meanwhile)")

        def colour_by(option: str) -> None:
            page.get_by_test_id("stSelectbox").filter(has_text="Colour by").first.click()
            page.get_by_role("option", name=option, exact=True).click()

        timed("samplers: colour by confidence", lambda: colour_by("confidence"))
        timed("samplers: colour by label again (cached)", lambda: colour_by("label"))
        timed("samplers: back to PCA (cached)", lambda: page.get_by_text("PCA (instant)", exact=True).first.click())
        timed("samplers: UMAP again (cached)", lambda: page.get_by_text("UMAP", exact=True).first.click())

        # two sessions: B is the digits logistic regression (prepared too)
        from ui.config import ModelConfig, RunConfig, run_to_query

        ctx_b, page_b = open_home(
            browser_b, server.url, f"/?{urlencode(run_to_query(RunConfig(model=ModelConfig(arch='logreg'))))}"
        )
        for p in (page, page_b):
            p.get_by_role("link", name="Influence").first.click()
            p.get_by_text("Top 8 helpful").first.wait_for()
            idle(p)
            p.get_by_text("by index", exact=True).click()
            idle(p)
        alone = [
            seconds_to_settle(page, lambda: set_number(page, "Test index", index), f"Test point #{index}")
            for index in (11, 12, 13)
        ]
        record("two sessions: A alone, new test point", statistics.median(alone))
        both = []
        for index in (14, 15, 16):
            before, before_b = runs_done(page), runs_done(page_b)
            t = time.perf_counter()
            set_number(page, "Test index", index)
            set_number(page_b, "Test index", index)
            after_run(page, before)
            page.get_by_text(f"Test point #{index}").first.wait_for()
            both.append(time.perf_counter() - t)
            after_run(page_b, before_b)
            page_b.get_by_text(f"Test point #{index}").first.wait_for()
        record("two sessions: A while B computes too, new test point", statistics.median(both))
        results["two sessions: ratio A together / A alone"] = round(
            statistics.median(both) / statistics.median(alone), 2
        )
        ctx.close()
        ctx_b.close()
    finally:
        server.stop()

    start = time.perf_counter()
    server = Server(cache)  # a restart on the same disk cache
    try:
        ctx, page = open_home(browser, server.url)
        record("restart to interactive home (same cache)", time.perf_counter() - start)
        page.get_by_role("link", name="Samplers").first.click()
        page.get_by_text("How representative is each sample?").first.wait_for()
        idle(page)
        seconds = seconds_to_settle(page, lambda: page.get_by_text("UMAP", exact=True).first.click())
        assert page.get_by_text("Computing the UMAP map", exact=False).count() == 0
        record("samplers: UMAP after the restart (from disk)", seconds)
        ctx.close()
    finally:
        server.stop()
    return results


def measure_cnn() -> dict:
    import torch

    torch.set_num_threads(1)
    import influence_core as ic
    from ui.config import ModelConfig

    cfg = ModelConfig(arch="cnn")
    dataset = ic.load_dataset("mnist5k", seed=0)
    load = os.getloadavg()
    model = ic.train_model(dataset, arch="cnn", seed=cfg.seed, **cfg.train_kwargs())
    return {
        "mnist5k CNN training (app settings, 1 thread)": model.training_report,
        "load_before": load,
        "load_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "test-artifacts" / "cache_timings.json"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cnn", action="store_true", help="also time the MNIST-5k CNN training")
    parser.add_argument(
        "--same-browser",
        action="store_true",
        help="session B as a second context of session A's browser, not a browser of its own",
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    load_before = os.getloadavg()
    rounds = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        browser_b = (
            browser if args.same_browser else pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        )  # a second student's browser
        for r in range(args.rounds):
            print(f"--- round {r + 1}/{args.rounds} (load {os.getloadavg()[0]:.1f})", flush=True)
            rounds.append(measure_once(browser, browser_b))
        browser.close()
        if browser_b is not browser:
            browser_b.close()
    median = {k: round(float(statistics.median(r[k] for r in rounds)), 2) for k in rounds[0]}
    report = {
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "median_seconds": median,
        "rounds": rounds,
    }
    if args.cnn:
        report["cnn"] = measure_cnn()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("\n| step | median s | rounds (s) |\n|---|---:|---|")
    for k, v in median.items():
        print(f"| {k} | {v:.2f} | {', '.join(f'{r[k]:.2f}' for r in rounds)} |")
    if args.cnn:
        print(json.dumps(report["cnn"], indent=1))
    print(f"\n{os.cpu_count()} CPUs; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
