"""Measure the app's responsiveness in headless Chromium (not a test; run by hand, numbers go in the README).

    .venv/bin/python benchmarks/app/measure_app.py [--out test-artifacts/app_timings.json]

1. Cold start: start ``streamlit run app.py`` (a fresh process, empty caches), open the home page, press Train with
   the default settings (digits, MLP 32 hidden, 30 epochs) and wait for the trained home page (accuracy shown).
   UMAP is not used on the way, so its one-time numba compilation is not part of it.
2. Each page's main interaction, timed from the user action until the page shows its result: once when it
   needs new work (first), and again after caching (cached: a value seen before).

Wall-clock times on this machine, whatever else runs on it: report them as measured, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "app"))  # browser_gate
from browser_gate import CHROMIUM_ARGS, free_port  # noqa: E402
from browser_gate import idle as shared_idle  # noqa: E402


def idle(page, settle_ms: int = 150) -> None:
    shared_idle(page, settle_ms, timeout_ms=300_000)


def timed(results: dict, name: str, action, wait) -> float:
    start = time.perf_counter()
    action()
    wait()
    idle(page_ref[0], settle_ms=0)  # the expected result is on screen; wait for the script run to end
    seconds = time.perf_counter() - start
    results[name] = round(seconds, 2)
    print(f"{name}: {seconds:.2f} s", flush=True)
    return seconds


page_ref: list = []


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def measure_once() -> dict:
    from playwright.sync_api import sync_playwright

    page_ref.clear()
    results: dict = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page_ref.append(page)
            page.set_default_timeout(300_000)
            page.goto(url)
            page.get_by_role("button", name="Train").click()
            page.get_by_text("Test accuracy").wait_for()
            idle(page)
            results["cold_start_to_trained_home_s"] = round(time.perf_counter() - start, 2)
            print(f"cold start to trained home page: {results['cold_start_to_trained_home_s']} s", flush=True)

            def go(link: str, text: str):
                return lambda: page.get_by_role("link", name=link).first.click(), lambda: page.get_by_text(
                    text
                ).first.wait_for()

            # Samplers page
            timed(results, "samplers: open page (first)", *go("Samplers", "How representative is each sample?"))
            colour = page.get_by_label("Colour by")
            timed(
                results,
                "samplers: colour -> confidence",
                lambda: (colour.click(), page.get_by_role("option", name="confidence").click()),
                lambda: page.locator("text=conf.").first.wait_for(),
            )
            timed(
                results,
                "samplers: seed 0 -> 1 (first)",
                lambda: set_number(page, "Seed", 1),
                lambda: page.get_by_text("random (m=100, seed=1)").wait_for(),
            )
            timed(
                results,
                "samplers: seed 1 -> 0 (cached)",
                lambda: set_number(page, "Seed", 0),
                lambda: page.get_by_text("random (m=100, seed=0)").wait_for(),
            )
            timed(
                results,
                "samplers: seed 0 -> 1 (cached)",
                lambda: set_number(page, "Seed", 1),
                lambda: page.get_by_text("random (m=100, seed=1)").wait_for(),
            )

            # Influence page
            timed(
                results,
                "influence: open page (first: full-data reference + 2 samples)",
                *go("Influence", "Top 8 helpful"),
            )
            page.get_by_text("by index", exact=True).click()
            idle(page)
            timed(
                results,
                "influence: test point -> #5 (first)",
                lambda: set_number(page, "Test index", 5),
                lambda: page.get_by_text("Test point #5").wait_for(),
            )
            timed(
                results,
                "influence: test point -> #6 (first)",
                lambda: set_number(page, "Test index", 6),
                lambda: page.get_by_text("Test point #6").wait_for(),
            )
            timed(
                results,
                "influence: test point -> #5 (cached)",
                lambda: set_number(page, "Test index", 5),
                lambda: page.get_by_text("Test point #5").wait_for(),
            )
            sampler_b = page.get_by_label("Sampler B (compared)")
            timed(
                results,
                "influence: sampler B -> feature (first)",
                lambda: (sampler_b.click(), page.get_by_role("option", name="feature", exact=True).click()),
                lambda: page.get_by_text("B: feature").first.wait_for(),
            )
            timed(
                results,
                "influence: sampler B -> random (cached)",
                lambda: (sampler_b.click(), page.get_by_role("option", name="random", exact=True).click()),
                lambda: page.get_by_text("B: random").first.wait_for(),
            )

            # Class removal page
            timed(results, "removal: open page", *go("Class removal", "Run class removal"))
            run = page.get_by_role("button", name="Run class removal")
            timed(
                results,
                "removal: run 3 samplers x 3 seeds + reference (first)",
                run.click,
                lambda: page.get_by_text("Retrained-from-scratch reference").wait_for(),
            )
            timed(
                results,
                "removal: run again (cached)",
                run.click,
                lambda: page.get_by_text("Retrained-from-scratch reference").wait_for(),
            )

            # Page switches after caching
            timed(results, "switch to samplers (cached)", *go("Samplers", "How representative is each sample?"))
            timed(results, "switch to influence (cached)", *go("Influence", "Top 8 helpful"))
            timed(results, "switch to home (cached)", *go("app", "Test accuracy"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "test-artifacts" / "app_timings.json"))
    parser.add_argument("--rounds", type=int, default=3, help="full measurements, each on a fresh server")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rounds = []
    for r in range(args.rounds):
        print(f"--- round {r + 1}/{args.rounds}", flush=True)
        rounds.append(measure_once())
    median = {k: round(float(statistics.median(r[k] for r in rounds)), 2) for k in rounds[0]}
    report = {
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "median_seconds": median,
        "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("\n| step | median s | rounds (s) |\n|---|---|---|")
    for k, v in median.items():
        print(f"| {k} | {v:.2f} | {', '.join(f'{r[k]:.2f}' for r in rounds)} |")
    print(f"\n{os.cpu_count()} CPUs; load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
